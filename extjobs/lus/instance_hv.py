"""Hypervisor steps of the instance LUs: status, start, stop.

Hypervisor commands run as steps whose payload is a
:class:`~extjobs.model.steps.HypervisorCall` (the instance, the action, the backend, the
instance's file key and the run directory); a start carries its inverse, the stop, so
that a start found in the journal can be undone.

Conversations with a running guest (a resize notice, a memory transfer) are the
backend's: the LU hands its :class:`StepContext` to a
:class:`~extjobs.hypervisors.base.Hypervisor` method as the
:class:`~extjobs.hypervisors.link.GuestLink`, which reaches the guest's control socket
through :meth:`StepContext.open_unix_stream` (SSH stream-local forwarding).
"""

from __future__ import annotations

from collections.abc import Sequence

from extjobs.hypervisors import get_hypervisor
from extjobs.hypervisors.base import RuntimeStatus, instance_key, parse_status, run_dir_for
from extjobs.lus.base import StepContext
from extjobs.lus.undo import UndoLog
from extjobs.model.cluster import Instance
from extjobs.model.remote import RemoteCommand
from extjobs.model.steps import HypervisorAction, HypervisorCall, Step

STATUS_TIMEOUT = 30.0
START_TIMEOUT = 120.0


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
