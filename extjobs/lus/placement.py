"""Choosing nodes for instances: the primary of a new instance (instance add without a
node), and whether a node has the memory to run an instance (add, migrate, failover,
change-group).

Placement (:func:`place_instance`): a node qualifies when it is online and not drained,
its node group has every pool the disks name connected and every provider they use
valid on each online node, the disk parameters (a pool's merged under the disk's own)
are declared there, it has the memory for the instance, and the disks fit the free space
the providers report on it (an unknown capacity fits). ``force`` turns a memory or
storage shortage into a warning. Of the qualifying nodes the one that is primary of the
fewest instances wins, ties by name; nodes are tried in that order, so storage is asked
about only until one fits. The job log says which node was chosen and why each other
one was passed over.

Memory (:func:`memory_rooms`, :func:`memory_problems`): a node's free memory is the
total its hypervisor reports (``Hypervisor.node_info_command``: ``/proc/meminfo``, or
the fake node's configured size) minus what the instances that should run there hold
(their ``memory``, for every instance marked up whose primary it is). An instance fits
when its memory is at most that. A node that cannot be asked is passed over, with why.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import attrs

from extjobs.errors import ExtJobsError, PrerequisiteError
from extjobs.extstorage.diagnose import ProviderStatus
from extjobs.hypervisors import get_hypervisor
from extjobs.hypervisors.base import NodeInfo, parse_node_info, run_dir_for
from extjobs.lus.base import StepContext
from extjobs.lus.capacity import shortages
from extjobs.lus.instance_storage import validate_in_group
from extjobs.lus.pools import check_declared, new_disk
from extjobs.model.cluster import ClusterConfig, Disk, Node
from extjobs.model.jobs import LogKind
from extjobs.model.opcodes import OpInstanceCreate
from extjobs.model.steps import Step

#: How long a node may take to say how much memory it has.
NODE_INFO_TIMEOUT = 30.0

Reports = Mapping[str, Mapping[str, ProviderStatus]]


# -- memory -------------------------------------------------------------------------------


@attrs.frozen
class MemoryRoom:
    """The memory of one node for guests, in MiB: ``total`` as its hypervisor reports
    it, ``held`` by the instances that should run there."""

    node: str
    total: int
    held: int

    @property
    def free(self) -> int:
        return max(self.total - self.held, 0)

    def describe(self) -> str:
        return f"{self.free} MiB free of {self.total} MiB ({self.held} MiB held by instances)"


def held_memory(config: ClusterConfig, node: str, *, besides: str | None = None) -> int:
    """What the instances marked up whose primary is ``node`` hold (MiB), leaving out
    instance ``besides`` (the one being placed or moved)."""
    return sum(
        i.memory
        for i in config.instances.values()
        if i.primary == node and i.admin_up and i.name != besides
    )


def node_info_step(ctx: StepContext, node: str, hypervisor: str) -> Step:
    return Step(
        node=node,
        description=f"{hypervisor} node info",
        command=get_hypervisor(hypervisor).node_info_command(
            run_dir_for(ctx.config.cluster, node), timeout=NODE_INFO_TIMEOUT
        ),
    )


async def memory_rooms(
    ctx: StepContext,
    nodes: Sequence[str],
    hypervisor: str,
    *,
    besides: str | None = None,
    reserved: Mapping[str, int] | None = None,
) -> dict[str, MemoryRoom | str]:
    """Per node (asked concurrently), its :class:`MemoryRoom` for guests of
    ``hypervisor``, or why it could not be told. ``reserved``: MiB per node already
    promised to instances planned to move there, counted as held."""
    answers = await ctx.run_many([node_info_step(ctx, n, hypervisor) for n in nodes])
    rooms: dict[str, MemoryRoom | str] = {}
    for node, answer in zip(nodes, answers, strict=True):
        if isinstance(answer, ExtJobsError):
            rooms[node] = f"cannot tell its memory: {answer.message}"
            continue
        try:
            info: NodeInfo = parse_node_info(answer.stdout, node=node)
        except ExtJobsError as exc:
            rooms[node] = f"cannot tell its memory: {exc.message}"
            continue
        held = held_memory(ctx.config, node, besides=besides)
        rooms[node] = MemoryRoom(node, info.memory_total, held + (reserved or {}).get(node, 0))
    return rooms


def memory_problem(room: MemoryRoom | str, need: int) -> str | None:
    """Why a node with ``room`` cannot run a guest of ``need`` MiB, with the figures."""
    if isinstance(room, str):
        return room
    if need > room.free:
        return f"not enough memory: needs {need} MiB, node has {room.describe()}"
    return None


async def memory_problems(
    ctx: StepContext,
    nodes: Sequence[str],
    *,
    hypervisor: str,
    need: int,
    besides: str | None = None,
    reserved: Mapping[str, int] | None = None,
) -> dict[str, str]:
    """The nodes of ``nodes`` that cannot run a guest of ``need`` MiB, and why; the
    figures of each node are logged."""
    if not nodes:
        return {}
    rooms = await memory_rooms(ctx, nodes, hypervisor, besides=besides, reserved=reserved)
    problems = {}
    for node, room in rooms.items():
        problem = memory_problem(room, need)
        if isinstance(room, MemoryRoom):
            ctx.log(f"{node}: memory {room.describe()}; the instance needs {need} MiB")
        if problem is not None:
            problems[node] = problem
    return problems


async def target_memory(
    ctx: StepContext,
    candidates: Sequence[Node],
    *,
    instance: str,
    hypervisor: str,
    need: int,
    pinned: bool,
    force: bool,
    reserved: Mapping[str, int] | None = None,
) -> dict[str, str]:
    """The memory check of a move (migrate, failover, change-group): the candidates
    without room, and why, to be passed over. A ``pinned`` target without room is
    refused (PrerequisiteError with the figures); with ``force`` a shortage is only a
    warning and nothing is passed over. ``reserved``: as for :func:`memory_rooms`."""
    problems = await memory_problems(
        ctx,
        [n.name for n in candidates],
        hypervisor=hypervisor,
        need=need,
        besides=instance,
        reserved=reserved,
    )
    if force:
        for node, problem in problems.items():
            ctx.log(f"{node}: {problem}; going on (force)", kind=LogKind.WARNING)
        return {}
    if pinned and problems:
        [(node, problem)] = problems.items()
        raise PrerequisiteError(
            f"node {node} cannot receive {instance}: {problem}; nothing was changed "
            "(use --force to move it there anyway)",
            node=node,
            instance=instance,
        )
    return problems


async def require_memory(
    ctx: StepContext, node: str, *, instance: str, hypervisor: str, need: int, force: bool
) -> None:
    """Refuse (PrerequisiteError with the figures) to start a guest of ``need`` MiB on
    ``node`` without room for it, unless ``force`` (then a warning)."""
    problems = await memory_problems(
        ctx, [node], hypervisor=hypervisor, need=need, besides=instance
    )
    if node not in problems:
        return
    if force:
        ctx.log(f"{node}: {problems[node]}; going on (force)", kind=LogKind.WARNING)
        return
    raise PrerequisiteError(
        f"node {node} cannot run {instance}: {problems[node]}; nothing was created "
        "(use --force to go on anyway)",
        node=node,
        instance=instance,
    )


# -- placement ------------------------------------------------------------------------------


async def _group_fits(
    ctx: StepContext, op: OpInstanceCreate, group: str
) -> tuple[Reports, tuple[Disk, ...]]:
    """The provider reports of ``group``'s nodes and the disks as they would be made
    there; raises why the group cannot take them."""
    cfg = ctx.config
    disks = [new_disk(cfg, spec, index, group) for index, spec in enumerate(op.disks)]
    reports = await validate_in_group(ctx, group, {d.provider for d in disks})
    for disk in disks:
        check_declared(reports, disk.provider, disk.params)
    return reports, tuple(disks)


async def place_instance(ctx: StepContext, op: OpInstanceCreate) -> Node:
    """The node to create ``op``'s instance on (see the module docstring); raises
    PrerequisiteError naming every node and why it was passed over when none qualifies."""
    cfg = ctx.config
    passed: dict[str, str] = {}
    by_group: dict[str, list[Node]] = {}
    for node in sorted(cfg.nodes.values(), key=lambda n: n.name):
        if node.offline or node.drained:
            passed[node.name] = "offline" if node.offline else "drained"
        else:
            by_group.setdefault(node.group, []).append(node)
    groups: dict[str, tuple[Reports, tuple[Disk, ...]]] = {}
    for group, members in sorted(by_group.items()):
        try:
            groups[group] = await _group_fits(ctx, op, group)
        except ExtJobsError as exc:
            for node in members:
                passed[node.name] = f"group {group}: {exc.message}"
    counts = {n: 0 for g in groups for n in (m.name for m in by_group[g])}
    for inst in cfg.instances.values():
        if inst.primary in counts:
            counts[inst.primary] += 1
    ordered = sorted(
        (n for g in groups for n in by_group[g]), key=lambda n: (counts[n.name], n.name)
    )
    short_of_memory = await memory_problems(
        ctx,
        [n.name for n in ordered],
        hypervisor=op.hypervisor,
        need=op.memory,
        besides=op.instance_name,
    )
    if op.force:
        for name, problem in short_of_memory.items():
            ctx.log(f"{name}: {problem}; may be chosen anyway (force)", kind=LogKind.WARNING)
    else:
        passed.update(short_of_memory)
    for node in ordered:
        if node.name in passed:
            continue
        reports, disks = groups[node.group]
        short = await shortages(ctx, node.name, reports[node.name], disks)
        if short and not op.force:
            passed[node.name] = "not enough storage: " + "; ".join(short)
            continue
        if short:
            ctx.log("; ".join(short) + "; placing here anyway (force)", kind=LogKind.WARNING)
        others = [
            f"{n.name}: primary of {counts[n.name]} instance(s)"
            for n in ordered
            if n.name != node.name and n.name not in passed
        ]
        others += [f"{name}: {why}" for name, why in sorted(passed.items())]
        providers = ", ".join(sorted({d.provider for d in disks}))
        ctx.log(
            f"primary node {node.name} chosen: online, not drained, in group {node.group} "
            f"where provider(s) {providers} are valid and the pools connected, enough "
            f"memory and storage, primary of {counts[node.name]} instance(s), the fewest"
            + (f" (others: {'; '.join(others)})" if others else "")
        )
        return node
    why = "; ".join(f"{name}: {reason}" for name, reason in sorted(passed.items()))
    raise PrerequisiteError(
        f"no node can take instance {op.instance_name} ({why or 'the cluster has no node'})",
        instance=op.instance_name,
    )
