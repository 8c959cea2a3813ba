"""A remote command is bounded: one exec request and one shell argument carry it."""

from __future__ import annotations

import pytest

from extjobs.errors import InputError
from extjobs.model.remote import MAX_COMMAND_BYTES, RemoteCommand


def test_a_command_over_the_bound_is_refused_naming_the_limit() -> None:
    with pytest.raises(InputError, match=f"at most {MAX_COMMAND_BYTES}") as caught:
        RemoteCommand(argv=("/srv/p/create",), env={"EXTP_DIR": "x" * MAX_COMMAND_BYTES})
    assert caught.value.fields["field"] == "command"


def test_a_command_under_the_bound_is_kept_verbatim() -> None:
    value = "x" * (MAX_COMMAND_BYTES // 2)
    cmd = RemoteCommand(argv=("/srv/p/create",), env={"EXTP_DIR": value})
    assert cmd.env_dict["EXTP_DIR"] == value
