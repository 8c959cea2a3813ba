"""Object names are matched whole: a trailing newline is not a valid name."""

from __future__ import annotations

import pytest

from extjobs.errors import InputError
from extjobs.model.cluster import check_name
from extjobs.model.opcodes import decode_opcode


@pytest.mark.parametrize(
    "name", ["inj1\n", "inj1\r\n", "\ninj1", "in j1", "", "-x", "a" * 64, "x\x00"]
)
def test_a_name_that_is_not_whole_is_refused(name: str) -> None:
    with pytest.raises(InputError, match="invalid instance name"):
        check_name("instance name", name)


def test_a_trailing_newline_in_an_opcode_name_is_refused_before_a_job_exists() -> None:
    with pytest.raises(InputError) as caught:
        decode_opcode({"OP_ID": "OP_INSTANCE_REMOVE", "instance_name": "inj1\n"})
    assert "inj1\\n" in caught.value.message
    assert decode_opcode({"OP_ID": "OP_INSTANCE_REMOVE", "instance_name": "inj1"})


@pytest.mark.parametrize("name", ["web1", "a", "node-3.example_x", "a" * 63])
def test_good_names_pass(name: str) -> None:
    assert check_name("instance name", name) == name


@pytest.mark.parametrize(
    ("op", "field"),
    [
        ({"OP_ID": "OP_NODE_ADD", "node_name": "n1", "user": "root\n"}, "user"),
        ({"OP_ID": "OP_NODE_ADD", "node_name": "n1", "user": "-oProxyCommand=x"}, "user"),
        ({"OP_ID": "OP_NODE_ADD", "node_name": "n1", "group": "g1\n"}, "group"),
        ({"OP_ID": "OP_EXTSTORAGE_INSTALL", "source": "/p", "provider": "p\n"}, "provider"),
        ({"OP_ID": "OP_EXTSTORAGE_INSTALL", "source": "/p", "provider": "../evil"}, "provider"),
        ({"OP_ID": "OP_EXTSTORAGE_INSTALL", "source": "/p", "group": "a b"}, "group"),
    ],
)
def test_login_group_and_provider_names_are_checked_when_decoded(
    op: dict[str, str], field: str
) -> None:
    with pytest.raises(InputError) as caught:
        decode_opcode(op)
    assert caught.value.fields.get("field", "").endswith(field), caught.value.fields


def test_usual_logins_and_optional_names_pass() -> None:
    op = decode_opcode({"OP_ID": "OP_NODE_ADD", "node_name": "n1", "user": "ext_ops-1.a"})
    assert op.user == "ext_ops-1.a"  # type: ignore[attr-defined]
    install = decode_opcode({"OP_ID": "OP_EXTSTORAGE_INSTALL", "source": "/p"})
    assert install.provider is None  # type: ignore[attr-defined]
