"""Instance add and remove on external storage (disk template ``ext``).

Add (:class:`LUInstanceCreate`), after the checks against the configuration::

    diagnose the providers on every online node of the primary's group  (refuse if invalid)
    check each disk's parameters against the provider's parameters.list
    per disk: verify → create → attach (+ block device check) → open exclusive → setinfo
    start the guest on the primary (unless start=False)
    write the instance to the configuration

Nothing is written to the configuration before the last line, so a failure, a cancel
or a crash leaves it untouched; what was created on the storage is undone in reverse
(see :class:`~extjobs.lus.instance_storage.UndoLog`), from memory after a failure or
cancel and from the journal after a crash.

Remove (:class:`LUInstanceRemove`): stop the guest, then per disk close → detach →
remove. A disk whose detach or remove fails stays in the configuration, listed in the
instance's ``cleanup`` map with the reason, and the job fails saying so; running
``instance remove`` again retries just those disks.
"""

from __future__ import annotations

import uuid
from typing import Any

import attrs

from extjobs.errors import ExtJobsError, PrerequisiteError, ProviderError
from extjobs.extstorage.diagnose import ProviderStatus
from extjobs.extstorage.names import Action
from extjobs.hypervisors import get_hypervisor
from extjobs.hypervisors.base import run_dir_for
from extjobs.lus.base import LogicalUnit, Recovery, RecoveryAction, StepContext
from extjobs.lus.capacity import require_fit
from extjobs.lus.cluster import require_cluster
from extjobs.lus.instance_hv import start_guest, stop_guest
from extjobs.lus.instance_storage import (
    attach_disk,
    deactivate_disks,
    disk_volume,
    providers_on,
    run_provider,
    run_provider_result,
    storage_node,
    validate_in_group,
    with_earlier_stderr,
)
from extjobs.lus.journal import Journal
from extjobs.lus.placement import place_instance, require_memory
from extjobs.lus.pools import check_declared, new_disk, pool_provider, resolve_disk
from extjobs.lus.undo import UndoLog
from extjobs.model import codec
from extjobs.model.cluster import ClusterConfig, Disk, Instance
from extjobs.model.config import Config
from extjobs.model.jobs import LogKind
from extjobs.model.locks import LockRequest, Mode
from extjobs.model.opcodes import OpInstanceCreate, OpInstanceRemove
from extjobs.model.remote import CommandResult


def instance_state(instance: Instance) -> str:
    """``up``/``down`` (the admin state), or ``cleanup`` while a removal is incomplete."""
    if instance.cleanup:
        return "cleanup"
    return "up" if instance.admin_up else "down"


def instance_summary(instance: Instance, config: ClusterConfig) -> dict[str, Any]:
    """The API's view of an instance: its configuration plus derived fields."""
    data: dict[str, Any] = dict(codec.unstructure(instance))
    node = config.nodes.get(instance.primary)
    data["group"] = node.group if node is not None else None
    data["state"] = instance_state(instance)
    for disk, out in zip(instance.disks, data["disks"], strict=True):
        out["volume"] = disk.volume_name
        out["needs_cleanup"] = instance.cleanup.get(disk.uuid)
    for disk, out in zip(instance.detached_disks, data["detached_disks"], strict=True):
        out["volume"] = disk.volume_name
    every = {d.uuid: d for d in instance.disks + instance.detached_disks}
    for out in data["snapshots"]:
        owner = every.get(out["disk_uuid"])
        out["disk"] = None if owner is None else owner.index
        out["volume"] = None if owner is None else owner.volume_name
    return data


class LUInstanceCreate(LogicalUnit[OpInstanceCreate]):
    OPCODE = OpInstanceCreate

    def __init__(self, op: OpInstanceCreate, options: Config) -> None:
        super().__init__(op, options)
        self._undo = UndoLog()

    def locks(self, config: ClusterConfig) -> list[LockRequest]:
        wanted = [LockRequest.cluster(), LockRequest.instance(self.op.instance_name)]
        if self.op.pnode is None:
            # To be placed: any node may be chosen.
            return (
                wanted
                + [LockRequest.group(g, Mode.SHARED) for g in sorted(config.groups)]
                + [LockRequest.node(n, Mode.SHARED) for n in sorted(config.nodes)]
            )
        wanted.append(LockRequest.node(self.op.pnode, Mode.SHARED))
        node = config.nodes.get(self.op.pnode)
        if node is not None:
            wanted.append(LockRequest.group(node.group, Mode.SHARED))
        return wanted

    def check(self, config: ClusterConfig) -> None:
        op = self.op
        cluster = require_cluster(config)
        if op.instance_name in config.instances:
            raise PrerequisiteError(
                f"instance {op.instance_name!r} already exists", instance=op.instance_name
            )
        get_hypervisor(op.hypervisor).check_instance(disks=len(op.disks))
        if op.pnode is None:
            for spec in op.disks:
                if spec.pool is not None:
                    pool_provider(config, spec.pool)
            return
        node = config.node(op.pnode)
        if node.offline or node.drained:
            state = "offline" if node.offline else "drained"
            raise PrerequisiteError(
                f"node {node.name} is {state}; new instances cannot be placed there",
                node=node.name,
            )
        run_dir_for(cluster, node.name)
        for index, spec in enumerate(op.disks):
            resolve_disk(config, spec, index, node.group)

    def _disks(self, config: ClusterConfig, group: str) -> tuple[Disk, ...]:
        return tuple(
            new_disk(config, spec, index, group, uuid=str(uuid.uuid4()))
            for index, spec in enumerate(self.op.disks)
        )

    async def exec(self, ctx: StepContext) -> Any:
        op = self.op
        cfg = ctx.config
        if op.pnode is None:
            node = await place_instance(ctx, op)
            run_dir_for(require_cluster(cfg), node.name)
        else:
            node = cfg.node(op.pnode)
        disks = self._disks(cfg, node.group)
        instance = Instance(
            name=op.instance_name,
            primary=node.name,
            hypervisor=op.hypervisor,
            memory=op.memory,
            vcpus=op.vcpus,
            admin_up=op.start,
            disks=disks,
            uuid=str(uuid.uuid4()),
        )
        reports = await validate_in_group(ctx, node.group, {d.provider for d in disks})
        statuses = reports[node.name]
        for disk in disks:
            # Declared on every node of the group: the instance may move within it.
            check_declared(reports, disk.provider, disk.params)
        ctx.log(f"disk parameters accepted by {', '.join(sorted(statuses))}")
        if op.pnode is not None:  # placement checked the chosen node already
            if op.start:
                await require_memory(
                    ctx,
                    node.name,
                    instance=op.instance_name,
                    hypervisor=op.hypervisor,
                    need=op.memory,
                    force=op.force,
                )
            await require_fit(ctx, node.name, statuses, disks, force=op.force)

        paths = [
            await self._make_disk(ctx, node.name, statuses[disk.provider], instance, disk)
            for disk in disks
        ]
        started = None
        if op.start:
            started = await start_guest(ctx, instance, node.name, paths, undo=self._undo)
        else:
            # A stopped instance holds its disks nowhere (DESIGN §4): release them now.
            await deactivate_disks(ctx, instance, node.name, statuses)

        def add(config: ClusterConfig) -> ClusterConfig:
            if instance.name in config.instances:  # pragma: no cover - the lock prevents it
                raise PrerequisiteError(f"instance {instance.name!r} appeared meanwhile")
            return config.with_instance(instance)

        ctx.update_config(add)
        ctx.log(
            f"instance {instance.name} added on {node.name} with {len(disks)} disk(s)"
            + (", running" if started else ", not started")
        )
        return {
            "instance": instance.name,
            "uuid": instance.uuid,
            "primary": node.name,
            "disks": [
                {
                    "index": d.index,
                    "uuid": d.uuid,
                    "volume": d.volume_name,
                    "size": d.size,
                    "provider": d.provider,
                    "pool": d.pool,
                }
                for d in disks
            ],
            "started": bool(started),
            "pid": started.pid if started else None,
        }

    async def _make_disk(
        self, ctx: StepContext, node: str, status: ProviderStatus, instance: Instance, disk: Disk
    ) -> str:
        """verify → create → attach → open exclusive → setinfo; the hypervisor's path."""
        volume = disk_volume(instance.name, disk, open_exclusive=True)

        async def run(action: Action, undo: UndoLog | None = None) -> CommandResult | None:
            return await run_provider_result(
                ctx,
                node,
                status,
                action,
                volume,
                instance=instance.name,
                disk=disk.index,
                undo=undo,
            )

        await run(Action.VERIFY)
        created = await run(Action.CREATE, self._undo)
        # Exit status 0 does not prove the volume exists (some providers exit 0 after a
        # failed create): it is "created" once attach found it, and if attach does not,
        # the error quotes what create said on stderr.
        try:
            info = await attach_disk(
                ctx, node, status, volume, instance=instance.name, disk=disk.index, undo=self._undo
            )
        except ExtJobsError as exc:
            error = with_earlier_stderr(exc, Action.CREATE, created)
            if error is exc:
                raise
            raise error from exc
        ctx.log(
            f"disk{disk.index}: created {volume.name} ({disk.size} MiB, {disk.provider}), "
            f"attached on {node}"
        )
        await run(Action.OPEN, self._undo)
        await run(Action.SETINFO)
        hv = get_hypervisor(instance.hypervisor)
        return hv.disk_path(info, disk.access, node=node, provider=disk.provider)

    async def compensate(self, ctx: StepContext) -> None:
        await _undo(ctx, self._undo, self.op.instance_name)

    async def recover(self, ctx: StepContext, journal: Journal) -> Recovery:
        name = self.op.instance_name
        created = journal.created_volumes()
        existing = ctx.config.instances.get(name)
        if existing is not None and created <= {d.uuid for d in existing.disks}:
            return Recovery(
                RecoveryAction.DONE,
                f"instance {name} was added before the restart",
                {"instance": name, "uuid": existing.uuid},
            )
        undo = journal.undo_log(ctx.options)
        if not undo:
            return Recovery(RecoveryAction.FAILED, f"add of {name} interrupted before any step")
        try:
            await _undo(ctx, undo, name)
        except ExtJobsError as exc:
            return Recovery(RecoveryAction.FAILED, f"add of {name} interrupted; {exc.message}")
        return Recovery(
            RecoveryAction.FAILED,
            f"add of {name} interrupted by a daemon restart; what it had created was removed",
        )


async def _undo(ctx: StepContext, undo: UndoLog, name: str) -> None:
    if not undo:
        return
    ctx.log(f"undoing the partial add of {name}", kind=LogKind.UNDO)
    failures = await undo.run(ctx)
    if failures:
        raise ProviderError(
            f"could not undo everything of the add of {name}: {'; '.join(failures)}",
            instance=name,
            failures=failures,
        )
    ctx.log(f"partial add of {name} undone; the configuration was not changed", kind=LogKind.UNDO)


class LUInstanceRemove(LogicalUnit[OpInstanceRemove]):
    OPCODE = OpInstanceRemove

    def locks(self, config: ClusterConfig) -> list[LockRequest]:
        wanted = [LockRequest.cluster(), LockRequest.instance(self.op.instance_name)]
        inst = config.instances.get(self.op.instance_name)
        if inst is not None:
            wanted.append(LockRequest.node(inst.primary, Mode.SHARED))
            node = config.nodes.get(inst.primary)
            if node is not None and node.offline:
                # The storage is then reached from another node of the group.
                wanted += [
                    LockRequest.node(n.name, Mode.SHARED) for n in config.online_nodes(node.group)
                ]
        return wanted

    def check(self, config: ClusterConfig) -> None:
        inst = config.instance(self.op.instance_name)
        storage_node(config, inst)

    async def exec(self, ctx: StepContext) -> Any:
        cfg = ctx.config
        inst = cfg.instance(self.op.instance_name)
        primary = cfg.node(inst.primary)
        node = storage_node(cfg, inst)
        # Detached disks belong to the instance too: they go with it.
        every = inst.disks + inst.detached_disks
        statuses = await providers_on(ctx, node, {d.provider for d in every})
        if primary.offline:
            ctx.log(
                f"primary node {primary.name} is offline: not stopping the guest there; "
                f"removing the disks from {node.name}",
                kind=LogKind.WARNING,
            )
        else:
            await stop_guest(ctx, inst, primary.name, grace=self.op.shutdown_timeout)
        if inst.admin_up:
            ctx.update_config(
                lambda c: c.with_instance(attrs.evolve(c.instance(inst.name), admin_up=False))
            )
        failed: dict[str, str] = {}
        for disk in reversed(every):
            volume = disk_volume(inst.name, disk)
            status = statuses[disk.provider]
            try:
                await run_provider(
                    ctx,
                    node.name,
                    status,
                    Action.CLOSE,
                    volume,
                    instance=inst.name,
                    disk=disk.index,
                )
            except ExtJobsError as exc:
                ctx.log(
                    f"disk{disk.index}: close failed, removing anyway: {exc.message}",
                    kind=LogKind.WARNING,
                )
            for action in (Action.DETACH, Action.REMOVE):
                try:
                    await run_provider(
                        ctx,
                        node.name,
                        status,
                        action,
                        volume,
                        instance=inst.name,
                        disk=disk.index,
                    )
                except ExtJobsError as exc:
                    failed[disk.uuid] = f"{action.value} on {node.name} failed: {exc.message}"
                    ctx.log(
                        f"disk{disk.index} ({volume.name}) needs cleanup: {failed[disk.uuid]}",
                        kind=LogKind.ERROR,
                    )
                    break
            else:
                ctx.log(f"disk{disk.index}: removed {volume.name} ({disk.provider})")
        if not failed:
            ctx.update_config(lambda c: c.without_instance(inst.name))
            ctx.log(f"instance {inst.name} removed")
            return {"instance": inst.name, "removed_disks": len(every)}

        def keep(config: ClusterConfig) -> ClusterConfig:
            current = config.instance(inst.name)
            left = tuple(d for d in current.disks if d.uuid in failed)
            kept = tuple(d for d in current.detached_disks if d.uuid in failed)
            return config.with_instance(
                attrs.evolve(
                    current, admin_up=False, disks=left, detached_disks=kept, cleanup=dict(failed)
                )
            )

        ctx.update_config(keep)
        listed = "; ".join(
            f"disk{d.index} ({d.volume_name}): {failed[d.uuid]}" for d in every if d.uuid in failed
        )
        raise ProviderError(
            f"instance {inst.name} not fully removed: {listed}. The disk(s) stay in the "
            f"configuration as needing cleanup; run 'extjobs instance remove {inst.name}' "
            "again once the cause is fixed",
            instance=inst.name,
            cleanup=failed,
        )

    async def recover(self, ctx: StepContext, journal: Journal) -> Recovery:
        if self.op.instance_name not in ctx.config.instances:
            return Recovery(
                RecoveryAction.DONE,
                f"instance {self.op.instance_name} was removed before the restart",
                {"instance": self.op.instance_name},
            )
        return Recovery(RecoveryAction.RETRY, "removal interrupted; running it again")
