"""Hypervisor steps of the instance LUs: status, start, stop.

Hypervisor commands run as steps of kind ``hypervisor`` whose ``data`` holds the
instance, the action, the backend, the instance's file key and the run directory, so
that a start found in the journal can be undone (see
:func:`extjobs.lus.instance_storage.undo_for`).

Conversations with a running guest (a resize notice, a memory transfer) are the
backend's: the LU hands its :class:`StepContext` to a
:class:`~extjobs.hypervisors.base.Hypervisor` method as the
:class:`~extjobs.hypervisors.link.GuestLink`, which reaches the guest's control socket
through :meth:`StepContext.open_unix_stream` (SSH stream-local forwarding).
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any

from extjobs.hypervisors import get_hypervisor
from extjobs.hypervisors.base import RuntimeStatus, instance_key, parse_status, run_dir_for
from extjobs.hypervisors.qmp import QMP_TIMEOUT, QmpSession, open_session
from extjobs.lus.base import StepContext
from extjobs.model.cluster import Instance
from extjobs.model.steps import Step

if TYPE_CHECKING:
    from extjobs.lus.instance_storage import UndoLog

STATUS_TIMEOUT = 30.0
START_TIMEOUT = 120.0


def _data(instance: str, action: str, hypervisor: str, key: str, run_dir: str) -> dict[str, Any]:
    return {
        "instance": instance,
        "action": action,
        "hypervisor": hypervisor,
        "key": key,
        "run_dir": run_dir,
    }


def hypervisor_stop_step(
    node: str, instance: str, hypervisor: str, key: str, run_dir: str, *, grace: float
) -> Step:
    hv = get_hypervisor(hypervisor)
    return Step(
        node=node,
        kind="hypervisor",
        description=f"stop {hypervisor} guest of {instance}",
        command=hv.stop_command(key, run_dir, grace=grace, timeout=STATUS_TIMEOUT),
        data=_data(instance, "stop", hypervisor, key, run_dir),
    )


def status_step(instance: Instance, node: str, run_dir: str) -> Step:
    """The step asking ``node`` whether ``instance``'s guest runs there."""
    hv = get_hypervisor(instance.hypervisor)
    key = instance_key(instance)
    return Step(
        node=node,
        kind="hypervisor",
        description=f"status of {instance.hypervisor} guest of {instance.name}",
        command=hv.status_command(key, run_dir, timeout=STATUS_TIMEOUT),
        data=_data(instance.name, "status", instance.hypervisor, key, run_dir),
    )


async def hypervisor_status(ctx: StepContext, instance: Instance, node: str) -> RuntimeStatus:
    """Whether ``instance``'s guest runs on ``node``."""
    step = status_step(instance, node, run_dir_for(ctx.config.cluster, node))
    result = await ctx.run(step)
    return parse_status(result.stdout, node=node)


def start_step(instance: Instance, node: str, disk_paths: Sequence[str], run_dir: str) -> Step:
    hv = get_hypervisor(instance.hypervisor)
    return Step(
        node=node,
        kind="hypervisor",
        description=f"start {instance.hypervisor} guest of {instance.name}",
        command=hv.start_command(instance, disk_paths, run_dir, timeout=START_TIMEOUT),
        data=_data(instance.name, "start", instance.hypervisor, instance_key(instance), run_dir),
    )


def incoming_step(instance: Instance, node: str, disk_paths: Sequence[str], run_dir: str) -> Step:
    """Start the receiving side of a migration of ``instance`` on ``node``; journalled as
    a ``start`` so that an interrupted migration's target can be stopped again."""
    hv = get_hypervisor(instance.hypervisor)
    return Step(
        node=node,
        kind="hypervisor",
        description=f"start {instance.hypervisor} guest of {instance.name} for an incoming migration",
        command=hv.incoming_command(instance, disk_paths, run_dir, timeout=START_TIMEOUT),
        data=_data(instance.name, "start", instance.hypervisor, instance_key(instance), run_dir),
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
        undo.note(step, ctx.options)
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


def open_qmp(
    ctx: StepContext,
    node: str,
    socket: str,
    *,
    description: str,
    timeout: float = QMP_TIMEOUT,
) -> AbstractAsyncContextManager[QmpSession]:
    """A QMP session on the guest whose socket is ``socket`` on ``node``
    (:func:`extjobs.hypervisors.qmp.open_session` over this step context).

    For code not yet behind the :class:`~extjobs.hypervisors.base.Hypervisor`
    interface (``Hypervisor.guest_state`` and ``resume`` offer what it asks).
    """
    return open_session(ctx, node, socket, description=description, timeout=timeout)
