"""Instance verbs around a running guest: reboot, activate and deactivate the disks.

Reboot, on the primary P::

    P: status                          the guest must run (else: use startup)
    soft (unless ``hard``): the backend asks the guest to power down (kvm: QMP
         system_powerdown, an ACPI power-button press); P: status until it stopped,
         at most ``timeout`` seconds
    hard (the guest still runs, or the backend cannot ask): P: stop the guest
    P: attach, open exclusive (every disk; idempotent, they are still attached)
    P: start the guest

The disks stay attached on P throughout. A failure, a cancel or a daemon crash after
the guest stopped starts it again (``compensate``, ``recover``): an instance marked up
is never left down by a reboot.

Activate-disks attaches and opens the disks on the primary without starting the guest
and returns their device paths (repairs on the node: fsck, a copy); its inverses are
journalled, so a failure or cancel detaches what it attached. Deactivate-disks closes
and detaches them, refused while the guest runs. Both are idempotent: after a crash
they run again.
"""

from __future__ import annotations

import time
from typing import Any

import attrs

from extjobs.errors import ExtJobsError, PrerequisiteError, ProviderError
from extjobs.hypervisors import get_hypervisor
from extjobs.hypervisors.base import RuntimeStatus, instance_key
from extjobs.lus.base import LogicalUnit, Recovery, RecoveryAction, StepContext
from extjobs.lus.instance_hv import hypervisor_status, start_guest, stop_guest
from extjobs.lus.instance_ops import instance_locks, usable_instance
from extjobs.lus.instance_storage import activate_disks, deactivate_disks, providers_on
from extjobs.lus.journal import Journal
from extjobs.lus.undo import UndoLog
from extjobs.model.cluster import ClusterConfig, Instance, Node
from extjobs.model.config import Config
from extjobs.model.jobs import LogKind
from extjobs.model.locks import LockRequest
from extjobs.model.opcodes import (
    OpInstanceActivateDisks,
    OpInstanceDeactivateDisks,
    OpInstanceReboot,
)

#: Between two status checks while a guest powers down.
POWERDOWN_POLL = 1.0
#: Grace of the hard stop (SIGTERM, then SIGKILL).
HARD_GRACE = 10.0


async def _start_again(ctx: StepContext, inst: Instance, node: Node) -> int | None:
    """Attach and open the disks (idempotent) and start the guest; its pid."""
    statuses = await providers_on(ctx, node, {d.provider for d in inst.disks})
    paths = await activate_disks(ctx, inst, node.name, statuses, exclusive=True)
    return (await start_guest(ctx, inst, node.name, paths)).pid


class LUInstanceReboot(LogicalUnit[OpInstanceReboot]):
    OPCODE = OpInstanceReboot

    def __init__(self, op: OpInstanceReboot, options: Config) -> None:
        super().__init__(op, options)
        #: Set once the guest may be down: compensation starts it again.
        self._stopped: tuple[Instance, Node] | None = None

    def locks(self, config: ClusterConfig) -> list[LockRequest]:
        return instance_locks(config, self.op.instance_name)

    def check(self, config: ClusterConfig) -> None:
        inst, _node = usable_instance(config, self.op.instance_name)
        if not inst.admin_up:
            raise PrerequisiteError(
                f"instance {inst.name} is marked down; start it with "
                f"'extjobs instance startup {inst.name}'",
                instance=inst.name,
            )

    async def exec(self, ctx: StepContext) -> Any:
        op = self.op
        inst, node = usable_instance(ctx.config, op.instance_name)
        status = await hypervisor_status(ctx, inst, node.name)
        if not status.running:
            raise PrerequisiteError(
                f"{inst.name} does not run on {node.name}, so it cannot reboot; start it "
                f"with 'extjobs instance startup {inst.name}'",
                instance=inst.name,
                node=node.name,
            )
        old_pid = status.pid
        method = "hard"
        self._stopped = (inst, node)
        if not op.hard:
            method = await self._soft(ctx, inst, node, status)
        if method == "hard":
            await stop_guest(ctx, inst, node.name, grace=HARD_GRACE)
            ctx.log(f"{node.name}: the guest of {inst.name} was stopped hard")
        pid = await _start_again(ctx, inst, node)
        self._stopped = None
        ctx.log(f"{inst.name} rebooted on {node.name} ({method}): pid {old_pid} → {pid}")
        return {"instance": inst.name, "node": node.name, "method": method, "pid": pid}

    async def _soft(
        self, ctx: StepContext, inst: Instance, node: Node, status: RuntimeStatus
    ) -> str:
        """Ask the guest (running as ``status`` says) to power down and wait for it;
        ``soft`` when it stopped, else ``hard`` (what must happen next), saying why in
        the job log."""
        hv = get_hypervisor(inst.hypervisor)
        socket = hv.control_socket(instance_key(inst), status)
        asked = False
        if socket is not None:
            try:
                asked = await hv.powerdown(ctx, node.name, socket)
            except ExtJobsError as exc:
                ctx.log(
                    f"asking the guest to power down failed: {exc.message}", kind=LogKind.WARNING
                )
        if not asked:
            ctx.log(f"the {inst.hypervisor} guest cannot be asked to power down: hard reboot")
            return "hard"
        ctx.log(f"{node.name}: asked the guest of {inst.name} to power down (ACPI)")
        deadline = time.monotonic() + self.op.timeout
        while time.monotonic() < deadline:
            await ctx.sleep(POWERDOWN_POLL)
            if not (await hypervisor_status(ctx, inst, node.name)).running:
                ctx.log(f"{node.name}: the guest of {inst.name} powered down")
                return "soft"
        ctx.log(
            f"the guest of {inst.name} did not power down within {self.op.timeout:g} s; "
            "stopping it hard",
            kind=LogKind.WARNING,
        )
        return "hard"

    async def compensate(self, ctx: StepContext) -> None:
        if self._stopped is None:
            return
        inst, node = self._stopped
        self._stopped = None
        ctx.log(f"the reboot of {inst.name} was interrupted; starting it", kind=LogKind.UNDO)
        pid = await _start_again(ctx, inst, node)
        ctx.log(f"{inst.name} runs on {node.name} (pid {pid})", kind=LogKind.UNDO)

    async def recover(self, ctx: StepContext, journal: Journal) -> Recovery:
        name = self.op.instance_name
        try:
            inst, node = usable_instance(ctx.config, name)
            pid = await _start_again(ctx, inst, node)
        except ExtJobsError as exc:
            return Recovery(
                RecoveryAction.FAILED,
                f"reboot of {name} interrupted by a daemon restart; starting it failed: "
                f"{exc.message}",
            )
        return Recovery(
            RecoveryAction.DONE,
            f"reboot of {name} interrupted by a daemon restart; {name} runs on {node.name} "
            f"(pid {pid})",
            {"instance": name, "node": node.name, "method": "interrupted", "pid": pid},
        )


class LUInstanceActivateDisks(LogicalUnit[OpInstanceActivateDisks]):
    OPCODE = OpInstanceActivateDisks

    def __init__(self, op: OpInstanceActivateDisks, options: Config) -> None:
        super().__init__(op, options)
        self._undo = UndoLog()

    def locks(self, config: ClusterConfig) -> list[LockRequest]:
        return instance_locks(config, self.op.instance_name)

    def check(self, config: ClusterConfig) -> None:
        usable_instance(config, self.op.instance_name)

    async def exec(self, ctx: StepContext) -> Any:
        inst, node = usable_instance(ctx.config, self.op.instance_name)
        statuses = await providers_on(ctx, node, {d.provider for d in inst.disks})
        paths = await activate_disks(
            ctx, inst, node.name, statuses, exclusive=True, undo=self._undo
        )
        disks = [
            {"index": d.index, "name": d.name, "path": path}
            for d, path in zip(inst.disks, paths, strict=True)
        ]
        ctx.update_config(
            lambda c: c.with_instance(attrs.evolve(c.instance(inst.name), disks_active=True))
        )
        ctx.log(
            f"{node.name}: disks of {inst.name} attached and open: "
            + ", ".join(f"disk{d['index']} {d['path']}" for d in disks)
        )
        return {"instance": inst.name, "node": node.name, "disks": disks}

    async def compensate(self, ctx: StepContext) -> None:
        if self._undo:
            ctx.log(f"undoing the partial activation of {self.op.instance_name}", kind=LogKind.UNDO)
            failures = await self._undo.run(ctx)
            if failures:
                raise ProviderError("activation not fully undone: " + "; ".join(failures))


class LUInstanceDeactivateDisks(LogicalUnit[OpInstanceDeactivateDisks]):
    OPCODE = OpInstanceDeactivateDisks

    def locks(self, config: ClusterConfig) -> list[LockRequest]:
        return instance_locks(config, self.op.instance_name)

    def check(self, config: ClusterConfig) -> None:
        usable_instance(config, self.op.instance_name)

    async def exec(self, ctx: StepContext) -> Any:
        inst, node = usable_instance(ctx.config, self.op.instance_name)
        status = await hypervisor_status(ctx, inst, node.name)
        if status.running:
            raise PrerequisiteError(
                f"the guest of {inst.name} runs on {node.name} (pid {status.pid}) and uses "
                f"its disks; shut it down first ('extjobs instance shutdown {inst.name}')",
                instance=inst.name,
                node=node.name,
            )
        statuses = await providers_on(ctx, node, {d.provider for d in inst.disks})
        await deactivate_disks(ctx, inst, node.name, statuses)
        ctx.update_config(
            lambda c: c.with_instance(attrs.evolve(c.instance(inst.name), disks_active=False))
        )
        ctx.log(f"{node.name}: disks of {inst.name} closed and detached")
        return {"instance": inst.name, "node": node.name}
