"""Change-group: move an instance to a node of another node group (the design's storage
pools as the "mobility domain" of instances).

First, before anything changes, every disk must be reachable from the new group::

    a disk from a pool:   the pool is connected to the group
    every disk:           its provider valid on every online node of the group, and
                          its parameters declared by parameters.list there

Otherwise the job is refused naming the disk. Then the target is chosen in the group
like a migration's (:func:`~extjobs.lus.instance_move.pick_target` with ``group``:
online, not drained, providers valid, memory for a running instance, fewest instances),
or the one given is checked, and::

    running instance:  a live migration to the target — the migrate LU itself
                       (:class:`~extjobs.lus.migrate.LUInstanceMigrate`), with its
                       order, settling after a failure, compensation and recovery
    stopped instance:  S: no guest may run; close, detach (every disk; idempotent)
                       config: primary = T  (a stopped instance holds its disks nowhere)

Recovery after a daemon crash: an instance already in the group is done; a migration
under way is the migrate LU's recovery (settle on one node); anything else runs again
(every step before the configuration change is idempotent).
"""

from __future__ import annotations

from typing import Any

import attrs

from extjobs.errors import ExtJobsError, PrerequisiteError
from extjobs.lus.base import LogicalUnit, Recovery, RecoveryAction, StepContext
from extjobs.lus.instance_hv import hypervisor_status
from extjobs.lus.instance_move import (
    check_target,
    movable_instance,
    pick_target,
    provider_statuses,
)
from extjobs.lus.instance_storage import deactivate_disks, validate_in_group
from extjobs.lus.journal import Journal
from extjobs.lus.migrate import LUInstanceMigrate
from extjobs.lus.pools import check_declared
from extjobs.model.cluster import ClusterConfig, Instance, Node
from extjobs.model.config import Config
from extjobs.model.locks import LockRequest, Mode
from extjobs.model.opcodes import OpInstanceChangeGroup, OpInstanceMigrate


def _unconnected(config: ClusterConfig, inst: Instance, group: str) -> None:
    """Refuse, naming each disk, when a disk's pool is not connected to ``group``."""
    connected = config.group(group).pools
    bad = [
        f"disk {d.index} (pool {d.pool})" for d in inst.disks if d.pool and d.pool not in connected
    ]
    if bad:
        pools = sorted({d.pool for d in inst.disks if d.pool and d.pool not in connected})
        raise PrerequisiteError(
            f"cannot move {inst.name} to node group {group}: {', '.join(bad)} "
            f"not connected there (connected: {', '.join(connected) or 'none'}); connect "
            + " and ".join(f"'extjobs storage pool connect {p} {group}'" for p in pools),
            instance=inst.name,
            group=group,
        )


async def check_disks_in_group(ctx: StepContext, inst: Instance, group: str) -> None:
    """Refuse (PrerequisiteError naming the disk) unless every disk of ``inst`` can be
    used from ``group``: pool connected, provider valid on every online node of the
    group, parameters declared there."""
    _unconnected(ctx.config, inst, group)
    for provider in sorted({d.provider for d in inst.disks}):
        names = ", ".join(f"disk {d.index}" for d in inst.disks if d.provider == provider)
        try:
            reports = await validate_in_group(ctx, group, [provider])
            for disk in inst.disks:
                if disk.provider == provider:
                    check_declared(reports, provider, disk.params)
        except ExtJobsError as exc:
            raise PrerequisiteError(
                f"cannot move {inst.name} to node group {group}: {names} (provider "
                f"{provider}): {exc.message}; nothing was changed",
                instance=inst.name,
                group=group,
            ) from exc


class LUInstanceChangeGroup(LogicalUnit[OpInstanceChangeGroup]):
    OPCODE = OpInstanceChangeGroup

    def __init__(self, op: OpInstanceChangeGroup, options: Config) -> None:
        super().__init__(op, options)
        self._migrate: LUInstanceMigrate | None = None

    def locks(self, config: ClusterConfig) -> list[LockRequest]:
        op = self.op
        wanted = [LockRequest.cluster(), LockRequest.instance(op.instance_name)]
        inst = config.instances.get(op.instance_name)
        primary = config.nodes.get(inst.primary) if inst is not None else None
        if primary is None:
            return wanted
        groups = {primary.group, op.group_name}
        wanted += [LockRequest.group(g, Mode.SHARED) for g in sorted(groups)]
        nodes = {primary.name}
        if op.target_node is not None:
            nodes.add(op.target_node)
        else:
            nodes |= {n.name for n in config.nodes.values() if n.group == op.group_name}
        return wanted + [LockRequest.node(n, Mode.SHARED) for n in sorted(nodes)]

    def check(self, config: ClusterConfig) -> None:
        op = self.op
        inst, source = movable_instance(config, op.instance_name)
        config.group(op.group_name)
        if source.group == op.group_name:
            raise PrerequisiteError(
                f"instance {inst.name} is already in node group {op.group_name} (on "
                f"{source.name}); to move it within the group use 'extjobs instance migrate'",
                instance=inst.name,
                group=op.group_name,
            )
        if source.offline:
            raise PrerequisiteError(
                f"primary node {source.name} of {inst.name} is offline: fail the instance "
                "over within its group first ('extjobs instance failover')",
                instance=inst.name,
                node=source.name,
            )
        _unconnected(config, inst, op.group_name)
        if op.target_node is not None:
            check_target(config, source, op.target_node, op.group_name)

    async def exec(self, ctx: StepContext) -> Any:
        op = self.op
        inst, source = movable_instance(ctx.config, op.instance_name)
        await check_disks_in_group(ctx, inst, op.group_name)
        ctx.log(f"every disk of {inst.name} can be used from node group {op.group_name}")
        if inst.admin_up:
            migrate = self._migrate = LUInstanceMigrate(
                OpInstanceMigrate(
                    instance_name=inst.name, target_node=op.target_node, force=op.force
                ),
                self.options,
                group=op.group_name,
            )
            result = await migrate.exec(ctx)
            return {**result, "group": op.group_name}
        return await self._move_stopped(ctx, inst, source)

    async def _move_stopped(self, ctx: StepContext, inst: Instance, source: Node) -> Any:
        op = self.op
        target, reports = await pick_target(
            ctx, inst, source, op.target_node, also=[source], force=op.force, group=op.group_name
        )
        if (await hypervisor_status(ctx, inst, source.name)).running:
            raise PrerequisiteError(
                f"{inst.name} is marked down but its guest runs on {source.name}; stop it "
                f"with 'extjobs instance shutdown {inst.name}' first; nothing was changed",
                instance=inst.name,
                node=source.name,
            )
        providers = sorted({d.provider for d in inst.disks})
        try:
            statuses = provider_statuses(reports, source.name, providers)
            await deactivate_disks(ctx, inst, source.name, statuses)
        except ExtJobsError as exc:
            raise exc.restated(
                f"cannot release the disks of {inst.name} on {source.name}: {exc.message}; "
                "its primary did not change"
            ) from exc
        ctx.update_config(
            lambda c: c.with_instance(attrs.evolve(c.instance(inst.name), primary=target.name))
        )
        ctx.log(
            f"{inst.name} (stopped) moved from {source.name} (group {source.group}) to "
            f"{target.name} (group {op.group_name}); it starts there next time"
        )
        return {
            "instance": inst.name,
            "source": source.name,
            "target": target.name,
            "primary": target.name,
            "group": op.group_name,
            "mode": "stopped",
        }

    async def compensate(self, ctx: StepContext) -> None:
        if self._migrate is not None:
            await self._migrate.compensate(ctx)

    async def recover(self, ctx: StepContext, journal: Journal) -> Recovery:
        op = self.op
        name = op.instance_name
        inst = ctx.config.instances.get(name)
        if inst is None:
            return Recovery(RecoveryAction.FAILED, f"instance {name} no longer exists")
        move = journal.move("migrate")
        primary = ctx.config.nodes.get(inst.primary)
        if move is None:
            if primary is not None and primary.group == op.group_name:
                return Recovery(
                    RecoveryAction.DONE,
                    f"{name} had moved to node group {op.group_name} before the restart",
                    {"instance": name, "primary": inst.primary, "group": op.group_name},
                )
            return Recovery(
                RecoveryAction.RETRY,
                f"change-group of {name} interrupted before anything changed; running it again",
            )
        migrate = LUInstanceMigrate(
            OpInstanceMigrate(instance_name=name, target_node=move.target),
            self.options,
            group=op.group_name,
        )
        outcome = await migrate.recover(ctx, journal)
        if outcome.action is RecoveryAction.DONE:
            return attrs.evolve(outcome, result={**outcome.result, "group": op.group_name})
        return outcome
