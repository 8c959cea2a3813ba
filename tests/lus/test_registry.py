"""The opcode registry and the LU registry agree: a forgotten registration fails here,
not with a ``KeyError`` when a job runs."""

from __future__ import annotations

from typing import Any

import pytest

from extjobs.lus import LU_FOR
from extjobs.lus.base import LogicalUnit
from extjobs.model import opcodes
from extjobs.model.opcodes import OPCODES, OpCode


def test_every_opcode_has_an_lu() -> None:
    missing = sorted(op_id for op_id, cls in OPCODES.items() if cls not in LU_FOR)
    assert not missing, f"opcodes without an LU in extjobs.lus.LU_FOR: {missing}"


@pytest.mark.parametrize(
    ("opcode", "lu"),
    [pytest.param(op, lu, id=op.OP_ID) for op, lu in sorted(LU_FOR.items(), key=str)],
)
def test_every_lu_serves_a_registered_opcode(
    opcode: type[OpCode], lu: type[LogicalUnit[Any]]
) -> None:
    assert OPCODES.get(opcode.OP_ID) is opcode, f"{opcode.__name__} lacks @register_opcode"
    assert lu.OPCODE is opcode, f"{lu.__name__}.OPCODE is {lu.OPCODE.__name__}, not {opcode}"


def test_every_opcode_class_is_registered() -> None:
    """An ``OpCode`` subclass defined in the model but not decorated is caught too."""
    defined = {
        cls
        for cls in vars(opcodes).values()
        if isinstance(cls, type) and issubclass(cls, OpCode) and cls is not OpCode
    }
    assert defined == set(OPCODES.values())


def test_a_duplicate_op_id_is_refused() -> None:
    class OpDuplicate(OpCode):
        OP_ID = "OP_CLUSTER_INIT"

    with pytest.raises(ValueError, match="duplicate OP_ID"):
        opcodes.register_opcode(OpDuplicate)
    assert OPCODES["OP_CLUSTER_INIT"] is opcodes.OpClusterInit
