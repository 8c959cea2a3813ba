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

# -- instances on external storage and storage pools -------------------------------------

from extjobs.lus.instance import LUInstanceCreate, LUInstanceRemove
from extjobs.lus.instance_ops import (
    LUInstanceGrowDisk,
    LUInstanceRename,
    LUInstanceShutdown,
    LUInstanceStartup,
)
from extjobs.lus.pools import LUClusterSetParams, LUGroupSetParams
from extjobs.model.opcodes import (
    OpClusterSetParams,
    OpGroupSetParams,
    OpInstanceCreate,
    OpInstanceGrowDisk,
    OpInstanceRemove,
    OpInstanceRename,
    OpInstanceShutdown,
    OpInstanceStartup,
)

LU_FOR.update(
    {
        OpInstanceCreate: LUInstanceCreate,
        OpInstanceRemove: LUInstanceRemove,
        OpInstanceGrowDisk: LUInstanceGrowDisk,
        OpInstanceStartup: LUInstanceStartup,
        OpInstanceShutdown: LUInstanceShutdown,
        OpInstanceRename: LUInstanceRename,
        OpClusterSetParams: LUClusterSetParams,
        OpGroupSetParams: LUGroupSetParams,
    }
)

# -- verification and repair -----------------------------------------------------------------

from extjobs.lus.verify import LUClusterVerify, LUVolumeCleanup
from extjobs.model.opcodes import OpClusterVerify, OpVolumeCleanup

LU_FOR.update({OpClusterVerify: LUClusterVerify, OpVolumeCleanup: LUVolumeCleanup})

# -- moving instances between nodes, node state ------------------------------------------------

from extjobs.lus.failover import LUInstanceFailover
from extjobs.lus.migrate import LUInstanceMigrate
from extjobs.lus.node_modify import LUNodeSetParams
from extjobs.model.opcodes import OpInstanceFailover, OpInstanceMigrate, OpNodeSetParams

LU_FOR.update(
    {
        OpInstanceMigrate: LUInstanceMigrate,
        OpInstanceFailover: LUInstanceFailover,
        OpNodeSetParams: LUNodeSetParams,
    }
)
