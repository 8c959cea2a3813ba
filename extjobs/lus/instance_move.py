"""What migrate and failover share: the target, the journal tag, fencing, and settling.

- :func:`pick_target` — the node an instance moves to: the one given, or the online,
  not drained node of the primary's group (or of the group named, for change-group)
  where every provider of the instance is valid, that has the memory for a running
  instance (:func:`~extjobs.lus.placement.target_memory`) and that is primary of the
  fewest instances (ties: by name). The job log says which node and why the others
  were passed over. A given node without the memory is refused unless ``force``.
- the move tag — every step of a move is journalled with a
  :class:`~extjobs.model.steps.MoveTag` (``ctx.tagged(...)``), so that recovery after a
  crash knows both ends of an interrupted move.
- :func:`fence` — run a node's fence command on the master; it must succeed before
  another node attaches disks the fenced node may still hold.
- :func:`settle` — make one node the only one running the guest and holding its disks:
  ask every candidate node where the guest runs (the hypervisor tells the active guest
  from a migration's leftovers and cancels a migration still under way), keep the
  active guest (the preferred node wins a tie), stop the others, close and detach the
  disks on every other node **before** opening them exclusively where the guest runs,
  and point the configuration at that node. Failed and interrupted migrations and
  ``migrate --cleanup`` all end here; every step is idempotent, so settling twice is
  settling once.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence

import attrs

from extjobs.errors import ExtJobsError, HypervisorError, NodeError, PrerequisiteError
from extjobs.extstorage.diagnose import ProviderStatus
from extjobs.hypervisors import get_hypervisor
from extjobs.hypervisors.base import instance_key
from extjobs.lus.base import StepContext
from extjobs.lus.instance_hv import hypervisor_status, stop_guest
from extjobs.lus.instance_storage import activate_disks, deactivate_disks, diagnose_on
from extjobs.lus.placement import target_memory
from extjobs.model.cluster import ClusterConfig, Instance, Node
from extjobs.model.jobs import LogKind
from extjobs.model.locks import LockRequest, Mode
from extjobs.model.steps import FenceRun

#: How long a fence command may take on the master.
FENCE_TIMEOUT = 120.0
#: Grace given to a guest process that is stopped because it is not the guest.
LEFTOVER_GRACE = 10.0

Reports = Mapping[str, Mapping[str, ProviderStatus] | BaseException]


def move_locks(config: ClusterConfig, name: str, target: str | None) -> list[LockRequest]:
    """The instance exclusively; the cluster, its primary's group and the nodes it may
    move between shared (every node of the group unless the target is known)."""
    wanted = [LockRequest.cluster(), LockRequest.instance(name)]
    inst = config.instances.get(name)
    primary = config.nodes.get(inst.primary) if inst is not None else None
    if inst is None or primary is None:
        return wanted
    wanted.append(LockRequest.group(primary.group, Mode.SHARED))
    names = (
        {primary.name, target}
        if target is not None
        else {n.name for n in config.nodes.values() if n.group == primary.group}
    )
    return wanted + [LockRequest.node(n, Mode.SHARED) for n in sorted(names)]


def movable_instance(
    config: ClusterConfig, name: str, *, release_active: bool = False
) -> tuple[Instance, Node]:
    """The instance and its primary; refuses an instance whose removal is incomplete,
    and a stopped one whose disks were activated on its primary for a repair (moving it
    would pull them from under the repair) unless ``release_active`` (a failover that
    ignores the consistency of a lost primary)."""
    inst = config.instance(name)
    if inst.cleanup:
        raise PrerequisiteError(
            f"instance {name} is being removed ({len(inst.cleanup)} disk(s) need cleanup); "
            f"finish with 'extjobs instance remove {name}'",
            instance=name,
        )
    if inst.disks_active and not inst.admin_up and not release_active:
        raise PrerequisiteError(
            f"the disks of {name} are activated on {inst.primary} (activate-disks); "
            f"deactivate them first ('extjobs instance deactivate-disks {name}')",
            instance=name,
        )
    return inst, config.node(inst.primary)


def target_problem(
    config: ClusterConfig, source: Node, node: Node, group: str | None = None
) -> str | None:
    """Why ``node`` cannot receive an instance whose primary is ``source`` (or None);
    the target must be in ``group`` (default: the source's)."""
    group = group or source.group
    if node.name == source.name:
        return "it is the instance's primary"
    if node.offline:
        return "it is offline"
    if node.drained:
        return "it is drained"
    if node.group != group:
        return f"it is in node group {node.group}, not {group}"
    return None


def check_target(config: ClusterConfig, source: Node, name: str, group: str | None = None) -> Node:
    """The node called ``name`` if it can receive an instance from ``source`` (into
    ``group``, default the source's)."""
    node = config.node(name)
    problem = target_problem(config, source, node, group)
    if problem is not None:
        raise PrerequisiteError(
            f"node {name} cannot receive the instance: {problem}", node=name, field="target_node"
        )
    return node


def provider_statuses(
    reports: Reports, node: str, providers: Sequence[str]
) -> dict[str, ProviderStatus]:
    """The valid providers on ``node`` from a diagnose report; raises the node's error,
    or PrerequisiteError naming each provider that is not usable there."""
    report = reports.get(node)
    if isinstance(report, ExtJobsError):
        raise report
    if not isinstance(report, Mapping):
        raise NodeError(f"node {node} was not asked about its providers", node=node)
    bad = [
        f"{p}: {report[p].reason if p in report else 'not reported'}"
        for p in providers
        if p not in report or not report[p].valid
    ]
    if bad:
        raise PrerequisiteError(
            f"ExtStorage provider(s) not usable on node {node}: {'; '.join(bad)}", node=node
        )
    return {p: report[p] for p in providers}


def _why_not(reports: Reports, node: str, providers: Sequence[str]) -> str | None:
    try:
        provider_statuses(reports, node, providers)
    except ExtJobsError as exc:
        return exc.message
    return None


async def pick_target(
    ctx: StepContext,
    inst: Instance,
    source: Node,
    requested: str | None,
    *,
    also: Sequence[Node] = (),
    force: bool = False,
    group: str | None = None,
    planned: Mapping[str, Sequence[Instance]] | None = None,
) -> tuple[Node, dict[str, Mapping[str, ProviderStatus] | BaseException]]:
    """The target node and the provider reports of every node asked (candidates and
    ``also``, concurrently). ``group``: where the target must be (default: the
    source's group). Raises PrerequisiteError when no node qualifies, or when the
    requested one lacks the memory for a running instance and not ``force``.

    ``planned``: the instances already planned to move to each node (``node migrate``
    spreads a node's instances), counted there as if they had arrived: in the number of
    instances and, for those marked up, in the memory held."""
    cfg = ctx.config
    group = group or source.group
    providers = sorted({d.provider for d in inst.disks})
    group_nodes = sorted(
        (n for n in cfg.nodes.values() if n.group == group and n.name != source.name),
        key=lambda n: n.name,
    )
    passed_over = {
        n.name: problem
        for n in group_nodes
        if (problem := target_problem(cfg, source, n, group)) is not None
    }
    if requested is not None:
        candidates = [check_target(cfg, source, requested, group)]
    else:
        candidates = [n for n in group_nodes if n.name not in passed_over]
    extra = [n for n in also if n.name not in {c.name for c in candidates}]
    reports = await diagnose_on(ctx, [*candidates, *extra], providers)
    for node in candidates:
        problem = _why_not(reports, node.name, providers)
        if problem is not None:
            passed_over[node.name] = problem
    if inst.admin_up:
        passed_over.update(
            await target_memory(
                ctx,
                [n for n in candidates if n.name not in passed_over],
                instance=inst.name,
                hypervisor=inst.hypervisor,
                need=inst.memory,
                pinned=requested is not None,
                force=force,
                reserved={
                    node: sum(i.memory for i in coming if i.admin_up)
                    for node, coming in (planned or {}).items()
                },
            )
        )
    usable = [n for n in candidates if n.name not in passed_over]
    if not usable:
        why = "; ".join(f"{n}: {p}" for n, p in sorted(passed_over.items())) or "no other node"
        raise PrerequisiteError(
            f"no node of group {group} can receive {inst.name} ({why})",
            instance=inst.name,
            group=group,
        )
    counts = {n.name: 0 for n in usable}
    for other in cfg.instances.values():
        if other.primary in counts:
            counts[other.primary] += 1
    for planned_node, coming in (planned or {}).items():
        if planned_node in counts:
            counts[planned_node] += len(coming)
    chosen = min(usable, key=lambda n: (counts[n.name], n.name))
    valid = f"provider(s) {', '.join(providers)} valid there"
    if inst.admin_up and not force:
        valid += f", room for its {inst.memory} MiB of memory"
    if requested is not None:
        ctx.log(f"target node {chosen.name} (given): online, not drained, {valid}")
    else:
        others = [f"{n}: primary of {c} instance(s)" for n, c in counts.items() if n != chosen.name]
        others += [f"{n}: {p}" for n, p in sorted(passed_over.items())]
        ctx.log(
            f"target node {chosen.name} chosen: online, not drained, in group {group}, "
            f"{valid}, primary of {counts[chosen.name]} instance(s), the fewest"
            + (f" (others: {'; '.join(others)})" if others else ""),
            target=chosen.name,
        )
    return chosen, dict(reports)


# -- fencing -------------------------------------------------------------------------------


async def fence(ctx: StepContext, node: Node, why: str) -> bool:
    """Run ``node``'s fence command on the master; True when it ran and succeeded, False
    when the node has none (logged as a warning). Raises NodeError when it fails."""
    if not node.fence_command:
        ctx.log(
            f"node {node.name} has no fence command: nothing makes sure it stopped using "
            f"the disks ({why}); make sure it is powered off",
            kind=LogKind.WARNING,
        )
        return False
    line = shlex.join(node.fence_command)
    ctx.log(f"fencing node {node.name} ({why}): {line}", kind=LogKind.FENCE, node=node.name)
    result = await ctx.run_local(
        node.fence_command,
        timeout=FENCE_TIMEOUT,
        description=f"fence node {node.name}",
        env={"EXTJOBS_NODE": node.name, "EXTJOBS_NODE_HOST": node.host},
        payload=FenceRun(node.name),
    )
    if not result.ok:
        raise NodeError(
            f"fencing node {node.name} failed (exit {result.exit_status}, {line}): "
            f"{result.stderr.strip()[-300:] or '(no stderr)'}",
            node=node.name,
            exit_status=result.exit_status,
        )
    ctx.log(f"node {node.name} fenced", kind=LogKind.FENCE, node=node.name)
    return True


# -- where the guest runs, and settling ------------------------------------------------------


@attrs.frozen
class Seen:
    """What one node says about the guest: ``state`` is ``stopped``, ``running`` (fake),
    or qemu's run state; ``active`` means this process is the guest."""

    node: str
    running: bool
    state: str
    active: bool


async def locate(ctx: StepContext, inst: Instance, nodes: Sequence[str]) -> dict[str, Seen]:
    """Ask each node whether the guest runs there. Raises NodeError naming every node
    that did not answer (then nobody can say where the guest runs)."""
    hv = get_hypervisor(inst.hypervisor)
    seen: dict[str, Seen] = {}
    unknown: list[str] = []
    for node in nodes:
        try:
            status = await hypervisor_status(ctx, inst, node)
        except ExtJobsError as exc:
            unknown.append(f"{node}: {exc.message}")
            continue
        if not status.running:
            seen[node] = Seen(node, False, "stopped", False)
            continue
        socket = hv.control_socket(instance_key(inst), status)
        if socket is None:
            seen[node] = Seen(node, True, "running", True)
            continue
        try:
            state = await hv.guest_state(ctx, node, socket)
        except ExtJobsError as exc:
            # A guest that runs but does not answer is taken for the guest: never kill
            # what may be the only copy.
            ctx.log(
                f"{node}: the guest runs but its control socket failed: {exc.message}",
                kind=LogKind.WARNING,
            )
            state = "unknown"
        seen[node] = Seen(node, True, state, not hv.is_leftover(state))
    if unknown:
        raise NodeError(
            f"cannot tell where {inst.name} runs: {'; '.join(unknown)}", instance=inst.name
        )
    ctx.log(
        f"{inst.name}: "
        + ", ".join(
            f"{s.node} {s.state}{' (the guest)' if s.active else ''}" for s in seen.values()
        )
    )
    return seen


@attrs.frozen
class Settled:
    """The end state of :func:`settle`."""

    instance: str
    node: str | None
    stopped: tuple[str, ...] = ()
    released: tuple[str, ...] = ()
    failures: tuple[str, ...] = ()

    def describe(self) -> str:
        where = (
            f"{self.instance} runs on {self.node}, its disks open exclusively there"
            if self.node is not None
            else f"{self.instance} runs nowhere"
        )
        parts = [where]
        if self.stopped:
            parts.append(f"stopped the guest process on {', '.join(self.stopped)}")
        if self.released:
            parts.append(f"disks closed and detached on {', '.join(self.released)}")
        if self.failures:
            parts.append("NOT done: " + "; ".join(self.failures))
        return "; ".join(parts)


async def settle(
    ctx: StepContext,
    inst: Instance,
    nodes: Sequence[str],
    reports: Reports,
    *,
    prefer: str,
    resume: bool = False,
) -> Settled:
    """See the module docstring. ``resume``: continue a guest found paused where it is
    kept (a non-live migration paused it). Raises NodeError when a node cannot say
    whether the guest runs there (nothing is changed then)."""
    seen = await locate(ctx, inst, nodes)
    active = [n for n in nodes if seen[n].active]
    keeper = prefer if prefer in active else (active[0] if active else None)
    if len(active) > 1:
        ctx.log(
            f"the guest of {inst.name} is active on {', '.join(active)}; keeping {keeper}",
            kind=LogKind.WARNING,
        )
    failures: list[str] = []
    stopped: list[str] = []
    for node in nodes:
        if node != keeper and seen[node].running:
            try:
                await stop_guest(ctx, inst, node, grace=LEFTOVER_GRACE)
            except ExtJobsError as exc:
                failures.append(f"stopping the guest process on {node}: {exc.message}")
            else:
                stopped.append(node)
    providers = sorted({d.provider for d in inst.disks})
    released: list[str] = []
    for node in nodes:
        if node == keeper:
            continue
        try:
            await deactivate_disks(ctx, inst, node, provider_statuses(reports, node, providers))
        except ExtJobsError as exc:
            failures.append(exc.message)
        else:
            released.append(node)
    if keeper is not None:
        try:
            if seen[keeper].state == "paused" and resume:
                await _resume(ctx, inst, keeper)
            statuses = provider_statuses(reports, keeper, providers)
            await activate_disks(ctx, inst, keeper, statuses, exclusive=True)
        except ExtJobsError as exc:
            failures.append(f"opening the disks exclusively on {keeper}: {exc.message}")
        if ctx.config.instance(inst.name).primary != keeper:
            ctx.update_config(
                lambda c: c.with_instance(attrs.evolve(c.instance(inst.name), primary=keeper))
            )
            ctx.log(f"the configuration now says {inst.name} runs on {keeper}")
    settled = Settled(inst.name, keeper, tuple(stopped), tuple(released), tuple(failures))
    ctx.log(settled.describe(), kind=LogKind.WARNING if failures else LogKind.MESSAGE)
    return settled


async def _resume(ctx: StepContext, inst: Instance, node: str) -> None:
    hv = get_hypervisor(inst.hypervisor)
    status = await hypervisor_status(ctx, inst, node)
    socket = hv.control_socket(instance_key(inst), status)
    if socket is None:
        raise HypervisorError(f"the guest of {inst.name} on {node} has no control socket")
    await hv.resume(ctx, node, socket)


def group_nodes(config: ClusterConfig, inst: Instance) -> list[str]:
    """The online nodes of the group of ``inst``'s primary (where its guest may run)."""
    group = config.node(inst.primary).group
    return [n.name for n in config.online_nodes(group)]
