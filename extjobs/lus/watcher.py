"""The opcodes behind the watcher (:mod:`extjobs.engine.watcher`) and its switches.

- ``OP_INSTANCE_SET_AUTO_REPAIR``: whether the watcher restarts an instance found down
  (``auto_restart``) and fails it over from a dead node (``auto_failover``: yes, no,
  or as its node group says).
- ``OP_NODE_FENCE``: run a node's fence command on the master (journalled as a
  :class:`~extjobs.model.steps.FenceRun`: the ledger then knows the node holds no disk);
  once it succeeded, mark the node offline and ``fenced``. A failover from a fenced
  offline node does not fence it again. The watcher submits it for a dead node of a
  group with automatic failover, with the failovers depending on its success; an
  operator can run it by hand (``extjobs node fence``).
- ``OP_WATCHER_SET_PAUSE``: pause or resume the watcher; kept in the cluster
  configuration, so a restarted daemon or a new leader stays paused.
"""

from __future__ import annotations

import time
from typing import Any

import attrs

from extjobs.errors import PrerequisiteError
from extjobs.lus.base import LogicalUnit, Recovery, RecoveryAction, StepContext
from extjobs.lus.cluster import require_cluster
from extjobs.lus.instance_move import fence
from extjobs.lus.journal import Journal
from extjobs.model.cluster import ClusterConfig, Instance
from extjobs.model.locks import LockRequest, Mode
from extjobs.model.opcodes import OpInstanceSetAutoRepair, OpNodeFence, OpWatcherSetPause


def auto_failover_of(instance: Instance, config: ClusterConfig) -> bool:
    """Whether the watcher fails ``instance`` over from a dead node: its own setting, else
    its primary's node group's."""
    if instance.auto_failover is not None:
        return instance.auto_failover
    node = config.nodes.get(instance.primary)
    group = config.groups.get(node.group) if node is not None else None
    return group is not None and group.auto_failover


def auto_repair_view(instance: Instance, config: ClusterConfig) -> dict[str, Any]:
    return {
        "auto_restart": instance.auto_restart,
        "auto_failover": (
            "group"
            if instance.auto_failover is None
            else ("yes" if instance.auto_failover else "no")
        ),
        "auto_failover_effective": auto_failover_of(instance, config),
    }


class LUInstanceSetAutoRepair(LogicalUnit[OpInstanceSetAutoRepair]):
    OPCODE = OpInstanceSetAutoRepair

    def locks(self, config: ClusterConfig) -> list[LockRequest]:
        return [LockRequest.cluster(), LockRequest.instance(self.op.instance_name)]

    def check(self, config: ClusterConfig) -> None:
        config.instance(self.op.instance_name)

    async def exec(self, ctx: StepContext) -> Any:
        op = self.op
        changes: dict[str, Any] = {}
        if op.auto_restart is not None:
            changes["auto_restart"] = op.auto_restart
        if op.auto_failover is not None:
            changes["auto_failover"] = {"yes": True, "no": False, "group": None}[op.auto_failover]
        cfg = ctx.update_config(
            lambda c: c.with_instance(attrs.evolve(c.instance(op.instance_name), **changes))
        )
        view = auto_repair_view(cfg.instance(op.instance_name), cfg)
        ctx.log(
            f"instance {op.instance_name}: auto-restart "
            f"{'on' if view['auto_restart'] else 'off'}, auto-failover {view['auto_failover']}"
            f" ({'on' if view['auto_failover_effective'] else 'off'})"
        )
        return {"instance": op.instance_name, **view}


class LUNodeFence(LogicalUnit[OpNodeFence]):
    OPCODE = OpNodeFence

    def locks(self, config: ClusterConfig) -> list[LockRequest]:
        return [LockRequest.cluster(), LockRequest.node(self.op.node_name)]

    def check(self, config: ClusterConfig) -> None:
        require_cluster(config)
        node = config.node(self.op.node_name)
        if not node.fence_command and not node.fenced:
            raise PrerequisiteError(
                f"node {node.name} has no fence command; set one with 'extjobs node modify "
                f"{node.name} --fence-command ...' (nothing was run)",
                node=node.name,
            )

    async def exec(self, ctx: StepContext) -> Any:
        node = ctx.config.node(self.op.node_name)
        if node.offline and node.fenced:
            ctx.log(f"node {node.name} is offline and was fenced already; nothing to do")
            return {"node": node.name, "fenced": True, "offline": True}
        await fence(ctx, node, "node fence")
        ctx.update_config(
            lambda c: c.with_node(attrs.evolve(c.node(node.name), offline=True, fenced=True))
        )
        ctx.log(f"node {node.name} is marked offline (fenced)")
        return {"node": node.name, "fenced": True, "offline": True}

    async def recover(self, ctx: StepContext, journal: Journal) -> Recovery:
        name = self.op.node_name
        if journal.fenced(name):
            ctx.update_config(
                lambda c: c.with_node(attrs.evolve(c.node(name), offline=True, fenced=True))
            )
            return Recovery(
                RecoveryAction.DONE,
                f"node {name} had been fenced before the restart; it is marked offline",
                {"node": name, "fenced": True, "offline": True},
            )
        return Recovery(RecoveryAction.RETRY, f"fencing {name} interrupted; running it again")


class LUWatcherSetPause(LogicalUnit[OpWatcherSetPause]):
    OPCODE = OpWatcherSetPause

    def locks(self, config: ClusterConfig) -> list[LockRequest]:
        return [LockRequest.cluster(Mode.SHARED)]

    def check(self, config: ClusterConfig) -> None:
        require_cluster(config)

    async def exec(self, ctx: StepContext) -> Any:
        op = self.op
        until = None
        if op.paused and op.duration is not None:
            until = time.time() + op.duration

        def change(config: ClusterConfig) -> ClusterConfig:
            cluster = require_cluster(config)
            return attrs.evolve(
                config,
                cluster=attrs.evolve(cluster, watcher_paused=op.paused, watcher_paused_until=until),
            )

        ctx.update_config(change)
        if not op.paused:
            ctx.log("the watcher is resumed")
        elif until is None:
            ctx.log("the watcher is paused until it is resumed ('extjobs watcher resume')")
        else:
            ctx.log(
                "the watcher is paused until "
                + time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(until))
            )
        return {"paused": op.paused, "until": until}
