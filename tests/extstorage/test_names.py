import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from extjobs.errors import InputError
from extjobs.extstorage.names import (
    OPTIONAL_ACTIONS,
    REQUIRED_ACTIONS,
    Action,
    sanitize_metadata,
    validate_param_name,
    validate_provider_name,
)
from extjobs.model.config import ACTIONS

PROVIDER_RE = re.compile(r"[A-Za-z0-9_-]+")
PARAM_RE = re.compile(r"[A-Za-z0-9_]+")


def test_actions_match_the_config_and_split_in_required_and_optional() -> None:
    assert {a.value for a in Action} == set(ACTIONS)
    assert set(REQUIRED_ACTIONS) | set(OPTIONAL_ACTIONS) == set(Action)
    assert not set(REQUIRED_ACTIONS) & set(OPTIONAL_ACTIONS)
    assert [a.value for a in OPTIONAL_ACTIONS] == ["snapshot", "open", "close"]


@pytest.mark.parametrize("name", ["rbd", "zfs-iscsi", "my_prov2", "A", "-", "_"])
def test_valid_provider_names_pass(name: str) -> None:
    assert validate_provider_name(name) == name


@pytest.mark.parametrize(
    "name",
    [
        pytest.param("", id="empty"),
        pytest.param("..", id="dotdot"),
        pytest.param(".", id="dot"),
        pytest.param("a/b", id="slash"),
        pytest.param("/etc", id="absolute"),
        pytest.param("../../bin", id="traversal"),
        pytest.param("rbd ", id="trailing-space"),
        pytest.param("rbd\n", id="trailing-newline"),
        pytest.param("$(reboot)", id="command-substitution"),
        pytest.param("prov.v2", id="dot-inside"),
        pytest.param("prövider", id="non-ascii"),
    ],
)
def test_invalid_provider_names_are_refused_naming_field_and_value(name: str) -> None:
    with pytest.raises(InputError) as info:
        validate_provider_name(name)
    assert info.value.fields["field"] == "provider"
    assert info.value.fields["value"] == name
    assert repr(name) in info.value.message


@given(st.text())
def test_any_provider_name_outside_the_regex_is_refused(name: str) -> None:
    if PROVIDER_RE.fullmatch(name):
        assert validate_provider_name(name) == name
    else:
        with pytest.raises(InputError):
            validate_provider_name(name)


@given(st.from_regex(PROVIDER_RE, fullmatch=True))
def test_any_provider_name_inside_the_regex_passes(name: str) -> None:
    assert validate_provider_name(name) == name


@given(st.text())
def test_any_param_name_outside_the_regex_is_refused(name: str) -> None:
    if PARAM_RE.fullmatch(name):
        assert validate_param_name(name) == name
    else:
        with pytest.raises(InputError) as info:
            validate_param_name(name)
        assert info.value.fields["field"] == "params"


@pytest.mark.parametrize("name", ["", "a-b", "a b", "a.b", "$x", "é"])
def test_invalid_param_names_are_refused(name: str) -> None:
    with pytest.raises(InputError):
        validate_param_name(name)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("originstname+web1", "originstname+web1", id="unchanged"),
        pytest.param("originstname+web 1", "originstname+web_1", id="space-replaced"),
        pytest.param("a$(rm -rf /)b", "a__rm_-rf___b", id="shell-replaced"),
        pytest.param("-leading", "_leading", id="leading-dash-replaced"),
        pytest.param("in-side", "in-side", id="inner-dash-kept"),
        pytest.param("new\nline", "new_line", id="newline-replaced"),
        pytest.param("ü", "_", id="non-ascii-replaced"),
        pytest.param("", "", id="empty"),
        pytest.param("x" * 200, "x" * 128, id="truncated"),
    ],
)
def test_sanitize_metadata_replaces_like_ganeti(text: str, expected: str) -> None:
    assert sanitize_metadata(text) == expected


@given(st.text())
def test_sanitized_metadata_is_always_safe(text: str) -> None:
    out = sanitize_metadata(text)
    assert len(out) == min(len(text), 128)
    assert re.fullmatch(r"[-A-Za-z0-9_+.]*", out)
    assert not out.startswith("-")
