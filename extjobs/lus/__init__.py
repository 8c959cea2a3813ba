"""Logical units, and the explicit registry from opcode class to LU (greppable)."""

from __future__ import annotations

from typing import Any

from extjobs.lus.base import LogicalUnit
from extjobs.lus.cluster import LUClusterInit, LUClusterQuery, LUGroupAdd
from extjobs.lus.node import LUNodeAdd, LUNodeQuery, LUNodeRemove
from extjobs.lus.storage import LUExtStorageDiagnose, LUExtStorageInstall
from extjobs.lus.testing import LUTestDelay
from extjobs.model.opcodes import (
    OpClusterInit,
    OpClusterQuery,
    OpCode,
    OpExtStorageDiagnose,
    OpExtStorageInstall,
    OpGroupAdd,
    OpNodeAdd,
    OpNodeQuery,
    OpNodeRemove,
    OpTestDelay,
)

LU_FOR: dict[type[OpCode], type[LogicalUnit[Any]]] = {
    OpClusterInit: LUClusterInit,
    OpClusterQuery: LUClusterQuery,
    OpGroupAdd: LUGroupAdd,
    OpNodeAdd: LUNodeAdd,
    OpNodeRemove: LUNodeRemove,
    OpNodeQuery: LUNodeQuery,
    OpTestDelay: LUTestDelay,
    OpExtStorageDiagnose: LUExtStorageDiagnose,
    OpExtStorageInstall: LUExtStorageInstall,
}
