"""Changing an existing instance: disks added, removed, detached and attached (hot-plugged
into a running guest), memory and vcpus for the next start, the watcher's flags.

One opcode (:class:`LUInstanceSetParams`) makes at most one disk change; the CLI submits
one opcode per ``--disk`` in one job. Disk indexes never change: a new disk takes the
lowest index no disk of the instance (attached or detached) has, and a disk is named
by its index or its name wherever one is asked for (:func:`find_disk`).

Flows on the primary node P::

    add      validate the provider in P's group, the parameters against parameters.list,
             the free space (unless force) → verify → create → attach → open exclusive
             → setinfo → guest running: plug it in (kvm: QMP blockdev-add + device_add)
                          stopped: close → detach (it is attached at the next start)
             → the configuration gets the disk
    remove   guest running: plug it out (kvm: device_del, DEVICE_DELETED awaited)
             → close → detach → remove → the configuration forgets the disk
    detach   the same without remove; the disk becomes a detached disk of the instance
    attach   a detached disk: attach → open exclusive → setinfo → plug in / close+detach
             → the configuration moves it back among the disks
    move     attach with a source instance: its detached disk is checked against P's
             group (pool connected, provider valid on every online node), then attached
             as above at the next free index of the receiver, keeping its uuid and its
             volume name (recorded in ``Disk.volume``); one configuration change takes it
             from the source's detached disks into the receiver's disks

The configuration changes last. A failed or cancelled add or attach undoes its steps
(their inverses, :class:`~extjobs.lus.undo.UndoLog`) after plugging the disk out again;
a failed remove or detach plugs the disk back into the guest when it had been taken
out. After a crash, an add or attach whose disk is not in the configuration is plugged
out and undone from the journal; a remove or detach runs again (every step of it is
idempotent).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

import attrs

from extjobs.errors import ExtJobsError, InputError, PrerequisiteError, ProviderError
from extjobs.extstorage.diagnose import ProviderStatus
from extjobs.extstorage.names import Action
from extjobs.hypervisors import get_hypervisor
from extjobs.hypervisors.base import RuntimeStatus, instance_key, run_dir_for
from extjobs.lus.base import LogicalUnit, Recovery, RecoveryAction, StepContext
from extjobs.lus.capacity import shortages
from extjobs.lus.instance_hv import STATUS_TIMEOUT, hypervisor_status
from extjobs.lus.instance_ops import usable_instance
from extjobs.lus.instance_storage import (
    attach_disk,
    disk_volume,
    find_disk,
    providers_on,
    run_provider,
    run_provider_result,
    validate_in_group,
    with_earlier_stderr,
)
from extjobs.lus.journal import Journal
from extjobs.lus.pools import check_declared, new_disk, resolve_disk
from extjobs.lus.undo import UndoLog
from extjobs.model.cluster import ClusterConfig, Disk, Instance, Node
from extjobs.model.config import Config
from extjobs.model.jobs import LogKind
from extjobs.model.locks import LockRequest, Mode
from extjobs.model.opcodes import OpInstanceSetParams
from extjobs.model.steps import ProviderCall, Step


def next_index(instance: Instance) -> int:
    """The lowest index no disk of ``instance`` (attached or detached) has."""
    taken = {d.index for d in instance.disks + instance.detached_disks}
    index = 0
    while index in taken:
        index += 1
    return index


def _with_disks(config: ClusterConfig, name: str, **changes: Any) -> ClusterConfig:
    return config.with_instance(attrs.evolve(config.instance(name), **changes))


def _sorted(disks: tuple[Disk, ...]) -> tuple[Disk, ...]:
    return tuple(sorted(disks, key=lambda d: d.index))


class LUInstanceSetParams(LogicalUnit[OpInstanceSetParams]):
    OPCODE = OpInstanceSetParams

    def __init__(self, op: OpInstanceSetParams, options: Config) -> None:
        super().__init__(op, options)
        self._undo = UndoLog()
        #: The disk being added or attached once it is plugged into the running guest.
        self._plugged: Disk | None = None
        #: The disk being removed or detached once the running guest let it go.
        self._unplugged: Disk | None = None
        self._node: Node | None = None

    # -- locks and checks -------------------------------------------------------------

    def locks(self, config: ClusterConfig) -> list[LockRequest]:
        wanted = [LockRequest.cluster(), LockRequest.instance(self.op.instance_name)]
        inst = config.instances.get(self.op.instance_name)
        if inst is not None:
            wanted.append(LockRequest.node(inst.primary, Mode.SHARED))
            node = config.nodes.get(inst.primary)
            if node is not None and self.op.disk is not None:
                wanted.append(LockRequest.group(node.group, Mode.SHARED))
        source = self.op.disk.source_instance if self.op.disk is not None else None
        if source is not None:
            wanted.append(LockRequest.instance(source))
        return wanted

    def check(self, config: ClusterConfig) -> None:
        inst, node = usable_instance(config, self.op.instance_name)
        change = self.op.disk
        if change is None:
            return
        if change.action == "add":
            assert change.spec is not None
            get_hypervisor(inst.hypervisor).check_instance(disks=len(inst.disks) + 1)
            resolve_disk(config, change.spec, next_index(inst), node.group)
            names = {d.name for d in inst.disks + inst.detached_disks if d.name}
            if change.spec.name is not None and change.spec.name in names:
                raise PrerequisiteError(
                    f"instance {inst.name} already has a disk named {change.spec.name!r}",
                    instance=inst.name,
                    field="disk",
                )
            return
        assert change.disk is not None
        if change.action == "attach" and change.source_instance is not None:
            self._moved_disk(config, inst, node)
            get_hypervisor(inst.hypervisor).check_instance(disks=len(inst.disks) + 1)
            return
        if change.action == "attach":
            find_disk(inst, change.disk, detached=True)
            get_hypervisor(inst.hypervisor).check_instance(disks=len(inst.disks) + 1)
            return
        disk = find_disk(inst, change.disk)
        if len(inst.disks) == 1 and inst.admin_up:
            raise PrerequisiteError(
                f"refusing to {change.action} disk {disk.index} of {inst.name}: it is the "
                "only disk of a running guest; shut the instance down first",
                instance=inst.name,
                field="disk",
            )

    # -- exec ---------------------------------------------------------------------------

    async def exec(self, ctx: StepContext) -> Any:
        op = self.op
        inst, node = usable_instance(ctx.config, op.instance_name)
        self._node = node
        result: dict[str, Any] = {"instance": inst.name, "node": node.name}
        if op.disk is not None:
            runtime = await hypervisor_status(ctx, inst, node.name)
            if op.disk.action == "add":
                result["disk"] = await self._add(ctx, inst, node, runtime)
            elif op.disk.action == "attach" and op.disk.source_instance is not None:
                result["disk"] = await self._attach_from(ctx, inst, node, runtime)
                result["source"] = op.disk.source_instance
            elif op.disk.action == "attach":
                result["disk"] = await self._attach(ctx, inst, node, runtime)
            else:
                result["disk"] = await self._take_out(ctx, inst, node, runtime)
            result["action"] = op.disk.action
            result["hotplugged"] = runtime.running
        result.update(self._plain_changes(ctx))
        return result

    def _plain_changes(self, ctx: StepContext) -> dict[str, Any]:
        """Memory, vcpus and the watcher's flags: a configuration change only."""
        op = self.op
        changes: dict[str, Any] = {}
        if op.memory is not None:
            changes["memory"] = op.memory
        if op.vcpus is not None:
            changes["vcpus"] = op.vcpus
        if op.auto_restart is not None:
            changes["auto_restart"] = op.auto_restart
        if op.auto_failover is not None:
            changes["auto_failover"] = {"yes": True, "no": False}.get(op.auto_failover)
        if not changes:
            return {}
        old = ctx.config.instance(op.instance_name)
        ctx.update_config(lambda c: _with_disks(c, op.instance_name, **changes))
        shown = {**changes}
        if "auto_failover" in changes and changes["auto_failover"] is None:
            shown["auto_failover"] = "the node group's"
        for field, value in shown.items():
            ctx.log(f"{op.instance_name}: {field} {getattr(old, field)} → {value}")
        later = [f for f in ("memory", "vcpus") if f in changes]
        if later:
            ctx.log(f"{' and '.join(later)} of {op.instance_name} take effect at the next start")
        return {"changed": sorted(changes), "next_start": later}

    async def _statuses(self, ctx: StepContext, node: Node, disk: Disk) -> ProviderStatus:
        return (await providers_on(ctx, node, {disk.provider}))[disk.provider]

    async def _add(
        self, ctx: StepContext, inst: Instance, node: Node, runtime: RuntimeStatus
    ) -> dict[str, Any]:
        spec = self.op.disk.spec if self.op.disk is not None else None
        assert spec is not None
        cfg = ctx.config
        index = next_index(inst)
        disk = new_disk(cfg, spec, index, node.group, uuid=str(uuid.uuid4()))
        reports = await validate_in_group(ctx, node.group, {disk.provider})
        check_declared(reports, disk.provider, disk.params)
        ctx.log(f"disk parameters accepted by {disk.provider}")
        status = reports[node.name][disk.provider]
        short = await shortages(ctx, node.name, {disk.provider: status}, [disk])
        if short and not self.op.force:
            raise PrerequisiteError(
                "not enough storage: " + "; ".join(short) + "; nothing was created "
                "(use --force to add anyway)",
                node=node.name,
            )
        if short:
            ctx.log("; ".join(short) + "; adding anyway (force)", kind=LogKind.WARNING)
        volume = disk_volume(inst.name, disk, open_exclusive=True)

        async def run(action: Action, undo: UndoLog | None = None) -> Any:
            return await run_provider_result(
                ctx, node.name, status, action, volume, instance=inst.name, disk=index, undo=undo
            )

        await run(Action.VERIFY)
        created = await run(Action.CREATE, self._undo)
        try:
            info = await attach_disk(
                ctx, node.name, status, volume, instance=inst.name, disk=index, undo=self._undo
            )
        except ExtJobsError as exc:
            error = with_earlier_stderr(exc, Action.CREATE, created)
            if error is exc:
                raise
            raise error from exc
        await run(Action.OPEN, self._undo)
        await run(Action.SETINFO)
        ctx.log(f"disk{index}: created {volume.name} ({disk.size} MiB, {disk.provider})")
        guest = await self._plug_in(ctx, inst, node, runtime, disk, status, info)
        ctx.update_config(
            lambda c: _with_disks(c, inst.name, disks=_sorted((*c.instance(inst.name).disks, disk)))
        )
        self._plugged = None
        self._undo = UndoLog()
        ctx.log(f"disk{index} added to {inst.name}" + self._where(runtime))
        return self._disk_result(disk, guest)

    async def _attach(
        self, ctx: StepContext, inst: Instance, node: Node, runtime: RuntimeStatus
    ) -> dict[str, Any]:
        assert self.op.disk is not None
        assert self.op.disk.disk is not None
        disk = find_disk(inst, self.op.disk.disk, detached=True)
        await validate_in_group(ctx, node.group, {disk.provider})
        status = await self._statuses(ctx, node, disk)
        volume = disk_volume(inst.name, disk, open_exclusive=True)
        info = await attach_disk(
            ctx, node.name, status, volume, instance=inst.name, disk=disk.index, undo=self._undo
        )
        for action in (Action.OPEN, Action.SETINFO):
            await run_provider(
                ctx,
                node.name,
                status,
                action,
                volume,
                instance=inst.name,
                disk=disk.index,
                undo=self._undo,
            )
        guest = await self._plug_in(ctx, inst, node, runtime, disk, status, info)

        def move(config: ClusterConfig) -> ClusterConfig:
            current = config.instance(inst.name)
            return _with_disks(
                config,
                inst.name,
                disks=_sorted((*current.disks, disk)),
                detached_disks=tuple(d for d in current.detached_disks if d.uuid != disk.uuid),
            )

        ctx.update_config(move)
        self._plugged = None
        self._undo = UndoLog()
        ctx.log(f"detached disk{disk.index} attached to {inst.name} again" + self._where(runtime))
        return self._disk_result(disk, guest)

    def _moved_disk(self, config: ClusterConfig, inst: Instance, node: Node) -> Disk:
        """The detached disk of the source instance that this attach moves to ``inst``,
        as ``inst`` will have it: its next free index, its new name if one was given,
        the same uuid and volume. Raises when it cannot move there."""
        change = self.op.disk
        assert change is not None
        assert change.source_instance is not None
        assert change.disk is not None
        source = config.instance(change.source_instance)
        try:
            disk = find_disk(source, change.disk, detached=True)
        except PrerequisiteError as missing:
            try:
                attached = find_disk(source, change.disk)
            except PrerequisiteError:
                raise missing from None  # neither detached nor attached
            raise PrerequisiteError(
                f"disk {attached.index} of {source.name} is attached, not detached; detach "
                f"it first ('extjobs instance modify {source.name} --disk "
                f"{attached.index}:detach')",
                instance=source.name,
                field="disk",
                disk=change.disk,
            ) from None
        if disk.uuid in source.cleanup:
            raise PrerequisiteError(
                f"detached disk {disk.index} of {source.name} awaits cleanup by "
                f"'instance remove {source.name}'; it cannot move",
                instance=source.name,
                field="disk",
            )
        name = change.new_name or disk.name
        taken = {d.name for d in inst.disks + inst.detached_disks if d.name}
        if name is not None and name in taken:
            raise PrerequisiteError(
                f"instance {inst.name} already has a disk named {name!r}; give the moved "
                "disk another name (name=NEWNAME)",
                instance=inst.name,
                field="disk",
            )
        if disk.pool is not None:
            cluster_pools = config.cluster.pools if config.cluster is not None else {}
            if disk.pool not in cluster_pools:
                raise PrerequisiteError(
                    f"detached disk {disk.index} of {source.name} is in storage pool "
                    f"{disk.pool!r}, which no longer exists",
                    pool=disk.pool,
                )
            connected = config.group(node.group).pools
            if disk.pool not in connected:
                raise PrerequisiteError(
                    f"detached disk {disk.index} of {source.name} is in storage pool "
                    f"{disk.pool!r}, which is not connected to node group {node.group!r} of "
                    f"{inst.name} (connected: {', '.join(connected) or 'none'}); nothing "
                    "was changed",
                    pool=disk.pool,
                    group=node.group,
                )
        return attrs.evolve(disk, index=next_index(inst), name=name, volume=disk.volume_name)

    async def _attach_from(
        self, ctx: StepContext, inst: Instance, node: Node, runtime: RuntimeStatus
    ) -> dict[str, Any]:
        """Attach a detached disk of another instance (module docstring: move)."""
        assert self.op.disk is not None
        assert self.op.disk.source_instance is not None
        source_name = self.op.disk.source_instance
        disk = self._moved_disk(ctx.config, inst, node)
        old = find_disk(ctx.config.instance(source_name), str(self.op.disk.disk), detached=True)
        try:
            reports = await validate_in_group(ctx, node.group, {disk.provider})
            check_declared(reports, disk.provider, disk.params)
        except (PrerequisiteError, InputError) as exc:
            raise PrerequisiteError(
                f"detached disk {old.index} of {source_name} cannot move to {inst.name}: "
                f"{exc.message}; nothing was changed",
                instance=inst.name,
                field="disk",
            ) from exc
        status = await self._statuses(ctx, node, disk)
        volume = disk_volume(inst.name, disk, open_exclusive=True)
        info = await attach_disk(
            ctx, node.name, status, volume, instance=inst.name, disk=disk.index, undo=self._undo
        )
        for action in (Action.OPEN, Action.SETINFO):
            await run_provider(
                ctx,
                node.name,
                status,
                action,
                volume,
                instance=inst.name,
                disk=disk.index,
                undo=self._undo,
            )
        guest = await self._plug_in(ctx, inst, node, runtime, disk, status, info)

        def move(config: ClusterConfig) -> ClusterConfig:
            source = config.instance(source_name)
            left = tuple(d for d in source.detached_disks if d.uuid != disk.uuid)
            if len(left) == len(source.detached_disks):
                raise PrerequisiteError(
                    f"{source_name} no longer has detached disk {old.index}",
                    instance=source_name,
                )
            # The disk's snapshots (provider objects of its volume) go with it.
            snaps = tuple(s for s in source.snapshots if s.disk_uuid == disk.uuid)
            config = _with_disks(
                config,
                source_name,
                detached_disks=left,
                snapshots=tuple(s for s in source.snapshots if s.disk_uuid != disk.uuid),
            )
            current = config.instance(inst.name)
            return _with_disks(
                config,
                inst.name,
                disks=_sorted((*current.disks, disk)),
                snapshots=(*current.snapshots, *snaps),
            )

        ctx.update_config(move)
        self._plugged = None
        self._undo = UndoLog()
        ctx.log(
            f"detached disk{old.index} of {source_name} ({disk.volume_name}) attached to "
            f"{inst.name} as disk{disk.index}" + self._where(runtime)
        )
        return self._disk_result(disk, guest)

    @staticmethod
    def _where(runtime: RuntimeStatus) -> str:
        if runtime.running:
            return "; the running guest has it now"
        return "; the instance is stopped: the disk is used at its next start"

    @staticmethod
    def _disk_result(disk: Disk, guest: dict[str, Any] | None) -> dict[str, Any]:
        return {
            "index": disk.index,
            "name": disk.name,
            "uuid": disk.uuid,
            "volume": disk.volume_name,
            "size": disk.size,
            "provider": disk.provider,
            "pool": disk.pool,
            "guest": guest,
        }

    async def _take_out(
        self, ctx: StepContext, inst: Instance, node: Node, runtime: RuntimeStatus
    ) -> dict[str, Any]:
        """Remove or detach (see the module docstring)."""
        assert self.op.disk is not None
        assert self.op.disk.disk is not None
        action = self.op.disk.action
        disk = find_disk(inst, self.op.disk.disk)
        if runtime.running and len(inst.disks) == 1:
            raise PrerequisiteError(
                f"refusing to {action} disk {disk.index} of {inst.name}: it is the only "
                f"disk of the guest running on {node.name}; shut the instance down first",
                instance=inst.name,
                field="disk",
            )
        status = await self._statuses(ctx, node, disk)
        if runtime.running:
            await self._plug_out(ctx, inst, node, runtime, disk)
            self._unplugged = disk
        volume = disk_volume(inst.name, disk)
        steps = [Action.CLOSE, Action.DETACH] + ([Action.REMOVE] if action == "remove" else [])
        for step in steps:
            await run_provider(
                ctx, node.name, status, step, volume, instance=inst.name, disk=disk.index
            )

        def forget(config: ClusterConfig) -> ClusterConfig:
            current = config.instance(inst.name)
            kept = tuple(d for d in current.disks if d.uuid != disk.uuid)
            detached = current.detached_disks
            if action == "detach" and all(d.uuid != disk.uuid for d in detached):
                detached = _sorted((*detached, disk))
            return _with_disks(config, inst.name, disks=kept, detached_disks=detached)

        ctx.update_config(forget)
        self._unplugged = None
        done = "removed" if action == "remove" else "detached (kept as a detached disk)"
        ctx.log(f"disk{disk.index} ({disk.volume_name}) of {inst.name} {done}")
        return self._disk_result(disk, None)

    # -- the running guest --------------------------------------------------------------

    async def _held_paths(
        self, ctx: StepContext, inst: Instance, node: Node, extra: Mapping[int, str]
    ) -> list[str]:
        """The hypervisor paths of ``inst``'s disks on ``node`` (attach is idempotent and
        prints them again), with ``extra`` (index → path) for disks not yet configured."""
        hv = get_hypervisor(inst.hypervisor)
        statuses = await providers_on(ctx, node, {d.provider for d in inst.disks})
        paths: dict[int, str] = dict(extra)
        for disk in inst.disks:
            if disk.index in paths:
                continue
            info = await attach_disk(
                ctx,
                node.name,
                statuses[disk.provider],
                disk_volume(inst.name, disk),
                instance=inst.name,
                disk=disk.index,
            )
            paths[disk.index] = hv.disk_path(
                info, disk.access, node=node.name, provider=disk.provider
            )
        return [paths[i] for i in sorted(paths)]

    async def _replug(
        self, ctx: StepContext, inst: Instance, node: Node, disks: tuple[Disk, ...], paths: Any
    ) -> bool:
        """A backend without a control socket: make the guest hold exactly ``disks``
        (``paths``: their paths). Whether the backend works this way."""
        hv = get_hypervisor(inst.hypervisor)
        run_dir = run_dir_for(ctx.config.cluster, node.name)
        command = hv.replug_command(instance_key(inst), run_dir, paths, timeout=STATUS_TIMEOUT)
        if command is None:
            return False
        await ctx.run(
            Step(
                node=node.name,
                description=f"plug disks {', '.join(str(d.index) for d in disks) or 'none'} "
                f"into the {inst.hypervisor} guest of {inst.name}",
                command=command,
            )
        )
        return True

    async def _plug_in(
        self,
        ctx: StepContext,
        inst: Instance,
        node: Node,
        runtime: RuntimeStatus,
        disk: Disk,
        status: ProviderStatus,
        info: Any,
    ) -> dict[str, Any] | None:
        """Give the running guest ``disk`` (attached and open on ``node``); a stopped
        instance's disk is closed and detached again instead. What the guest shows."""
        hv = get_hypervisor(inst.hypervisor)
        path = hv.disk_path(info, disk.access, node=node.name, provider=disk.provider)
        if not runtime.running:
            volume = disk_volume(inst.name, disk)
            for action in (Action.CLOSE, Action.DETACH):
                await run_provider(
                    ctx, node.name, status, action, volume, instance=inst.name, disk=disk.index
                )
            return None
        self._plugged = disk
        after = attrs.evolve(inst, disks=_sorted((*inst.disks, disk)))
        paths = await self._held_paths(ctx, inst, node, {disk.index: path})
        if await self._replug(ctx, inst, node, after.disks, paths):
            return {"path": path}
        socket = hv.control_socket(instance_key(inst), runtime)
        assert socket is not None
        return await hv.hotplug_disk(
            ctx, node.name, socket, disk.index, path, block=path == info.device
        )

    async def _plug_out(
        self, ctx: StepContext, inst: Instance, node: Node, runtime: RuntimeStatus, disk: Disk
    ) -> None:
        """Take ``disk`` away from the guest running on ``node`` (idempotent)."""
        hv = get_hypervisor(inst.hypervisor)
        rest = tuple(d for d in inst.disks if d.uuid != disk.uuid)
        if hv.replugs:
            paths = await self._held_paths(ctx, attrs.evolve(inst, disks=rest), node, {})
            await self._replug(ctx, inst, node, rest, paths)
            return
        socket = hv.control_socket(instance_key(inst), runtime)
        assert socket is not None
        await hv.unplug_disk(ctx, node.name, socket, disk.index, timeout=self.op.unplug_timeout)

    # -- undo -----------------------------------------------------------------------------

    async def compensate(self, ctx: StepContext) -> None:
        name = self.op.instance_name
        node = self._node
        if node is None:
            return
        inst = ctx.config.instances.get(name)
        if self._plugged is not None and inst is not None:
            disk, self._plugged = self._plugged, None
            runtime = await hypervisor_status(ctx, inst, node.name)
            if runtime.running:
                try:
                    await self._plug_out(ctx, inst, node, runtime, disk)
                    ctx.log(f"disk{disk.index} plugged out of the guest again", kind=LogKind.UNDO)
                except ExtJobsError as exc:
                    raise ProviderError(
                        f"could not take disk{disk.index} away from the guest again: "
                        f"{exc.message}; its volume was left in place",
                        instance=name,
                    ) from exc
        if self._undo:
            ctx.log(f"undoing the partial disk change of {name}", kind=LogKind.UNDO)
            failures = await self._undo.run(ctx)
            if failures:
                raise ProviderError(
                    f"could not undo everything of the disk change of {name}: "
                    + "; ".join(failures),
                    instance=name,
                    failures=failures,
                )
            ctx.log("partial disk change undone; the configuration was not changed")
        if self._unplugged is not None and inst is not None:
            disk, self._unplugged = self._unplugged, None
            if any(d.uuid == disk.uuid for d in inst.disks):
                await self._plug_back(ctx, inst, node, disk)

    async def _plug_back(self, ctx: StepContext, inst: Instance, node: Node, disk: Disk) -> None:
        """A remove or detach failed after the guest let ``disk`` go: give it back."""
        try:
            runtime = await hypervisor_status(ctx, inst, node.name)
            if not runtime.running:
                return
            status = await self._statuses(ctx, node, disk)
            volume = disk_volume(inst.name, disk, open_exclusive=True)
            info = await attach_disk(
                ctx, node.name, status, volume, instance=inst.name, disk=disk.index
            )
            await run_provider(
                ctx, node.name, status, Action.OPEN, volume, instance=inst.name, disk=disk.index
            )
            others = attrs.evolve(inst, disks=tuple(d for d in inst.disks if d.uuid != disk.uuid))
            await self._plug_in(ctx, others, node, runtime, disk, status, info)
            self._plugged = None
            ctx.log(f"disk{disk.index} plugged into the guest again", kind=LogKind.UNDO)
        except ExtJobsError as exc:
            raise ProviderError(
                f"disk{disk.index} of {inst.name} was taken from the running guest but could "
                f"not be given back: {exc.message}; it is still configured — run the change "
                "again or restart the instance",
                instance=inst.name,
            ) from exc

    async def recover(self, ctx: StepContext, journal: Journal) -> Recovery:
        op = self.op
        inst = ctx.config.instances.get(op.instance_name)
        if op.disk is None or inst is None:
            return await super().recover(ctx, journal)
        if op.disk.action in ("remove", "detach"):
            assert op.disk.disk is not None
            try:
                find_disk(inst, op.disk.disk)
            except PrerequisiteError:
                return Recovery(
                    RecoveryAction.DONE,
                    f"the disk {op.disk.action} was finished before the restart",
                    {"instance": inst.name},
                )
            return Recovery(
                RecoveryAction.RETRY,
                f"disk {op.disk.action} interrupted; running it again (unplug, close, detach "
                "and remove are idempotent)",
            )
        # add or attach: done when the configuration has the disk, else undone. The
        # steps on the disks the guest already had (attached again to learn their
        # paths) are not undone.
        configured = {d.uuid for d in inst.disks}
        touched = {
            call.volume.uuid: call.disk
            for _, call in journal.provider_calls()
            if call.volume.uuid not in configured
        }
        if not touched and journal.provider_calls(Action.CREATE):
            return Recovery(
                RecoveryAction.DONE,
                f"the disk {op.disk.action} was finished before the restart",
                {"instance": inst.name},
            )
        if op.disk.action == "attach" and op.disk.disk is not None and not touched:
            holder = inst
            if op.disk.source_instance is not None:
                source = ctx.config.instances.get(op.disk.source_instance)
                if source is None:
                    return Recovery(
                        RecoveryAction.FAILED,
                        f"instance {op.disk.source_instance} is gone; nothing was attached",
                    )
                holder = source
            try:
                find_disk(holder, op.disk.disk, detached=True)
            except PrerequisiteError:
                return Recovery(
                    RecoveryAction.DONE,
                    "the disk attach was finished before the restart",
                    {"instance": inst.name},
                )
        if not touched:
            return Recovery(
                RecoveryAction.RETRY, f"disk {op.disk.action} interrupted before any step"
            )
        node = ctx.config.node(inst.primary)
        runtime = await hypervisor_status(ctx, inst, node.name)
        if runtime.running:
            for disk_uuid, index in touched.items():
                ghost = Disk(uuid=disk_uuid, index=index, size=1, provider="-")
                await self._plug_out(ctx, inst, node, runtime, ghost)
        undo = UndoLog(
            step
            for step in journal.undo_log(ctx.options).steps
            if not (
                isinstance(step.payload, ProviderCall) and step.payload.volume.uuid in configured
            )
        )
        failures = await undo.run(ctx) if undo else []
        if failures:
            return Recovery(
                RecoveryAction.FAILED,
                f"disk {op.disk.action} of {inst.name} interrupted; could not undo: "
                + "; ".join(failures),
            )
        return Recovery(
            RecoveryAction.FAILED,
            f"disk {op.disk.action} of {inst.name} interrupted by a daemon restart; what it "
            "had done was undone and the configuration is unchanged",
        )
