"""docs/providers.md names every variable a provider script can be given, every action,
and the default timeout of each: checked against the code that builds the commands."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

from extjobs.extstorage import env as env_module
from extjobs.extstorage.env import Volume, build_command
from extjobs.model.config import StorageOptions
from extjobs.model.remote import DEFAULT_PATH
from extjobs.model.volume import Action

DOC = Path(__file__).resolve().parents[2] / "docs" / "providers.md"
PARAM = "someparam"

#: A volume with every optional field set, so that every action sets all it can.
FULL = Volume(
    name="9f0e.ext.disk0",
    uuid="9f0e",
    size=64,
    provider="demo",
    params={PARAM: "v"},
    access="userspace",
    cname="data",
    metadata="originstname+web",
    new_size=128,
    open_exclusive=False,
    snapshot_name="snap",
    snapshot_size=64,
)


def variables_set_by_the_code() -> set[str]:
    """Every VOL_*/EXTP_* name some action gets, the user's parameter as EXTP_<NAME>,
    plus every such name spelt out in env.py (a branch this volume might miss)."""
    names: set[str] = set()
    for action in Action:
        command = build_command("/p/demo", action, FULL, path_env=DEFAULT_PATH, timeout=1.0)
        names |= set(command.env_dict)
    names.discard(f"EXTP_{PARAM.upper()}")
    names.add("EXTP_<NAME>")
    source = inspect.getsource(env_module.build_command) + inspect.getsource(env_module._action_env)
    names |= set(re.findall(r'"((?:VOL|EXTP)_[A-Z_]+)"', source))
    return names


def documented() -> str:
    return DOC.read_text()


def test_the_code_sets_the_variables_this_test_expects() -> None:
    found = variables_set_by_the_code()
    assert {"VOL_NAME", "VOL_NEW_SIZE", "EXTP_PROVIDER", "EXTP_ACCESS", "PATH"} <= found


@pytest.mark.parametrize("name", sorted(variables_set_by_the_code()))
def test_every_variable_a_script_gets_is_documented(name: str) -> None:
    assert f"`{name}`" in documented(), f"{name} is set by extstorage/env.py, not in {DOC.name}"


@pytest.mark.parametrize("action", [a.value for a in Action])
def test_every_action_is_documented(action: str) -> None:
    assert f"`{action}`" in documented()


@pytest.mark.parametrize(("action", "seconds"), sorted(StorageOptions().timeouts.items()))
def test_the_default_timeout_of_every_action_is_the_documented_one(
    action: str, seconds: float
) -> None:
    text = documented()
    table = text[text.index("| action | seconds |") :]
    table = table[: table.index("\n\n")]
    row = next(line for line in table.splitlines() if f"`{action}`" in line)
    assert row.rstrip(" |").endswith(f"| {seconds:g}"), row


def test_the_default_path_and_output_cap_are_the_documented_ones() -> None:
    text = documented()
    assert f"`{DEFAULT_PATH}`" in text
    assert f"{StorageOptions().output_cap:,}" in text
