"""Live migration of an instance from its primary S to a node T of the same group.

The order lets providers with exclusive locks work (DESIGN §4)::

    S: open shared (every disk)            before anything touches T
    T: attach, open shared (every disk)
    the guest moves:
        memory transfer (kvm): T: start the receiving side; the backend moves the
              guest over its control sockets, progress in the job log
              (Hypervisor.transfer_memory; for kvm see extjobs.hypervisors.migration);
              S: stop the process left behind
        start/stop (fake): T: start the holder (it opens the disks); S: stop the holder
    config: primary = T
    S: close, detach (every disk)
    T: open exclusive (every disk)

A failure before the guest runs on T, a cancel, or a daemon crash mid-way ends in
:func:`~extjobs.lus.instance_move.settle` over S and T: the guest that is active stays
(S unless the memory transfer had completed), the other node's guest process is
stopped and its disks are closed and detached, then the disks are opened exclusively
where the guest runs. The job's error says where the instance ended up. A failure
after the guest moved (releasing S, locking T) leaves it running on T and says what
``migrate --cleanup`` must finish.

``cleanup``: settle over every online node of the group, preferring the primary.
``allow_failover``: an instance that does not run, or whose primary is offline, is
failed over instead (:class:`~extjobs.lus.failover.LUInstanceFailover`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import attrs

from extjobs.errors import (
    ExtJobsError,
    HypervisorError,
    NodeError,
    PrerequisiteError,
    ProviderError,
)
from extjobs.extstorage.names import Action
from extjobs.hypervisors import get_hypervisor
from extjobs.hypervisors.base import (
    MigrationSettings,
    RuntimeStatus,
    instance_key,
    parse_status,
    run_dir_for,
)
from extjobs.lus.base import LogicalUnit, Recovery, RecoveryAction, StepContext
from extjobs.lus.failover import LUInstanceFailover
from extjobs.lus.instance_hv import hypervisor_status, incoming_step, start_guest, stop_guest
from extjobs.lus.instance_move import (
    Reports,
    check_target,
    group_nodes,
    movable_instance,
    move_locks,
    pick_target,
    provider_statuses,
    settle,
)
from extjobs.lus.instance_storage import (
    activate_disks,
    deactivate_disks,
    diagnose_on,
    disk_volume,
    run_provider,
)
from extjobs.lus.journal import Journal
from extjobs.model.cluster import ClusterConfig, Instance, Node
from extjobs.model.config import Config
from extjobs.model.jobs import LogKind
from extjobs.model.locks import LockRequest
from extjobs.model.opcodes import MIGRATION_FIELDS, OpInstanceFailover, OpInstanceMigrate
from extjobs.model.steps import MoveTag

#: Grace for the source guest process once the guest runs on the target.
SOURCE_GRACE = 30.0


@attrs.define
class _Flight:
    """A migration under way, for the failure path and compensation."""

    instance: Instance
    source: str
    target: str
    reports: Reports
    live: bool
    #: demoted (S open shared) → target (T touched) → moved (guest on T) → done
    phase: str = "start"
    settled: bool = False


def migration_settings(
    config: ClusterConfig, inst: Instance, op: OpInstanceMigrate, options: Config
) -> tuple[MigrationSettings, dict[str, str]]:
    """Each migration setting from the first level that gives it — the opcode, the
    instance's node group, the cluster, the daemon's ``[migration]`` — and which level
    that was, per setting."""
    node = config.nodes.get(inst.primary)
    group = config.groups.get(node.group) if node is not None else None
    levels: list[tuple[str, Any]] = [("the opcode", op)]
    if group is not None:
        levels.append((f"node group {group.name}", group))
    levels += [("the cluster", config.cluster), ("[migration]", options.migration)]
    values: dict[str, Any] = {}
    where: dict[str, str] = {}
    for field in MIGRATION_FIELDS:
        for label, holder in levels:
            value = getattr(holder, field, None) if holder is not None else None
            if value:
                values[field], where[field] = value, label
                break
    return MigrationSettings(**values), where


class LUInstanceMigrate(LogicalUnit[OpInstanceMigrate]):
    OPCODE = OpInstanceMigrate

    def __init__(self, op: OpInstanceMigrate, options: Config, *, group: str | None = None) -> None:
        super().__init__(op, options)
        self._flight: _Flight | None = None
        self._failover: LUInstanceFailover | None = None
        self._pinned_target: str | None = None
        #: The group the target must be in (change-group); ``None``: the primary's.
        self._group = group
        #: The settings and where each came from, once the job began.
        self._resolved: tuple[MigrationSettings, dict[str, str]] | None = None

    def locks(self, config: ClusterConfig) -> list[LockRequest]:
        return move_locks(config, self.op.instance_name, self.op.target_node)

    @property
    def settings(self) -> MigrationSettings:
        """The migration settings (:func:`migration_settings`) as resolved when the job
        began; before that, the opcode's over the daemon's ``[migration]``."""
        if self._resolved is not None:
            return self._resolved[0]
        op, default = self.op, self.options.migration
        return MigrationSettings(
            max_downtime=op.max_downtime or default.max_downtime,
            bandwidth=op.bandwidth or default.bandwidth,
            converge_timeout=op.converge_timeout or default.converge_timeout,
        )

    def _resolve_settings(self, ctx: StepContext, inst: Instance) -> None:
        self._resolved = migration_settings(ctx.config, inst, self.op, self.options)
        settings, levels = self._resolved
        shown = {
            "max_downtime": f"max downtime {settings.max_downtime} ms",
            "bandwidth": f"bandwidth {settings.bandwidth} MiB/s",
            "converge_timeout": f"converge timeout {settings.converge_timeout:g} s",
        }
        ctx.log(
            "migration settings: "
            + ", ".join(f"{shown[f]} (from {levels[f]})" for f in MIGRATION_FIELDS)
        )

    def check(self, config: ClusterConfig) -> None:
        op = self.op
        inst, source = movable_instance(config, op.instance_name)
        get_hypervisor(inst.hypervisor)
        if op.cleanup:
            return
        if source.offline and not op.allow_failover:
            raise PrerequisiteError(
                f"primary node {source.name} of {inst.name} is offline: nothing can migrate "
                f"from it; use 'extjobs instance failover {inst.name}' (or --allow-failover)",
                instance=inst.name,
                node=source.name,
            )
        if op.target_node is not None:
            check_target(config, source, op.target_node)

    async def exec(self, ctx: StepContext) -> Any:
        op = self.op
        if op.cleanup:
            return await self._cleanup(ctx)
        inst, source = movable_instance(ctx.config, op.instance_name)
        if source.offline:
            return await self._fail_over(ctx, f"its primary {source.name} is offline")
        self._resolve_settings(ctx, inst)
        target, reports = await pick_target(
            ctx,
            inst,
            source,
            self._pinned_target or op.target_node,
            also=[source],
            force=op.force,
            group=self._group,
        )
        providers = sorted({d.provider for d in inst.disks})
        try:
            provider_statuses(reports, source.name, providers)
        except ExtJobsError as exc:
            raise PrerequisiteError(
                f"cannot migrate {inst.name}: {exc.message}; nothing was changed "
                f"(if {source.name} is down, use 'extjobs instance failover')",
                instance=inst.name,
                node=source.name,
            ) from None
        runtime = await hypervisor_status(ctx, inst, source.name)
        if not runtime.running:
            if op.allow_failover:
                return await self._fail_over(
                    ctx, f"its guest does not run on {source.name}", target.name
                )
            raise PrerequisiteError(
                f"{inst.name} does not run on {source.name}, so it cannot migrate; use "
                f"'extjobs instance failover' or --allow-failover (or 'instance startup')",
                instance=inst.name,
            )
        if (await hypervisor_status(ctx, inst, target.name)).running:
            raise PrerequisiteError(
                f"a guest of {inst.name} already runs on {target.name}; find out which one is "
                f"the instance with 'extjobs instance migrate {inst.name} --cleanup'",
                instance=inst.name,
                node=target.name,
            )
        mctx = ctx.tagged(MoveTag("migrate", source.name, target.name))
        flight = self._flight = _Flight(
            inst, source.name, target.name, reports, live=op.mode == "live"
        )
        ctx.log(
            f"migrating {inst.name} ({op.mode}) from {source.name} to {target.name}; "
            f"{self.settings.describe()}"
        )
        try:
            await self._move(mctx, flight, runtime, target)
        except ExtJobsError as exc:
            if flight.phase == "start":
                raise
            ctx.log(f"migration failed: {exc.message}; settling on one node", kind=LogKind.ERROR)
            where = await self._settle(mctx, flight)
            raise exc.restated(
                f"migration of {inst.name} from {source.name} to {target.name} failed: "
                f"{exc.message}; {where}"
            ) from exc
        return await self._finish(mctx, flight)

    async def _move(
        self, ctx: StepContext, flight: _Flight, runtime: RuntimeStatus, target: Node
    ) -> None:
        inst, source = flight.instance, flight.source
        providers = sorted({d.provider for d in inst.disks})
        s_statuses = provider_statuses(flight.reports, source, providers)
        t_statuses = provider_statuses(flight.reports, target.name, providers)
        flight.phase = "demoted"
        for disk in inst.disks:
            await run_provider(
                ctx,
                source,
                s_statuses[disk.provider],
                Action.OPEN,
                disk_volume(inst.name, disk, open_exclusive=False),
                instance=inst.name,
                disk=disk.index,
            )
        ctx.log(f"{source}: disks re-opened shared, so that {target.name} may attach them")
        flight.phase = "target"
        paths = await activate_disks(ctx, inst, target.name, t_statuses, exclusive=False)
        ctx.log(f"{target.name}: disks attached and opened shared")
        if get_hypervisor(inst.hypervisor).transfers_memory:
            await self._transfer(ctx, flight, runtime, target, paths)
        else:
            status = await start_guest(ctx, inst, target.name, paths)
            await stop_guest(ctx, inst, source, grace=SOURCE_GRACE)
            ctx.log(
                f"the {inst.hypervisor} guest moved: started on {target.name} "
                f"(pid {status.pid}) holding the disks, then stopped on {source}; no "
                f"memory moves, so the settings are only recorded ({self.settings.describe()})",
                kind=LogKind.PROGRESS,
            )
        flight.phase = "moved"

    async def _transfer(
        self,
        ctx: StepContext,
        flight: _Flight,
        runtime: RuntimeStatus,
        target: Node,
        paths: Sequence[str],
    ) -> None:
        """Start the receiving side on the target, let the backend move the guest's
        memory (:meth:`~extjobs.hypervisors.base.Hypervisor.transfer_memory`), then stop
        the process it left on the source."""
        inst, source = flight.instance, flight.source
        hv = get_hypervisor(inst.hypervisor)
        key = instance_key(inst)
        run_dir = run_dir_for(ctx.config.cluster, target.name)
        result = await ctx.run(incoming_step(inst, target.name, paths, run_dir))
        incoming = parse_status(result.stdout, node=target.name)
        t_socket = hv.control_socket(key, incoming)
        s_socket = hv.control_socket(key, runtime)
        if t_socket is None or s_socket is None:
            raise HypervisorError(f"the {inst.hypervisor} guests of {inst.name} have no socket")
        await hv.transfer_memory(
            ctx,
            source=source,
            source_socket=s_socket,
            target=target.name,
            target_socket=t_socket,
            host=target.host,
            port=self.op.migration_port,
            live=flight.live,
            settings=self.settings,
        )
        await stop_guest(ctx, inst, source, grace=SOURCE_GRACE)
        ctx.log(f"{source}: the source qemu, left behind by the migration, is stopped")

    async def _finish(self, ctx: StepContext, flight: _Flight) -> Any:
        inst, source, target = flight.instance, flight.source, flight.target
        ctx.update_config(
            lambda c: c.with_instance(attrs.evolve(c.instance(inst.name), primary=target))
        )
        ctx.log(f"{inst.name} runs on {target}; the configuration says so")
        providers = sorted({d.provider for d in inst.disks})
        failures = []
        try:
            statuses = provider_statuses(flight.reports, source, providers)
            await deactivate_disks(ctx, inst, source, statuses)
        except ExtJobsError as exc:
            failures.append(f"releasing the disks on {source}: {exc.message}")
        t_statuses = provider_statuses(flight.reports, target, providers)
        for disk in inst.disks:
            try:
                await run_provider(
                    ctx,
                    target,
                    t_statuses[disk.provider],
                    Action.OPEN,
                    disk_volume(inst.name, disk, open_exclusive=True),
                    instance=inst.name,
                    disk=disk.index,
                )
            except ExtJobsError as exc:
                failures.append(f"disk{disk.index}: open exclusive on {target}: {exc.message}")
        flight.phase = "done"
        if failures:
            raise ProviderError(
                f"{inst.name} was migrated to {target} and runs there, but "
                f"{'; '.join(failures)}; once that is fixed, run "
                f"'extjobs instance migrate {inst.name} --cleanup'",
                instance=inst.name,
                node=source,
            )
        ctx.log(
            f"{inst.name} migrated from {source} to {target}: disks detached from {source}, "
            f"open exclusively on {target}"
        )
        settings = self.settings
        return {
            "instance": inst.name,
            "mode": self.op.mode,
            "source": source,
            "target": target,
            "primary": target,
            "max_downtime": settings.max_downtime,
            "bandwidth": settings.bandwidth,
            "converge_timeout": settings.converge_timeout,
        }

    async def _settle(self, ctx: StepContext, flight: _Flight) -> str:
        flight.settled = True
        try:
            settled = await settle(
                ctx,
                flight.instance,
                [flight.source, flight.target],
                flight.reports,
                prefer=flight.source,
                resume=not flight.live,
            )
        except ExtJobsError as exc:
            return (
                f"could not settle it on one node ({exc.message}); run 'extjobs instance "
                f"migrate {flight.instance.name} --cleanup' once the nodes answer"
            )
        return settled.describe()

    async def compensate(self, ctx: StepContext) -> None:
        flight = self._flight
        if self._failover is not None:
            await self._failover.compensate(ctx)
        if flight is None or flight.settled or flight.phase in ("start", "done"):
            return
        mctx = ctx.tagged(MoveTag("migrate", flight.source, flight.target))
        ctx.log(
            "the migration was interrupted; settling the instance on one node", kind=LogKind.UNDO
        )
        ctx.log(await self._settle(mctx, flight), kind=LogKind.UNDO)

    async def _fail_over(self, ctx: StepContext, why: str, target: str | None = None) -> Any:
        op = self.op
        ctx.log(f"{op.instance_name} cannot migrate ({why}); failing over instead (allowed)")
        self._failover = LUInstanceFailover(
            OpInstanceFailover(
                instance_name=op.instance_name,
                target_node=self._pinned_target or op.target_node or target,
                force=op.force,
            ),
            self.options,
        )
        result = await self._failover.exec(ctx)
        return {**result, "mode": "failover"}

    async def _cleanup(self, ctx: StepContext) -> Any:
        inst, primary = movable_instance(ctx.config, self.op.instance_name)
        nodes = group_nodes(ctx.config, inst)
        ctx.log(f"looking for the guest of {inst.name} on {', '.join(nodes)}")
        reports = await diagnose_on(
            ctx, [ctx.config.node(n) for n in nodes], sorted({d.provider for d in inst.disks})
        )
        mctx = ctx.tagged(MoveTag("cleanup", primary.name, ""))
        try:
            settled = await settle(mctx, inst, nodes, reports, prefer=primary.name)
        except NodeError as exc:
            raise NodeError(
                f"{exc.message}; bring those nodes back, or mark them offline "
                "('extjobs node modify NODE --offline yes') once they are powered off",
                **exc.fields,
            ) from None
        if settled.failures:
            raise ProviderError(
                f"cleanup of {inst.name} incomplete: {settled.describe()}", instance=inst.name
            )
        return {
            "instance": inst.name,
            "primary": settled.node or ctx.config.instance(inst.name).primary,
            "running": settled.node is not None,
            "stopped": list(settled.stopped),
            "released": list(settled.released),
        }

    async def recover(self, ctx: StepContext, journal: Journal) -> Recovery:
        name = self.op.instance_name
        if self.op.cleanup:
            return Recovery(RecoveryAction.RETRY, "cleanup interrupted; running it again")
        move = journal.move("migrate", "failover")
        if move is None:
            return Recovery(
                RecoveryAction.RETRY, f"migration of {name} interrupted before anything changed"
            )
        source, target = move.source, move.target
        if move.op == "failover":
            failover = LUInstanceFailover(
                OpInstanceFailover(instance_name=name, target_node=target), self.options
            )
            outcome = await failover.recover(ctx, journal)
            if outcome.action is RecoveryAction.RETRY:
                self._pinned_target = target
            return outcome
        inst = ctx.config.instances.get(name)
        if inst is None:
            return Recovery(RecoveryAction.FAILED, f"instance {name} no longer exists")
        nodes = [source, target]
        reports = await diagnose_on(
            ctx, [ctx.config.node(n) for n in nodes], sorted({d.provider for d in inst.disks})
        )
        mctx = ctx.tagged(MoveTag("migrate", source, target))
        try:
            settled = await settle(
                mctx, inst, nodes, reports, prefer=source, resume=self.op.mode != "live"
            )
        except ExtJobsError as exc:
            return Recovery(
                RecoveryAction.FAILED,
                f"migration of {name} interrupted by a daemon restart; {exc.message}; run "
                f"'extjobs instance migrate {name} --cleanup' once the nodes answer",
            )
        message = f"migration of {name} interrupted by a daemon restart; {settled.describe()}"
        if settled.node == target and not settled.failures:
            return Recovery(
                RecoveryAction.DONE,
                message,
                {
                    "instance": name,
                    "mode": self.op.mode,
                    "source": source,
                    "target": target,
                    "primary": target,
                },
            )
        return Recovery(RecoveryAction.FAILED, message)
