"""Hypervisor steps of the instance LUs: status, start, stop, and QMP over the node link.

Hypervisor commands run as steps whose payload is a
:class:`~extjobs.model.steps.HypervisorCall` (the instance, the action, the backend, the
instance's file key and the run directory); a start carries its inverse, the stop, so
that a start found in the journal can be undone.

QMP: :func:`open_qmp` opens the guest's QMP socket on the node through
:meth:`StepContext.open_unix_stream` (SSH stream-local forwarding), reads the
greeting and leaves negotiation mode; :meth:`QmpSession.execute` then runs commands
one by one, skipping events. :func:`qmp_execute` runs a fixed list in one session.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from typing import Any

from extjobs.errors import HypervisorError
from extjobs.hypervisors import get_hypervisor
from extjobs.hypervisors.base import RuntimeStatus, instance_key, parse_status, run_dir_for
from extjobs.hypervisors.qmp import (
    MessageSplitter,
    check_greeting,
    encode_command,
    is_event,
    reply_value,
)
from extjobs.lus.base import NodeStream, StepContext
from extjobs.lus.undo import UndoLog
from extjobs.model.cluster import Instance
from extjobs.model.jobs import LogKind
from extjobs.model.remote import RemoteCommand
from extjobs.model.steps import HypervisorAction, HypervisorCall, Step

STATUS_TIMEOUT = 30.0
START_TIMEOUT = 120.0
QMP_TIMEOUT = 30.0


#: Grace a guest started by an undone step gets before it is killed.
UNDO_GRACE = 10.0


def _call(
    instance: str, action: HypervisorAction, hypervisor: str, key: str, run_dir: str
) -> HypervisorCall:
    return HypervisorCall(
        instance=instance, action=action, hypervisor=hypervisor, key=key, run_dir=run_dir
    )


def hypervisor_stop_step(
    node: str, instance: str, hypervisor: str, key: str, run_dir: str, *, grace: float
) -> Step:
    hv = get_hypervisor(hypervisor)
    return Step(
        node=node,
        description=f"stop {hypervisor} guest of {instance}",
        command=hv.stop_command(key, run_dir, grace=grace, timeout=STATUS_TIMEOUT),
        payload=_call(instance, HypervisorAction.STOP, hypervisor, key, run_dir),
    )


def status_step(instance: Instance, node: str, run_dir: str) -> Step:
    """The step asking ``node`` whether ``instance``'s guest runs there."""
    hv = get_hypervisor(instance.hypervisor)
    key = instance_key(instance)
    return Step(
        node=node,
        description=f"status of {instance.hypervisor} guest of {instance.name}",
        command=hv.status_command(key, run_dir, timeout=STATUS_TIMEOUT),
        payload=_call(instance.name, HypervisorAction.STATUS, instance.hypervisor, key, run_dir),
    )


async def hypervisor_status(ctx: StepContext, instance: Instance, node: str) -> RuntimeStatus:
    """Whether ``instance``'s guest runs on ``node``."""
    step = status_step(instance, node, run_dir_for(ctx.config.cluster, node))
    result = await ctx.run(step)
    return parse_status(result.stdout, node=node)


def _starting(
    instance: Instance, node: str, run_dir: str, description: str, command: RemoteCommand
) -> Step:
    """A step starting ``instance``'s guest, with its inverse (a stop)."""
    key = instance_key(instance)
    return Step(
        node=node,
        description=description,
        command=command,
        payload=_call(instance.name, HypervisorAction.START, instance.hypervisor, key, run_dir),
        inverse=hypervisor_stop_step(
            node, instance.name, instance.hypervisor, key, run_dir, grace=UNDO_GRACE
        ),
    )


def start_step(instance: Instance, node: str, disk_paths: Sequence[str], run_dir: str) -> Step:
    hv = get_hypervisor(instance.hypervisor)
    return _starting(
        instance,
        node,
        run_dir,
        f"start {instance.hypervisor} guest of {instance.name}",
        hv.start_command(instance, disk_paths, run_dir, timeout=START_TIMEOUT),
    )


def incoming_step(instance: Instance, node: str, disk_paths: Sequence[str], run_dir: str) -> Step:
    """Start the receiving side of a migration of ``instance`` on ``node``; journalled as
    a ``start`` so that an interrupted migration's target can be stopped again."""
    hv = get_hypervisor(instance.hypervisor)
    return _starting(
        instance,
        node,
        run_dir,
        f"start {instance.hypervisor} guest of {instance.name} for an incoming migration",
        hv.incoming_command(instance, disk_paths, run_dir, timeout=START_TIMEOUT),
    )


async def start_guest(
    ctx: StepContext,
    instance: Instance,
    node: str,
    disk_paths: Sequence[str],
    *,
    undo: UndoLog | None = None,
) -> RuntimeStatus:
    """Start the guest (a no-op if it runs); its stop is pushed on ``undo`` first."""
    step = start_step(instance, node, disk_paths, run_dir_for(ctx.config.cluster, node))
    if undo is not None:
        undo.note(step)
    result = await ctx.run(step)
    status = parse_status(result.stdout, node=node)
    ctx.log(f"{node}: {instance.hypervisor} guest of {instance.name} runs as pid {status.pid}")
    return status


async def stop_guest(ctx: StepContext, instance: Instance, node: str, *, grace: float) -> None:
    """Stop the guest (SIGTERM, SIGKILL after ``grace`` s); stopping a stopped one succeeds."""
    step = hypervisor_stop_step(
        node,
        instance.name,
        instance.hypervisor,
        instance_key(instance),
        run_dir_for(ctx.config.cluster, node),
        grace=grace,
    )
    await ctx.run(step)


class QmpSession:
    """A QMP session in command mode on one guest's socket (see :func:`open_qmp`)."""

    def __init__(self, ctx: StepContext, node: str, stream: NodeStream, where: str) -> None:
        self._ctx = ctx
        self._node = node
        self._stream = stream
        self._where = where
        self._splitter = MessageSplitter(where=where)
        self._pending: list[dict[str, Any]] = []
        self._number = 0

    async def _next_message(self) -> dict[str, Any]:
        while not self._pending:
            data = await self._stream.receive()
            if not data:
                raise HypervisorError(
                    f"QMP on {self._where} closed the connection", node=self._node
                )
            self._pending.extend(self._splitter.feed(data))
        return self._pending.pop(0)

    async def _start(self) -> dict[str, Any]:
        version = check_greeting(await self._next_message(), where=self._where)
        await self.execute("qmp_capabilities", quiet=True)
        return version

    async def execute(
        self, execute: str, arguments: dict[str, Any] | None = None, *, quiet: bool = False
    ) -> Any:
        """Run one command; its ``return`` value. Events met meanwhile are skipped.

        Raises :class:`HypervisorError` for an error reply or a broken session.
        """
        self._number += 1
        command_id = f"extjobs-{self._number}"
        await self._stream.send(encode_command(execute, arguments, id=command_id))
        while is_event(message := await self._next_message()):
            pass
        value = reply_value(message, execute, id=command_id, where=self._where)
        if not quiet:
            shown = f" {arguments}" if arguments else ""
            self._ctx.log(f"{self._node}: QMP {execute}{shown}: ok", kind=LogKind.QMP)
        return value


@contextlib.asynccontextmanager
async def open_qmp(
    ctx: StepContext,
    node: str,
    socket: str,
    *,
    description: str,
    timeout: float = QMP_TIMEOUT,
) -> AsyncIterator[QmpSession]:
    """A QMP session on the guest whose socket is ``socket`` on ``node``, past the
    greeting and out of negotiation mode; each receive is bounded by ``timeout``."""
    where = f"{node}:{socket}"
    async with ctx.open_unix_stream(
        node, socket, timeout=timeout, description=description
    ) as stream:
        session = QmpSession(ctx, node, stream, where)
        version = await session._start()
        qemu = version.get("qemu", {})
        if isinstance(qemu, dict) and qemu:
            ctx.log(f"{node}: QMP served by qemu {qemu.get('major')}.{qemu.get('minor')}")
        yield session


async def qmp_execute(
    ctx: StepContext,
    node: str,
    socket: str,
    commands: Sequence[tuple[str, dict[str, Any]]],
    *,
    timeout: float = QMP_TIMEOUT,
) -> list[Any]:
    """Run QMP ``commands`` on the guest whose socket is ``socket`` on ``node``.

    Returns each command's ``return`` value. Raises :class:`HypervisorError` for an
    error reply or a broken session, and the node layer's errors for the connection.
    """
    names = ", ".join(execute for execute, _ in commands)
    async with open_qmp(ctx, node, socket, timeout=timeout, description=f"QMP {names}") as session:
        return [await session.execute(execute, arguments) for execute, arguments in commands]
