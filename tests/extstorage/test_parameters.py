import pytest

from extjobs.errors import InputError, ProviderError
from extjobs.extstorage.parameters import check_params, parse_parameters_list


def test_parse_names_descriptions_blank_lines_and_tabs() -> None:
    text = (
        "pool  The pool to use\n\n\tfromsnap\tSnapshot to start from \nflag\n   \nnas_ip 1.2.3.4 ok"
    )
    assert parse_parameters_list(text) == {
        "pool": "The pool to use",
        "fromsnap": "Snapshot to start from",
        "flag": "",
        "nas_ip": "1.2.3.4 ok",
    }


def test_parse_empty_file() -> None:
    assert parse_parameters_list("") == {}
    assert parse_parameters_list("\n\n") == {}


def test_parse_keeps_order() -> None:
    assert list(parse_parameters_list("b x\na y\nc z\n")) == ["b", "a", "c"]


def test_parse_handles_crlf() -> None:
    assert parse_parameters_list("pool The pool\r\nsize\r\n") == {"pool": "The pool", "size": ""}


@pytest.mark.parametrize(
    ("text", "line", "bad"),
    [
        pytest.param("ok fine\n# a comment\n", 2, "# a comment", id="comment"),
        pytest.param("ok\n\nna-me dash\n", 3, "na-me dash", id="dash"),
        pytest.param("$(x) shell\n", 1, "$(x) shell", id="shell"),
        pytest.param("a.b dotted\n", 1, "a.b dotted", id="dot"),
    ],
)
def test_parse_rejects_invalid_names_naming_the_line(text: str, line: int, bad: str) -> None:
    with pytest.raises(ProviderError) as info:
        parse_parameters_list(text, provider="rbd")
    assert info.value.fields == {"provider": "rbd", "line": line, "text": bad}
    assert f"line {line}" in info.value.message
    assert repr(bad) in info.value.message


def test_parse_rejects_duplicates() -> None:
    with pytest.raises(ProviderError, match="line 2: parameter 'pool' is declared twice"):
        parse_parameters_list("pool one\npool two\n")


ALLOWED = {"pool": "The pool", "fromsnap": "Snapshot"}


def test_check_params_accepts_declared_and_reserved() -> None:
    check_params("rbd", {"pool": "a", "provider": "rbd", "access": "userspace"}, ALLOWED)
    check_params("rbd", {}, {})


def test_check_params_names_unknown_and_lists_allowed() -> None:
    with pytest.raises(InputError) as info:
        check_params("rbd", {"pool": "x", "zeta": "1", "alpha": "2"}, ALLOWED)
    err = info.value
    assert err.message == (
        "unknown parameters alpha, zeta for ExtStorage provider 'rbd';"
        " allowed: fromsnap, pool (plus provider, access)"
    )
    assert err.fields == {
        "field": "params",
        "provider": "rbd",
        "unknown": ["alpha", "zeta"],
        "allowed": ["fromsnap", "pool"],
    }


def test_check_params_single_unknown_with_empty_list() -> None:
    with pytest.raises(InputError) as info:
        check_params("plain", {"pool": "x"}, {})
    assert info.value.message == (
        "unknown parameter pool for ExtStorage provider 'plain'; allowed: none"
        " (plus provider, access)"
    )


def test_check_params_is_case_sensitive() -> None:
    with pytest.raises(InputError, match="unknown parameter POOL"):
        check_params("rbd", {"POOL": "x"}, ALLOWED)


def test_check_params_rejects_invalid_names() -> None:
    with pytest.raises(InputError) as info:
        check_params("rbd", {"bad-name": "x"}, ALLOWED)
    assert info.value.fields["value"] == "bad-name"
