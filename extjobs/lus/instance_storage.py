"""The disks of instances as provider steps: locate, attach, open, close, detach, undo.

Shared by the instance LUs. Every provider script run is a :class:`Step` whose payload
is a :class:`~extjobs.model.steps.ProviderCall` saying what it did to which volume, and
whose inverse (create → remove, attach → detach, open → close) is built with it
(:func:`provider_step`), so that the journal alone is enough to undo it after a crash.
Undo itself is :class:`extjobs.lus.undo.UndoLog`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from extjobs.errors import CommandTimeoutError, ExtJobsError, PrerequisiteError, ProviderError
from extjobs.extstorage.attach import (
    AttachInfo,
    block_device_check_command,
    check_block_device_result,
    parse_attach_output,
)
from extjobs.extstorage.diagnose import (
    ProviderStatus,
    diagnose_command,
    parse_diagnose_output,
    summarise_groups,
)
from extjobs.extstorage.env import Volume, build_command
from extjobs.extstorage.names import OPTIONAL_ACTIONS, Action
from extjobs.hypervisors import get_hypervisor
from extjobs.lus.base import StepContext
from extjobs.lus.undo import UndoLog
from extjobs.model.cluster import ClusterConfig, Disk, Instance, Node
from extjobs.model.config import Config
from extjobs.model.remote import DEFAULT_PATH, CommandResult, RemoteCommand
from extjobs.model.steps import ProviderCall, Step

MIB = 1024 * 1024

#: What undoes an action with a lasting effect.
INVERSE = {Action.CREATE: Action.REMOVE, Action.ATTACH: Action.DETACH, Action.OPEN: Action.CLOSE}


def metadata_for(instance_name: str) -> str:
    """Ganeti's default ``VOL_METADATA``."""
    return f"originstname+{instance_name}"


def disk_volume(instance_name: str, disk: Disk, **changes: Any) -> Volume:
    """The provider's view of ``disk`` of instance ``instance_name``."""
    return Volume(
        name=disk.volume_name,
        uuid=disk.uuid,
        size=disk.size,
        provider=disk.provider,
        params=disk.params,
        access=disk.access,
        cname=disk.name,
        metadata=metadata_for(instance_name),
        **changes,
    )


def provider_step(
    node: str,
    status: ProviderStatus,
    action: Action,
    volume: Volume,
    *,
    instance: str,
    disk: int,
    options: Config,
) -> Step:
    """The step running ``action`` of ``volume``'s provider found on ``node`` at
    ``status.path``, carrying its inverse when ``action`` has a lasting effect (none for
    an ``open`` whose provider ships no ``close``)."""
    assert status.path is not None
    command = build_command(
        status.path,
        action,
        volume,
        path_env=options.storage.path_env,
        timeout=options.storage.timeout(action.value),
    )
    inverse = None
    undo = INVERSE.get(action)
    if undo is not None and not skipped(status, undo):
        inverse = provider_step(
            node, status, undo, volume, instance=instance, disk=disk, options=options
        )
    return Step(
        node=node,
        description=f"{action.value} disk{disk} ({volume.provider})",
        command=command,
        payload=ProviderCall(
            instance=instance,
            disk=disk,
            action=action,
            provider_dir=status.path,
            volume=volume,
            optional=tuple(status.optional),
        ),
        inverse=inverse,
    )


def skipped(status: ProviderStatus, action: Action) -> bool:
    """Whether ``action`` is an optional script this provider does not ship (a no-op)."""
    return action in OPTIONAL_ACTIONS and action.value not in status.optional


async def run_provider(
    ctx: StepContext,
    node: str,
    status: ProviderStatus,
    action: Action,
    volume: Volume,
    *,
    instance: str,
    disk: int,
    undo: UndoLog | None = None,
) -> str | None:
    """Run one provider action (its inverse pushed on ``undo`` first); return its stdout
    (only the complete lines of the kept head when the output went over the cap).

    A missing optional script is logged and skipped (``None``). Raises what
    :meth:`StepContext.run` raises.
    """
    result = await run_provider_result(
        ctx, node, status, action, volume, instance=instance, disk=disk, undo=undo
    )
    return None if result is None else result.complete_stdout()


async def run_provider_result(
    ctx: StepContext,
    node: str,
    status: ProviderStatus,
    action: Action,
    volume: Volume,
    *,
    instance: str,
    disk: int,
    undo: UndoLog | None = None,
) -> CommandResult | None:
    """:func:`run_provider`, returning the whole result (``None``: no such optional
    script), for callers that need what a successful script said on stderr."""
    if skipped(status, action):
        ctx.log(f"{node}: provider {status.name} has no {action.value} script; nothing to do")
        return None
    step = provider_step(
        node, status, action, volume, instance=instance, disk=disk, options=ctx.options
    )
    if undo is not None:
        undo.note(step)
    return await ctx.run(step)


#: Characters of an earlier script's stderr quoted in a later check's error.
SAID_CHARS = 500


def with_earlier_stderr(
    exc: ExtJobsError, action: Action, said: CommandResult | None
) -> ExtJobsError:
    """``exc`` (a check that failed after ``action`` exited 0) restated to quote what
    ``action`` said on stderr — providers that exit 0 after failing say why there —
    or ``exc`` itself when it said nothing. The original stays the cause."""
    text = said.stderr.strip() if said is not None else ""
    if not text:
        return exc
    quoted = text[-SAID_CHARS:]
    twin = exc.restated(
        f"{exc.message}; {action.value} had exited 0 but said on stderr: {quoted!r}"
    )
    twin.fields[f"{action.value}_stderr_tail"] = quoted
    return twin


# -- naming disks -------------------------------------------------------------------------


def disk_list(disks: tuple[Disk, ...]) -> str:
    """``0 (data), 1`` — how an instance's disks are named in errors."""
    return ", ".join(f"{d.index}{f' ({d.name})' if d.name else ''}" for d in disks) or "none"


def find_disk(instance: Instance, ref: str | int, *, detached: bool = False) -> Disk:
    """The disk of ``instance`` that ``ref`` names: its index (digits) or its name; among
    the detached disks when ``detached``. Raises PrerequisiteError naming the known ones."""
    disks = instance.detached_disks if detached else instance.disks
    text = str(ref)
    if text.isdigit():
        for disk in disks:
            if disk.index == int(text):
                return disk
    for disk in disks:
        if disk.name == text:
            return disk
    kind = "detached disk" if detached else "disk"
    shown = text if text.isdigit() else repr(text)
    raise PrerequisiteError(
        f"instance {instance.name} has no {kind} {shown} ({kind}s: {disk_list(disks)})",
        instance=instance.name,
        field="disk",
        disk=text,
    )


# -- finding providers -------------------------------------------------------------------


def timeout_of_step(step: Step, error: ExtJobsError) -> ExtJobsError:
    """``error``, restated when it is ``step`` running over its timeout to name the step
    (``diagnose ExtStorage provider(s) … on node … timed out``) instead of the program it
    ran, which for a diagnose is ``/bin/sh``; any other error as it is."""
    if not isinstance(error, CommandTimeoutError):
        return error
    seconds = error.fields.get("timeout", step.command.timeout)
    return error.restated(
        f"{step.description} on node {step.node} timed out after {seconds:g}s and was killed"
    )


async def diagnose_on(
    ctx: StepContext, nodes: Sequence[Node], providers: Iterable[str]
) -> dict[str, Mapping[str, ProviderStatus] | BaseException]:
    """Ask every node in ``nodes`` (concurrently) about ``providers``; per node, the report
    or the error that prevented one."""
    cfg = ctx.config
    storage = ctx.options.storage
    names = sorted(set(providers))
    steps = [
        Step(
            node=node.name,
            description=f"diagnose ExtStorage provider(s) {', '.join(names)}",
            command=diagnose_command(
                cfg.search_path_for(node, storage.search_path),
                names,
                storage.timeout("diagnose"),
                path_env=storage.path_env,
            ),
        )
        for node in nodes
    ]
    answers = await ctx.run_many(steps)
    per_node: dict[str, Mapping[str, ProviderStatus] | BaseException] = {}
    for node, step, answer in zip(nodes, steps, answers, strict=True):
        if isinstance(answer, ExtJobsError):
            per_node[node.name] = timeout_of_step(step, answer)
            continue
        try:
            per_node[node.name] = parse_diagnose_output(answer.stdout, node=node.name)
        except ExtJobsError as exc:
            per_node[node.name] = exc
    return per_node


#: The nodes a group diagnose asks and its memo key, by (the configuration's node map,
#: group, providers, search path): built once per node map, not once per add (a node
#: map is replaced, never changed in place, when any node changes). A few entries.
_GROUP_KEYS: dict[
    tuple[int, str, tuple[str, ...], tuple[str, ...]], tuple[Any, list[Node], str]
] = {}


def _group_key(
    config: ClusterConfig, group: str, names: list[str], search: tuple[str, ...]
) -> tuple[list[Node], str]:
    index = (id(config.nodes), group, tuple(names), tuple(search))
    found = _GROUP_KEYS.get(index)
    if found is not None and found[0] is config.nodes:
        return found[1], found[2]
    nodes = config.online_nodes(group)
    # Who is asked, and where they look, is part of the key: a changed group is new.
    key = "diagnose|" + "|".join(
        [group, ",".join(names)]
        + [
            f"{n.name}@{n.host}:{n.port}:{':'.join(config.search_path_for(n, search))}"
            for n in nodes
        ]
    )
    if len(_GROUP_KEYS) >= 32:
        _GROUP_KEYS.clear()
    _GROUP_KEYS[index] = (config.nodes, nodes, key)
    return nodes, key


async def validate_in_group(
    ctx: StepContext, group: str, providers: Iterable[str]
) -> dict[str, dict[str, ProviderStatus]]:
    """Check ``providers`` on every online node of ``group``; return the reports per node
    (shared with other callers: read them, do not change them).

    Raises :class:`PrerequisiteError` naming each node and reason unless every provider
    is valid on every online node of the group (DESIGN §4).

    What is derived from the nodes' answers is derived once per diagnose and shared
    with it: an add that finds the diagnose done costs no pass over the group's nodes
    (docs/benchmarks.md, a thousand nodes).
    """
    names = sorted(set(providers))
    nodes, key = _group_key(ctx.config, group, names, tuple(ctx.options.storage.search_path))

    async def ask() -> tuple[tuple[Any, ...], bool]:
        per_node = await diagnose_on(ctx, nodes, names)
        summary = summarise_groups(per_node, {n.name: n.group for n in nodes}).get(group, {})
        valid = all(name in summary and summary[name].valid for name in names)
        silent = {
            node: answer.message if isinstance(answer, ExtJobsError) else str(answer)
            for node, answer in sorted(per_node.items())
            if not isinstance(answer, Mapping)
        }
        reports = {n: dict(r) for n, r in per_node.items() if isinstance(r, Mapping)}
        return (dict(summary), silent, reports), valid

    (summary, silent, reports), age = await ctx.memo(key, ctx.options.storage.diagnose_cache, ask)
    if age is not None:
        ctx.log(f"provider(s) {', '.join(names)} found valid in group {group} {age:.1f}s ago")
    problems = []
    for name in names:
        status = summary.get(name)
        if status is None and not nodes:
            problems.append(f"provider {name!r}: node group {group} has no online node")
        elif status is None:
            why = "; ".join(f"{node}: {reason}" for node, reason in silent.items())
            problems.append(f"provider {name!r}: no node of group {group} answered ({why})")
        elif not status.valid:
            why = "; ".join(f"{node}: {reason}" for node, reason in status.reasons.items())
            problems.append(f"provider {name!r} is not valid in node group {group} ({why})")
        else:
            ctx.log(f"provider {name} is valid on every online node of group {group}")
    if problems:
        raise PrerequisiteError(
            "; ".join(problems), group=group, providers=names, node_errors=dict(silent)
        )
    return dict(reports)


async def providers_on(
    ctx: StepContext, node: Node, providers: Iterable[str]
) -> dict[str, ProviderStatus]:
    """Where each provider lives on ``node``; raises PrerequisiteError when one is invalid
    there, or the node error when the node cannot be asked."""
    names = sorted(set(providers))
    answer = (await diagnose_on(ctx, [node], names))[node.name]
    if isinstance(answer, ExtJobsError):
        raise answer
    if isinstance(answer, BaseException):  # pragma: no cover - run_many returns ExtJobsErrors
        raise PrerequisiteError(str(answer), node=node.name)
    bad = [
        f"{name}: {answer[name].reason if name in answer else 'not reported'}"
        for name in names
        if name not in answer or not answer[name].valid
    ]
    if bad:
        raise PrerequisiteError(
            f"ExtStorage provider(s) not usable on node {node.name}: {'; '.join(bad)}",
            node=node.name,
        )
    return {name: answer[name] for name in names}


# -- attaching and opening ---------------------------------------------------------------


async def attach_disk(
    ctx: StepContext,
    node: str,
    status: ProviderStatus,
    volume: Volume,
    *,
    instance: str,
    disk: int,
    undo: UndoLog | None = None,
) -> AttachInfo:
    """``attach``, then check on the node that line 1 is a block device (unless empty)."""
    stdout = await run_provider(
        ctx, node, status, Action.ATTACH, volume, instance=instance, disk=disk, undo=undo
    )
    info = parse_attach_output(stdout or "", provider=volume.provider, node=node)
    if info.device is not None:
        result = await ctx.run(
            Step(
                node=node,
                description=f"check that {info.device} is a block device",
                command=block_device_check_command(
                    info.device,
                    path_env=ctx.options.storage.path_env,
                    timeout=ctx.options.storage.timeout("attach"),
                ),
                check=True,
            )
        )
        check_block_device_result(result, path=info.device, provider=volume.provider, node=node)
    else:
        ctx.log(f"{node}: disk{disk} is reachable from userspace only: {sorted(info.uris)}")
    return info


async def activate_disks(
    ctx: StepContext,
    instance: Instance,
    node: str,
    statuses: Mapping[str, ProviderStatus],
    *,
    exclusive: bool = True,
    undo: UndoLog | None = None,
) -> list[str]:
    """Attach and open every disk of ``instance`` on ``node``; the hypervisor's disk paths."""
    hv = get_hypervisor(instance.hypervisor)
    paths = []
    for disk in instance.disks:
        status = statuses[disk.provider]
        volume = disk_volume(instance.name, disk, open_exclusive=exclusive)
        info = await attach_disk(
            ctx, node, status, volume, instance=instance.name, disk=disk.index, undo=undo
        )
        await run_provider(
            ctx,
            node,
            status,
            Action.OPEN,
            volume,
            instance=instance.name,
            disk=disk.index,
            undo=undo,
        )
        paths.append(hv.disk_path(info, disk.access, node=node, provider=disk.provider))
    return paths


async def deactivate_disks(
    ctx: StepContext,
    instance: Instance,
    node: str,
    statuses: Mapping[str, ProviderStatus],
) -> None:
    """Close and detach every disk of ``instance`` on ``node``, in reverse order.

    Keeps going past failures; raises one :class:`ProviderError` listing them at the end.
    """
    failures = []
    for disk in reversed(instance.disks):
        status = statuses[disk.provider]
        volume = disk_volume(instance.name, disk)
        for action in (Action.CLOSE, Action.DETACH):
            try:
                await run_provider(
                    ctx, node, status, action, volume, instance=instance.name, disk=disk.index
                )
            except ExtJobsError as exc:
                failures.append(f"disk{disk.index}: {action.value}: {exc.message}")
    if failures:
        raise ProviderError(
            f"deactivating the disks of {instance.name} on {node} failed: {'; '.join(failures)}",
            instance=instance.name,
            node=node,
        )


def size_check_command(path: str, *, block: bool) -> RemoteCommand:
    """Prints the size in bytes of a block device (``blockdev``) or a file (``stat``)."""
    argv = ("blockdev", "--getsize64", path) if block else ("stat", "-L", "-c", "%s", path)
    return RemoteCommand(argv=argv, env={"PATH": DEFAULT_PATH, "LC_ALL": "C"}, timeout=30.0)


def storage_node(config: ClusterConfig, instance: Instance) -> Node:
    """Where to run an instance's storage actions: its primary, or (primary offline)
    another online node of the primary's group; raises PrerequisiteError if none."""
    primary = config.node(instance.primary)
    if not primary.offline:
        return primary
    for node in config.online_nodes(primary.group):
        return node
    raise PrerequisiteError(
        f"primary node {primary.name} of {instance.name} is offline and node group "
        f"{primary.group} has no online node to reach its storage from",
        instance=instance.name,
        node=primary.name,
    )
