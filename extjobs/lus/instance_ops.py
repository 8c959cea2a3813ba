"""Instance life cycle on its primary node: startup, shutdown, rename, grow-disk.

- Startup: attach + open (exclusive) every disk on the primary, start the guest, mark
  the instance up. A failure undoes what this startup did (a guest found running is
  left alone).
- Shutdown: stop the guest, mark the instance down, then close + detach every disk.
- Rename: ``setinfo`` with the new ``originstname+NAME`` on every disk, then the
  configuration. Files on nodes are keyed by the instance's uuid, so a running guest
  is not disturbed.
- Grow disk: refuse shrinking and zero growth before anything runs; attach on the
  primary, ``grow``, check the new size on the node, update the configuration, and
  tell a running guest (``Hypervisor.notify_resize``). A disk attached only for the
  grow (guest not running) is detached again.

Attach, open, close, detach and setinfo are idempotent, so recovery after a crash is a
retry, except where the journal or the configuration shows the work is already done.
"""

from __future__ import annotations

from typing import Any

import attrs

from extjobs.errors import ExtJobsError, PrerequisiteError, ProviderError
from extjobs.extstorage.diagnose import ProviderStatus
from extjobs.extstorage.names import Action
from extjobs.hypervisors import get_hypervisor
from extjobs.hypervisors.base import instance_key
from extjobs.lus.base import LogicalUnit, Recovery, RecoveryAction, StepContext
from extjobs.lus.instance_hv import hypervisor_status, start_guest, stop_guest
from extjobs.lus.instance_storage import (
    MIB,
    activate_disks,
    attach_disk,
    deactivate_disks,
    disk_volume,
    find_disk,
    providers_on,
    run_provider,
    run_provider_result,
    size_check_command,
    with_earlier_stderr,
)
from extjobs.lus.journal import Journal
from extjobs.lus.undo import UndoLog
from extjobs.model.cluster import ClusterConfig, Disk, Instance, Node
from extjobs.model.config import Config
from extjobs.model.jobs import LogKind
from extjobs.model.locks import LockRequest, Mode
from extjobs.model.opcodes import (
    OpInstanceGrowDisk,
    OpInstanceRename,
    OpInstanceShutdown,
    OpInstanceStartup,
)
from extjobs.model.steps import Step


def _names(disk: Disk, ref: int | str) -> bool:
    """Whether ``ref`` (an index or a name) names ``disk``."""
    return disk.index == ref or str(ref) == str(disk.index) or disk.name == ref


def instance_locks(config: ClusterConfig, *names: str) -> list[LockRequest]:
    """Cluster shared, each named instance exclusive, their primaries shared."""
    wanted = [LockRequest.cluster()] + [LockRequest.instance(n) for n in names]
    for name in names:
        inst = config.instances.get(name)
        if inst is not None:
            wanted.append(LockRequest.node(inst.primary, Mode.SHARED))
    return wanted


def usable_instance(config: ClusterConfig, name: str) -> tuple[Instance, Node]:
    """The instance and its primary node; refuses an incomplete removal or an offline
    primary."""
    inst = config.instance(name)
    if inst.cleanup:
        raise PrerequisiteError(
            f"instance {name} is being removed ({len(inst.cleanup)} disk(s) need cleanup); "
            f"finish with 'extjobs instance remove {name}'",
            instance=name,
        )
    node = config.node(inst.primary)
    if node.offline:
        raise PrerequisiteError(
            f"primary node {node.name} of {name} is offline", instance=name, node=node.name
        )
    return inst, node


def _set_admin(config: ClusterConfig, name: str, up: bool) -> ClusterConfig:
    return config.with_instance(attrs.evolve(config.instance(name), admin_up=up))


class LUInstanceStartup(LogicalUnit[OpInstanceStartup]):
    OPCODE = OpInstanceStartup

    def __init__(self, op: OpInstanceStartup, options: Config) -> None:
        super().__init__(op, options)
        self._undo = UndoLog()

    def locks(self, config: ClusterConfig) -> list[LockRequest]:
        return instance_locks(config, self.op.instance_name)

    def check(self, config: ClusterConfig) -> None:
        usable_instance(config, self.op.instance_name)

    async def exec(self, ctx: StepContext) -> Any:
        inst, node = usable_instance(ctx.config, self.op.instance_name)
        if self.op.only_if_marked_up and not inst.admin_up:
            ctx.log(f"{inst.name} was marked down since this restart was asked for; not started")
            return {"instance": inst.name, "node": node.name, "pid": None, "started": False}
        status = await hypervisor_status(ctx, inst, node.name)
        if status.running:
            ctx.log(f"{inst.name} already runs on {node.name} (pid {status.pid})")
        else:
            statuses = await providers_on(ctx, node, {d.provider for d in inst.disks})
            paths = await activate_disks(ctx, inst, node.name, statuses, undo=self._undo)
            status = await start_guest(ctx, inst, node.name, paths, undo=self._undo)
        ctx.update_config(lambda c: _set_admin(c, inst.name, True))
        return {"instance": inst.name, "node": node.name, "pid": status.pid}

    async def compensate(self, ctx: StepContext) -> None:
        if self._undo:
            ctx.log(f"undoing the partial startup of {self.op.instance_name}", kind=LogKind.UNDO)
            failures = await self._undo.run(ctx)
            if failures:
                raise ProviderError("startup not fully undone: " + "; ".join(failures))


class LUInstanceShutdown(LogicalUnit[OpInstanceShutdown]):
    OPCODE = OpInstanceShutdown

    def locks(self, config: ClusterConfig) -> list[LockRequest]:
        return instance_locks(config, self.op.instance_name)

    def check(self, config: ClusterConfig) -> None:
        usable_instance(config, self.op.instance_name)

    async def exec(self, ctx: StepContext) -> Any:
        inst, node = usable_instance(ctx.config, self.op.instance_name)
        await stop_guest(ctx, inst, node.name, grace=self.op.timeout)
        # The shutdown releases the disks, activated ones (activate-disks) too.
        ctx.update_config(
            lambda c: c.with_instance(
                attrs.evolve(c.instance(inst.name), admin_up=False, disks_active=False)
            )
        )
        statuses = await providers_on(ctx, node, {d.provider for d in inst.disks})
        await deactivate_disks(ctx, inst, node.name, statuses)
        ctx.log(f"{inst.name} stopped on {node.name}; its disks are closed and detached")
        return {"instance": inst.name, "node": node.name}


class LUInstanceRename(LogicalUnit[OpInstanceRename]):
    OPCODE = OpInstanceRename

    def locks(self, config: ClusterConfig) -> list[LockRequest]:
        return instance_locks(config, self.op.instance_name, self.op.new_name)

    def check(self, config: ClusterConfig) -> None:
        usable_instance(config, self.op.instance_name)
        if self.op.new_name in config.instances:
            raise PrerequisiteError(
                f"instance {self.op.new_name!r} already exists", instance=self.op.new_name
            )

    async def exec(self, ctx: StepContext) -> Any:
        old, new = self.op.instance_name, self.op.new_name
        inst, node = usable_instance(ctx.config, old)
        statuses = await providers_on(ctx, node, {d.provider for d in inst.disks})
        for disk in inst.disks:
            await run_provider(
                ctx,
                node.name,
                statuses[disk.provider],
                Action.SETINFO,
                disk_volume(new, disk),
                instance=new,
                disk=disk.index,
            )

        def rename(config: ClusterConfig) -> ClusterConfig:
            current = config.instance(old)
            return config.without_instance(old).with_instance(attrs.evolve(current, name=new))

        ctx.update_config(rename)
        ctx.log(f"instance {old} renamed to {new}; disk metadata is now originstname+{new}")
        return {"instance": new, "old_name": old}

    async def recover(self, ctx: StepContext, journal: Journal) -> Recovery:
        cfg = ctx.config
        if self.op.new_name in cfg.instances and self.op.instance_name not in cfg.instances:
            return Recovery(
                RecoveryAction.DONE,
                "the rename was finished before the restart",
                {"instance": self.op.new_name, "old_name": self.op.instance_name},
            )
        return Recovery(RecoveryAction.RETRY, "rename interrupted; running it again")


class LUInstanceGrowDisk(LogicalUnit[OpInstanceGrowDisk]):
    OPCODE = OpInstanceGrowDisk

    def __init__(self, op: OpInstanceGrowDisk, options: Config) -> None:
        super().__init__(op, options)
        self._attached_here: tuple[Node, ProviderStatus] | None = None
        #: Once the provider's grow may have run: (node, path on it, block device?,
        #: target MiB), so that an undo can find out whether the volume did grow.
        self._growing: tuple[str, str, bool, int] | None = None

    def locks(self, config: ClusterConfig) -> list[LockRequest]:
        return instance_locks(config, self.op.instance_name)

    def _target(self, config: ClusterConfig) -> tuple[Instance, Node, int]:
        op = self.op
        inst, node = usable_instance(config, op.instance_name)
        disk = find_disk(inst, op.disk)
        current = disk.size
        target = op.amount if op.absolute else current + op.amount
        if target < current:
            raise PrerequisiteError(
                f"refusing to shrink disk {disk.index} of {inst.name} from {current} MiB to "
                f"{target} MiB; disks only grow",
                instance=inst.name,
                size=current,
                requested=target,
            )
        if target == current:
            raise PrerequisiteError(
                f"disk {disk.index} of {inst.name} is already {current} MiB; nothing to grow",
                instance=inst.name,
                size=current,
            )
        return inst, node, target

    def check(self, config: ClusterConfig) -> None:
        self._target(config)

    async def exec(self, ctx: StepContext) -> Any:
        inst, node, target = self._target(ctx.config)
        disk = find_disk(inst, self.op.disk)
        hv = get_hypervisor(inst.hypervisor)
        runtime = await hypervisor_status(ctx, inst, node.name)
        statuses = await providers_on(ctx, node, {disk.provider})
        status = statuses[disk.provider]
        volume = disk_volume(inst.name, disk, new_size=target)
        info = await attach_disk(
            ctx, node.name, status, volume, instance=inst.name, disk=disk.index
        )
        if not runtime.running:
            self._attached_here = (node, status)
        path = hv.disk_path(info, disk.access, node=node.name, provider=disk.provider)
        self._growing = (node.name, path, path == info.device, target)
        grown = await run_provider_result(
            ctx, node.name, status, Action.GROW, volume, instance=inst.name, disk=disk.index
        )
        try:
            actual = await self._check_size(
                ctx, node.name, path, block=path == info.device, target=target
            )
        except ExtJobsError as exc:
            # Exit status 0 does not prove the volume grew: quote what grow said.
            error = with_earlier_stderr(exc, Action.GROW, grown)
            if error is exc:
                raise
            raise error from exc
        self._record_size(ctx, target)
        ctx.log(f"disk{disk.index} of {inst.name} grown from {disk.size} to {target} MiB")
        guest_size = None
        socket = hv.control_socket(instance_key(inst), runtime)
        if runtime.running and socket is not None:
            guest_size = await hv.notify_resize(ctx, node.name, socket, disk.index, target)
            ctx.log(
                f"the running {inst.hypervisor} guest of {inst.name} was told the new "
                f"size; it sees {guest_size} bytes"
            )
        elif runtime.running:
            ctx.log(f"the {inst.hypervisor} guest of {inst.name} needs no resize notice")
        else:
            await self._detach_again(ctx)
        return {
            "instance": inst.name,
            "disk": disk.index,
            "old_size": disk.size,
            "new_size": target,
            "size_on_node": actual,
            "guest_size": guest_size,
        }

    async def _check_size(
        self, ctx: StepContext, node: str, path: str, *, block: bool, target: int
    ) -> int | None:
        if not path.startswith("/"):
            ctx.log(
                f"{node}: cannot check the size of {path!r} (not a path on the node)",
                kind=LogKind.WARNING,
            )
            return None
        result = await ctx.run(
            Step(
                node=node,
                description=f"check the size of {path}",
                command=size_check_command(path, block=block),
            )
        )
        text = result.stdout.strip()
        if not text.isdigit():
            raise ProviderError(f"size check of {path} on {node} printed {text[:100]!r}", node=node)
        size = int(text)
        if size < target * MIB:
            raise ProviderError(
                f"grow reported success but {path} on {node} is {size} bytes, not the "
                f"{target * MIB} bytes of {target} MiB",
                node=node,
                size=size,
                expected=target * MIB,
            )
        ctx.log(f"{node}: {path} is now {size} bytes")
        return size

    def _record_size(self, ctx: StepContext, size: int) -> None:
        """The configuration says disk ``op.disk`` is ``size`` MiB (no longer growing)."""
        name = self.op.instance_name
        index = find_disk(ctx.config.instance(name), self.op.disk).index
        self._growing = None
        ctx.update_config(
            lambda c: c.with_instance(
                attrs.evolve(
                    c.instance(name),
                    disks=tuple(
                        attrs.evolve(d, size=size) if d.index == index else d
                        for d in c.instance(name).disks
                    ),
                )
            )
        )

    async def _settle_size(self, ctx: StepContext) -> None:
        """After a failed or cancelled grow: if the volume did grow on the node, the
        configuration says so (a later grow is never refused as a shrink); if that cannot
        be told, the job log says so."""
        if self._growing is None:
            return
        node, path, block, target = self._growing
        self._growing = None
        try:
            actual = await self._check_size(ctx, node, path, block=block, target=target)
        except ProviderError as exc:
            if exc.fields.get("size") is not None:  # checked: it did not grow
                ctx.log(f"disk{self.op.disk} did not grow; the configuration is unchanged")
                return
            actual, why = None, exc.message
        except ExtJobsError as exc:
            actual, why = None, exc.message
        else:
            why = "its size cannot be checked on the node"
        if actual is None:
            ctx.log(
                f"disk{self.op.disk} may or may not have grown to {target} MiB ({why}); "
                "the configuration keeps the old size: run the grow again",
                kind=LogKind.WARNING,
            )
            return
        self._record_size(ctx, target)
        ctx.log(
            f"disk{self.op.disk} had grown to {target} MiB before the grow was stopped; "
            "the configuration says so",
            kind=LogKind.UNDO,
        )

    async def _detach_again(self, ctx: StepContext) -> None:
        if self._attached_here is None:
            return
        node, status = self._attached_here
        self._attached_here = None
        inst = ctx.config.instance(self.op.instance_name)
        disk = find_disk(inst, self.op.disk)
        await run_provider(
            ctx,
            node.name,
            status,
            Action.DETACH,
            disk_volume(inst.name, disk),
            instance=inst.name,
            disk=disk.index,
        )

    async def compensate(self, ctx: StepContext) -> None:
        await self._settle_size(ctx)
        try:
            await self._detach_again(ctx)
        except ExtJobsError as exc:
            ctx.log(f"detaching the disk again failed: {exc.message}", kind=LogKind.WARNING)

    async def recover(self, ctx: StepContext, journal: Journal) -> Recovery:
        grown = journal.last_grow_size()
        inst = ctx.config.instances.get(self.op.instance_name)
        disk = (
            None if inst is None else next((d for d in inst.disks if _names(d, self.op.disk)), None)
        )
        if grown is not None and disk is not None and disk.size == grown:
            return Recovery(
                RecoveryAction.DONE,
                f"disk {self.op.disk} was already grown to {disk.size} MiB before the restart",
                {"instance": self.op.instance_name, "new_size": disk.size},
            )
        return Recovery(
            RecoveryAction.RETRY,
            "grow interrupted; running it again "
            "(attach and grow to the same target size are idempotent)",
        )
