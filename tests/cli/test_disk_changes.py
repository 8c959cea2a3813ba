"""``instance modify --disk``: Ganeti's syntax parsed into the opcode's disk changes."""

from __future__ import annotations

import click
import pytest

from extjobs.cli.instance import parse_disk_change
from extjobs.errors import InputError
from extjobs.model.opcodes import DiskModification, DiskSpec


def test_add_takes_the_disk_syntax_of_instance_add() -> None:
    change = parse_disk_change("add:size=1G,pool=fast,name=logs,stripes=4")
    assert change == DiskModification(
        action="add",
        spec=DiskSpec(size=1024, pool="fast", name="logs", params={"stripes": "4"}),
    )


@pytest.mark.parametrize("ref", ["0", "12", "logs"])
@pytest.mark.parametrize("action", ["remove", "detach", "attach"])
def test_an_existing_disk_by_index_or_name(ref: str, action: str) -> None:
    assert parse_disk_change(f"{ref}:{action}") == DiskModification(action=action, disk=ref)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param("remove", "expected add:size=SIZE", id="no-colon"),
        pytest.param("1:grow", "'grow' is not remove, detach or attach", id="action"),
        pytest.param("1:add", "a new disk gets the next free index", id="indexed-add"),
        pytest.param("add:provider=p", "size= is required", id="no-size"),
        pytest.param("add:size=1G", "give provider= or pool=", id="no-provider"),
    ],
)
def test_bad_changes_name_the_problem(text: str, message: str) -> None:
    with pytest.raises(click.BadParameter, match=message):
        parse_disk_change(text)


def test_a_bad_disk_name_is_refused_by_the_model() -> None:
    with pytest.raises(InputError, match="invalid disk name or index"):
        parse_disk_change("bad name:remove")
