"""Logical units, and the explicit registry from opcode class to LU (greppable).

Adding an opcode: the class in :mod:`extjobs.model.opcodes` (with ``@register_opcode``),
its LU (``OPCODE = OpFoo``) in a module of this package, and one line in
:data:`LU_FOR`. ``tests/lus/test_registry.py`` fails when the three disagree.
"""

from __future__ import annotations

from typing import Any

from extjobs.lus.base import LogicalUnit
from extjobs.lus.change_group import LUInstanceChangeGroup
from extjobs.lus.cluster import LUClusterInit, LUClusterQuery, LUGroupAdd
from extjobs.lus.delay import LUTestDelay
from extjobs.lus.failover import LUInstanceFailover
from extjobs.lus.instance import LUInstanceCreate, LUInstanceRemove
from extjobs.lus.instance_disks import LUInstanceSetParams
from extjobs.lus.instance_ops import (
    LUInstanceGrowDisk,
    LUInstanceRename,
    LUInstanceShutdown,
    LUInstanceStartup,
)
from extjobs.lus.instance_reboot import (
    LUInstanceActivateDisks,
    LUInstanceDeactivateDisks,
    LUInstanceReboot,
)
from extjobs.lus.instance_snapshot import LUInstanceSnapshot
from extjobs.lus.migrate import LUInstanceMigrate
from extjobs.lus.node import LUNodeAdd, LUNodeQuery, LUNodeRemove
from extjobs.lus.node_evacuate import LUNodeEvacuate, LUNodeMigrate
from extjobs.lus.node_modify import LUNodeSetParams
from extjobs.lus.pools import (
    LUClusterSetParams,
    LUGroupSetParams,
    LUStoragePoolAdd,
    LUStoragePoolModify,
    LUStoragePoolQuery,
)
from extjobs.lus.storage import LUExtStorageDiagnose, LUExtStorageInstall
from extjobs.lus.verify import LUClusterVerify, LUVolumeCleanup
from extjobs.lus.watcher import LUInstanceSetAutoRepair, LUNodeFence, LUWatcherSetPause
from extjobs.model.opcodes import (
    OpClusterInit,
    OpClusterQuery,
    OpClusterSetParams,
    OpClusterVerify,
    OpCode,
    OpExtStorageDiagnose,
    OpExtStorageInstall,
    OpGroupAdd,
    OpGroupSetParams,
    OpInstanceActivateDisks,
    OpInstanceChangeGroup,
    OpInstanceCreate,
    OpInstanceDeactivateDisks,
    OpInstanceFailover,
    OpInstanceGrowDisk,
    OpInstanceMigrate,
    OpInstanceReboot,
    OpInstanceRemove,
    OpInstanceRename,
    OpInstanceSetAutoRepair,
    OpInstanceSetParams,
    OpInstanceShutdown,
    OpInstanceSnapshot,
    OpInstanceStartup,
    OpNodeAdd,
    OpNodeEvacuate,
    OpNodeFence,
    OpNodeMigrate,
    OpNodeQuery,
    OpNodeRemove,
    OpNodeSetParams,
    OpStoragePoolAdd,
    OpStoragePoolModify,
    OpStoragePoolQuery,
    OpTestDelay,
    OpVolumeCleanup,
    OpWatcherSetPause,
)

LU_FOR: dict[type[OpCode], type[LogicalUnit[Any]]] = {
    # cluster, node groups, nodes
    OpClusterInit: LUClusterInit,
    OpClusterQuery: LUClusterQuery,
    OpClusterSetParams: LUClusterSetParams,
    OpClusterVerify: LUClusterVerify,
    OpGroupAdd: LUGroupAdd,
    OpGroupSetParams: LUGroupSetParams,
    OpNodeAdd: LUNodeAdd,
    OpNodeRemove: LUNodeRemove,
    OpNodeQuery: LUNodeQuery,
    OpNodeSetParams: LUNodeSetParams,
    # storage
    OpExtStorageDiagnose: LUExtStorageDiagnose,
    OpExtStorageInstall: LUExtStorageInstall,
    OpVolumeCleanup: LUVolumeCleanup,
    OpStoragePoolAdd: LUStoragePoolAdd,
    OpStoragePoolModify: LUStoragePoolModify,
    OpStoragePoolQuery: LUStoragePoolQuery,
    # instances
    OpInstanceCreate: LUInstanceCreate,
    OpInstanceRemove: LUInstanceRemove,
    OpInstanceGrowDisk: LUInstanceGrowDisk,
    OpInstanceStartup: LUInstanceStartup,
    OpInstanceShutdown: LUInstanceShutdown,
    OpInstanceRename: LUInstanceRename,
    OpInstanceMigrate: LUInstanceMigrate,
    OpInstanceFailover: LUInstanceFailover,
    OpInstanceChangeGroup: LUInstanceChangeGroup,
    # day-2 operations: node maintenance, instance verbs
    OpNodeMigrate: LUNodeMigrate,
    OpNodeEvacuate: LUNodeEvacuate,
    OpInstanceReboot: LUInstanceReboot,
    OpInstanceActivateDisks: LUInstanceActivateDisks,
    OpInstanceDeactivateDisks: LUInstanceDeactivateDisks,
    # the watcher and its switches
    OpInstanceSetAutoRepair: LUInstanceSetAutoRepair,
    OpNodeFence: LUNodeFence,
    OpWatcherSetPause: LUWatcherSetPause,
    OpInstanceSetParams: LUInstanceSetParams,
    OpInstanceSnapshot: LUInstanceSnapshot,
    # tests and benchmarks
    OpTestDelay: LUTestDelay,
}
