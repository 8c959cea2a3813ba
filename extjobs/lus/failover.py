"""Failover: stop an instance on its primary S and start it on a node T of the same group.

::

    S: stop the guest; close, detach (every disk)       the source is released
       — or, S offline / unreachable / failing with ignore_consistency:
    master: S's fence command (must succeed; a warning when S has none)
    T: attach, open exclusive (every disk); start the guest   only if the instance is up
    config: primary = T

A disk is never attached on two nodes: T is touched only once S released the disks or
was fenced. S unreachable refuses the job (nothing changed) unless S is marked offline
or ``ignore_consistency`` is given. Releasing the disks on a reachable S failing without
``ignore_consistency`` puts the instance back on S. T failing undoes what was done on
T; the instance then runs on S again if S was released cleanly, else it stays down and
the error says so. The configuration changes last, once the guest runs on T.

Recovery after a daemon crash: once the journal shows S released (every disk detached
there, or S fenced, or anything done on T) the LU finishes on T; before that it runs
again from the start, towards the same T.
"""

from __future__ import annotations

from typing import Any

import attrs

from extjobs.errors import ExtJobsError, NodeError, PrerequisiteError, ProviderError
from extjobs.extstorage.diagnose import ProviderStatus
from extjobs.lus.base import LogicalUnit, Recovery, RecoveryAction, StepContext
from extjobs.lus.instance_hv import start_guest, stop_guest
from extjobs.lus.instance_move import (
    Reports,
    check_target,
    fence,
    movable_instance,
    move_locks,
    pick_target,
    provider_statuses,
)
from extjobs.lus.instance_storage import (
    activate_disks,
    deactivate_disks,
    providers_on,
)
from extjobs.lus.journal import Journal
from extjobs.lus.undo import UndoLog
from extjobs.model.cluster import ClusterConfig, Instance, Node
from extjobs.model.config import Config
from extjobs.model.jobs import LogKind
from extjobs.model.locks import LockRequest
from extjobs.model.opcodes import OpInstanceFailover
from extjobs.model.steps import MoveTag
from extjobs.model.volume import Action


class LUInstanceFailover(LogicalUnit[OpInstanceFailover]):
    OPCODE = OpInstanceFailover

    def __init__(self, op: OpInstanceFailover, options: Config) -> None:
        super().__init__(op, options)
        self._undo = UndoLog()
        self._pinned_target: str | None = None
        #: What a cancel must put back on the source: set once the source is touched,
        #: cleared when the failover finished or its failure was already handled.
        self._source: tuple[Instance, str, dict[str, ProviderStatus]] | None = None

    def locks(self, config: ClusterConfig) -> list[LockRequest]:
        return move_locks(config, self.op.instance_name, self.op.target_node)

    def check(self, config: ClusterConfig) -> None:
        _inst, source = movable_instance(
            config, self.op.instance_name, release_active=self.op.ignore_consistency
        )
        if self.op.target_node is not None:
            check_target(config, source, self.op.target_node)

    async def exec(self, ctx: StepContext) -> Any:
        op = self.op
        inst, source = movable_instance(
            ctx.config, op.instance_name, release_active=op.ignore_consistency
        )
        target, reports = await pick_target(
            ctx,
            inst,
            source,
            self._pinned_target or op.target_node,
            also=[] if source.offline else [source],
            force=op.force,
        )
        mctx = ctx.tagged(MoveTag("failover", source.name, target.name))
        ctx.log(f"failing {inst.name} over from {source.name} to {target.name}")
        try:
            unclean = await self._release_source(mctx, inst, source, reports)
            clean = unclean is None
            if unclean is not None and source.offline and source.fenced:
                self._source = None
                ctx.log(
                    f"node {source.name} was fenced when it was marked offline "
                    "('node fence'); it is not fenced again"
                )
            elif unclean is not None:
                self._source = None
                try:
                    await fence(mctx, source, unclean)
                except ExtJobsError as exc:
                    raise exc.restated(
                        f"failover of {inst.name} stopped before {target.name} was touched: "
                        f"{exc.message}"
                    ) from exc
            providers = sorted({d.provider for d in inst.disks})
            t_statuses = provider_statuses(reports, target.name, providers)
            return await self._take_over(mctx, inst, source, target, t_statuses, clean=clean)
        except ExtJobsError:
            # Handled where it happened: the error says where the instance is.
            self._source = None
            raise

    async def _release_source(
        self, ctx: StepContext, inst: Instance, source: Node, reports: Reports
    ) -> str | None:
        """Stop the guest and release the disks on S; ``None`` when that worked, else
        why not (with ``ignore_consistency``, or S offline).

        Raises (nothing changed, or S restored) unless ``ignore_consistency``.
        """
        op = self.op
        if source.offline:
            ctx.log(f"source node {source.name} is offline: nothing is run there")
            return "it is offline"
        advice = (
            f"mark it offline ('extjobs node modify {source.name} --offline yes') or use "
            "--ignore-consistency (the node is fenced first if it has a fence command)"
        )
        providers = sorted({d.provider for d in inst.disks})
        try:
            statuses = provider_statuses(reports, source.name, providers)
            self._source = (inst, source.name, statuses)
            await stop_guest(ctx, inst, source.name, grace=op.shutdown_timeout)
        except ExtJobsError as exc:
            if not op.ignore_consistency:
                raise PrerequisiteError(
                    f"cannot stop {inst.name} on {source.name}: {exc.message}; nothing was "
                    f"changed; if the node is down, {advice}",
                    instance=inst.name,
                    node=source.name,
                ) from None
            ctx.log(
                f"{source.name}: cannot stop the guest ({exc.message}); going on "
                "(consistency ignored)",
                kind=LogKind.WARNING,
            )
            if isinstance(exc, NodeError):
                return "it is unreachable"
            return "the guest could not be stopped there"
        ctx.log(f"{source.name}: the guest of {inst.name} is stopped")
        self._source = (inst, source.name, statuses)
        try:
            await deactivate_disks(ctx, inst, source.name, statuses)
        except ExtJobsError as exc:
            if not op.ignore_consistency:
                restored = await self._restore_source(ctx, inst, source.name, statuses)
                raise ProviderError(
                    f"failover of {inst.name} stopped: {exc.message}; {restored}",
                    instance=inst.name,
                    node=source.name,
                ) from None
            ctx.log(
                f"{source.name}: releasing the disks failed ({exc.message}); going on "
                "(consistency ignored)",
                kind=LogKind.WARNING,
            )
            return "its disks could not be released there"
        ctx.log(f"{source.name}: disks closed and detached")
        return None

    async def _restore_source(
        self, ctx: StepContext, inst: Instance, node: str, statuses: dict[str, ProviderStatus]
    ) -> str:
        """Put the instance back as it was on ``node``; says what happened."""
        try:
            paths = await activate_disks(ctx, inst, node, statuses, exclusive=True)
            if inst.admin_up:
                await start_guest(ctx, inst, node, paths)
        except ExtJobsError as exc:
            return (
                f"restoring it on {node} failed too ({exc.message}); it is down: "
                f"fix {node} and run 'extjobs instance migrate {inst.name} --cleanup'"
            )
        where = "runs" if inst.admin_up else "has its disks"
        return f"{inst.name} {where} on {node} again, as before"

    async def _take_over(
        self,
        ctx: StepContext,
        inst: Instance,
        source: Node,
        target: Node,
        statuses: dict[str, ProviderStatus],
        *,
        clean: bool,
    ) -> Any:
        """Attach, open exclusive and start on T (if the instance is up), then point the
        configuration at T. On failure T is undone and, when S was released cleanly,
        the instance is restored there."""
        pid = None
        if inst.admin_up:
            try:
                paths = await activate_disks(
                    ctx, inst, target.name, statuses, exclusive=True, undo=self._undo
                )
                pid = (await start_guest(ctx, inst, target.name, paths, undo=self._undo)).pid
            except ExtJobsError as exc:
                message = await self._back_off(ctx, inst, source, target, clean)
                raise exc.restated(
                    f"failover of {inst.name} to {target.name} failed: {exc.message}; {message}"
                ) from exc
        else:
            ctx.log(f"{inst.name} is marked down: its disks stay detached until it starts")
        # Disks activated on the source (a stopped instance) were released there.
        ctx.update_config(
            lambda c: c.with_instance(
                attrs.evolve(c.instance(inst.name), primary=target.name, disks_active=False)
            )
        )
        self._source = None
        self._undo = UndoLog()
        state = f"runs there (pid {pid})" if inst.admin_up else "is down"
        ctx.log(f"{inst.name} failed over from {source.name} to {target.name} and {state}")
        return {
            "instance": inst.name,
            "source": source.name,
            "target": target.name,
            "primary": target.name,
            "started": inst.admin_up,
            "pid": pid,
        }

    async def _back_off(
        self, ctx: StepContext, inst: Instance, source: Node, target: Node, clean: bool
    ) -> str:
        failures = await self._undo.run(ctx) if self._undo else []
        undone = (
            f"undoing on {target.name} failed: {'; '.join(failures)}"
            if failures
            else f"its disks are released on {target.name}"
        )
        if not clean:
            return (
                f"{undone}; {inst.name} is down (its primary stays {source.name}); fix "
                f"{target.name} or choose another node and fail over again"
            )
        try:
            statuses = await providers_on(ctx, source, {d.provider for d in inst.disks})
        except ExtJobsError as exc:
            return f"{undone}; {inst.name} is down: {source.name} cannot be used ({exc.message})"
        return f"{undone}; {await self._restore_source(ctx, inst, source.name, statuses)}"

    async def compensate(self, ctx: StepContext) -> None:
        """After a cancel: undo what was done on the target, then put the instance back
        on the source when the source had been touched."""
        failures = []
        if self._undo:
            ctx.log(f"undoing the partial failover of {self.op.instance_name}", kind=LogKind.UNDO)
            failures = await self._undo.run(ctx)
        if self._source is not None:
            inst, node, statuses = self._source
            self._source = None
            ctx.log(await self._restore_source(ctx, inst, node, statuses), kind=LogKind.UNDO)
        if failures:
            raise ProviderError("failover not fully undone: " + "; ".join(failures))

    async def recover(self, ctx: StepContext, journal: Journal) -> Recovery:
        name = self.op.instance_name
        move = journal.move("failover")
        if move is None:
            return Recovery(RecoveryAction.RETRY, "failover interrupted before anything changed")
        source, target = move.source, move.target
        inst = ctx.config.instances.get(name)
        if inst is None:
            return Recovery(RecoveryAction.FAILED, f"instance {name} no longer exists")
        if inst.primary == target:
            return Recovery(
                RecoveryAction.DONE,
                f"the failover of {name} to {target} had finished before the restart",
                {"instance": name, "source": source, "target": target, "primary": target},
            )
        if not source_released(journal, inst, source, target):
            self._pinned_target = target
            return Recovery(
                RecoveryAction.RETRY,
                f"failover of {name} interrupted before {source} released the disks; "
                f"running it again towards {target}",
            )
        clean = all(journal.done(source, Action.DETACH, disk=d.index) for d in inst.disks)
        try:
            node = ctx.config.node(target)
            statuses = await providers_on(ctx, node, {d.provider for d in inst.disks})
            mctx = ctx.tagged(MoveTag("failover", source, target))
            result = await self._take_over(
                mctx, inst, ctx.config.node(source), node, statuses, clean=clean
            )
        except ExtJobsError as exc:
            return Recovery(
                RecoveryAction.FAILED,
                f"failover of {name} interrupted by a daemon restart after {source} released "
                f"the disks; finishing on {target} failed: {exc.message}",
            )
        return Recovery(
            RecoveryAction.DONE,
            f"failover of {name} interrupted by a daemon restart after {source} released the "
            f"disks; finished on {target}",
            result,
        )


def source_released(journal: Journal, inst: Instance, source: str, target: str) -> bool:
    """Whether the journal shows S released: every disk detached there, S fenced, or a
    step of the move already taken on T (which only happens after S was released)."""
    detached = all(journal.done(source, Action.DETACH, disk=d.index) for d in inst.disks)
    return detached or journal.fenced(source) or journal.moved_on(target)
