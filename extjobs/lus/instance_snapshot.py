"""Snapshots of an instance's disks through the provider's ``snapshot`` script.

::

    check: the snapshot name is new for every chosen disk
    find the providers on the primary; refuse, before anything is paused, a disk whose
        provider ships no snapshot script (Ganeti runs nothing and reports success)
    guest running with a control socket: freeze its I/O — the guest agent's fsfreeze
        when one answers, else pause the vCPUs (the job log and the result say which)
    per disk: snapshot (VOL_SNAPSHOT_NAME = the snapshot name, VOL_SNAPSHOT_SIZE = the
        disk's size in MiB)
    always thaw / resume — after a failure and a cancel too
    the configuration records one Snapshot per disk

After a crash the guest is thawed whatever froze it. When no snapshot script had started
on the node the job runs again; otherwise the disks whose snapshot step the journal shows
done are recorded, and the job fails naming any snapshot that may or may not exist on the
storage (the provider contract has no action to delete one).
"""

from __future__ import annotations

import time
from typing import Any

import anyio
import attrs

from extjobs.errors import ExtJobsError, PrerequisiteError
from extjobs.extstorage.diagnose import ProviderStatus
from extjobs.extstorage.names import Action
from extjobs.hypervisors import get_hypervisor
from extjobs.hypervisors.base import instance_key
from extjobs.lus.base import LogicalUnit, Recovery, RecoveryAction, StepContext
from extjobs.lus.instance_hv import hypervisor_status
from extjobs.lus.instance_ops import instance_locks, usable_instance
from extjobs.lus.instance_storage import disk_volume, find_disk, providers_on, run_provider
from extjobs.lus.journal import Journal
from extjobs.model.cluster import ClusterConfig, Disk, Instance, Snapshot
from extjobs.model.config import Config
from extjobs.model.jobs import LogKind
from extjobs.model.journal import StepStatus
from extjobs.model.locks import LockRequest
from extjobs.model.opcodes import OpInstanceSnapshot

#: Seconds a thaw after a failure or a cancel may take (shielded from the cancel).
THAW_GRACE = 60.0


def chosen_disks(instance: Instance, ref: str | None) -> tuple[Disk, ...]:
    return instance.disks if ref is None else (find_disk(instance, ref),)


def _record(config: ClusterConfig, name: str, snapshots: list[Snapshot]) -> ClusterConfig:
    inst = config.instance(name)
    have = {(s.name, s.disk_uuid) for s in inst.snapshots}
    new = tuple(s for s in snapshots if (s.name, s.disk_uuid) not in have)
    return config.with_instance(attrs.evolve(inst, snapshots=inst.snapshots + new))


class LUInstanceSnapshot(LogicalUnit[OpInstanceSnapshot]):
    OPCODE = OpInstanceSnapshot

    def __init__(self, op: OpInstanceSnapshot, options: Config) -> None:
        super().__init__(op, options)
        #: While the guest is frozen: (node, control socket, how).
        self._frozen: tuple[str, str, str] | None = None

    def locks(self, config: ClusterConfig) -> list[LockRequest]:
        return instance_locks(config, self.op.instance_name)

    def check(self, config: ClusterConfig) -> None:
        inst, _node = usable_instance(config, self.op.instance_name)
        disks = chosen_disks(inst, self.op.disk)
        if not disks:
            raise PrerequisiteError(f"instance {inst.name} has no disk to snapshot")
        uuids = {d.uuid for d in disks}
        taken = sorted(
            {
                f"disk{d.index}"
                for s in inst.snapshots
                for d in disks
                if s.name == self.op.snapshot_name and s.disk_uuid == d.uuid
            }
        )
        if taken and uuids:
            raise PrerequisiteError(
                f"instance {inst.name} already has a snapshot {self.op.snapshot_name!r} "
                f"of {', '.join(taken)}; choose another name",
                instance=inst.name,
                field="snapshot_name",
            )

    async def exec(self, ctx: StepContext) -> Any:
        op = self.op
        inst, node = usable_instance(ctx.config, op.instance_name)
        disks = chosen_disks(inst, op.disk)
        statuses = await providers_on(ctx, node, {d.provider for d in disks})
        self._refuse_without_script(statuses, disks, node.name)
        hv = get_hypervisor(inst.hypervisor)
        runtime = await hypervisor_status(ctx, inst, node.name)
        socket = hv.control_socket(instance_key(inst), runtime)
        how = "none"
        if socket is not None:
            how = await hv.freeze_io(ctx, node.name, socket)
            self._frozen = (node.name, socket, how)
            ctx.log(
                f"{node.name}: the guest's I/O is frozen for the snapshot ("
                + ("guest agent fsfreeze" if how == "fsfreeze" else "guest paused, no agent")
                + ")"
            )
        elif runtime.running:
            ctx.log(
                f"the {inst.hypervisor} guest of {inst.name} has no control socket: "
                "snapshotting without freezing its I/O",
                kind=LogKind.WARNING,
            )
        else:
            ctx.log(f"{inst.name} is stopped: its disks are consistent as they are")
        taken: list[Snapshot] = []
        try:
            for disk in disks:
                volume = disk_volume(
                    inst.name, disk, snapshot_name=op.snapshot_name, snapshot_size=disk.size
                )
                await run_provider(
                    ctx,
                    node.name,
                    statuses[disk.provider],
                    Action.SNAPSHOT,
                    volume,
                    instance=inst.name,
                    disk=disk.index,
                )
                taken.append(
                    Snapshot(
                        name=op.snapshot_name,
                        disk_uuid=disk.uuid,
                        size=disk.size,
                        created=time.time(),
                        frozen_by=how,
                    )
                )
                ctx.log(f"disk{disk.index}: snapshot {op.snapshot_name} taken ({disk.provider})")
        finally:
            await self._thaw(ctx)
            if taken:
                ctx.update_config(lambda c: _record(c, inst.name, taken))
        return {
            "instance": inst.name,
            "snapshot": op.snapshot_name,
            "frozen_by": how,
            "disks": [{"index": d.index, "name": d.name, "size": d.size} for d in disks],
        }

    @staticmethod
    def _refuse_without_script(
        statuses: dict[str, ProviderStatus], disks: tuple[Disk, ...], node: str
    ) -> None:
        missing = sorted(
            {
                d.provider
                for d in disks
                if Action.SNAPSHOT.value not in statuses[d.provider].optional
            }
        )
        if missing:
            which = ", ".join(
                f"disk{d.index} ({d.provider})" for d in disks if d.provider in missing
            )
            raise PrerequisiteError(
                f"provider(s) {', '.join(missing)} on node {node} have no snapshot script: "
                f"cannot snapshot {which}; nothing was paused or changed",
                node=node,
                providers=missing,
            )

    async def _thaw(self, ctx: StepContext) -> None:
        """Thaw or resume the guest if this job froze it; runs even when cancelled."""
        if self._frozen is None:
            return
        node, socket, how = self._frozen
        inst = ctx.config.instance(self.op.instance_name)
        with anyio.CancelScope(shield=True), anyio.move_on_after(THAW_GRACE):
            await get_hypervisor(inst.hypervisor).thaw_io(ctx, node, socket, how)
            self._frozen = None
            ctx.log(
                f"{node}: the guest runs again ("
                + ("file systems thawed" if how == "fsfreeze" else "resumed")
                + ")"
            )

    async def compensate(self, ctx: StepContext) -> None:
        await self._thaw(ctx)

    async def recover(self, ctx: StepContext, journal: Journal) -> Recovery:
        op = self.op
        inst = ctx.config.instances.get(op.instance_name)
        if inst is None:
            return Recovery(RecoveryAction.FAILED, f"instance {op.instance_name} is gone")
        node = ctx.config.node(inst.primary)
        hv = get_hypervisor(inst.hypervisor)
        runtime = await hypervisor_status(ctx, inst, node.name)
        socket = hv.control_socket(instance_key(inst), runtime)
        if socket is not None:
            try:
                await hv.thaw_io(ctx, node.name, socket, None)
                ctx.log(f"{node.name}: the guest of {inst.name} runs (thawed if it was frozen)")
            except ExtJobsError as exc:
                ctx.log(f"could not thaw the guest: {exc.message}", kind=LogKind.WARNING)
        done, unsure = [], []
        for record, call in journal.provider_calls(Action.SNAPSHOT):
            disk = next((d for d in inst.disks if d.uuid == call.volume.uuid), None)
            if disk is None:
                continue
            if record.status is StepStatus.DONE:
                done.append(
                    Snapshot(
                        name=op.snapshot_name,
                        disk_uuid=disk.uuid,
                        size=disk.size,
                        created=time.time(),
                        frozen_by="unknown",
                    )
                )
            elif record.status is StepStatus.FAILED or record.pgid is None:
                continue  # the script said it failed, or it never started on the node
            else:
                unsure.append(f"disk{disk.index}")
        if not done and not unsure:
            return Recovery(
                RecoveryAction.RETRY, "snapshot interrupted before any snapshot ran; again"
            )
        if done:
            ctx.update_config(lambda c: _record(c, inst.name, done))
        wanted = len(chosen_disks(inst, op.disk)) if inst.disks else 0
        if len(done) == wanted and not unsure:
            return Recovery(
                RecoveryAction.DONE,
                f"snapshot {op.snapshot_name} was taken before the restart",
                {"instance": inst.name, "snapshot": op.snapshot_name},
            )
        maybe = (
            f"; the snapshot of {', '.join(unsure)} may or may not exist on the storage"
            if unsure
            else ""
        )
        return Recovery(
            RecoveryAction.FAILED,
            f"snapshot {op.snapshot_name} of {inst.name} interrupted by a daemon restart; "
            f"{len(done)} disk(s) recorded{maybe}",
        )
