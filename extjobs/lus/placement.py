"""Choosing the primary node of a new instance (instance add without a node).

A node qualifies when it is online and not drained, its node group has every pool the
disks name connected and every provider they use valid on each online node, the disk
parameters (a pool's merged under the disk's own) are declared there, and the disks fit
the free space the providers report on it (an unknown capacity fits; ``force`` skips
this last test, with a warning). Of the qualifying nodes the one that is primary of the
fewest instances wins, ties by name; nodes are tried in that order, so storage is asked
about only until one fits. The job log says which node was chosen and why each other
one was passed over. Memory is not checked.
"""

from __future__ import annotations

from collections.abc import Mapping

from extjobs.errors import ExtJobsError, PrerequisiteError
from extjobs.extstorage.diagnose import ProviderStatus
from extjobs.extstorage.parameters import check_params
from extjobs.lus.base import StepContext
from extjobs.lus.capacity import shortages
from extjobs.lus.instance_storage import validate_in_group
from extjobs.lus.pools import disk_params, resolve_disk
from extjobs.model.cluster import Disk, Node
from extjobs.model.jobs import LogKind
from extjobs.model.opcodes import OpInstanceCreate

Reports = Mapping[str, Mapping[str, ProviderStatus]]


async def _group_fits(
    ctx: StepContext, op: OpInstanceCreate, group: str
) -> tuple[Reports, tuple[Disk, ...]]:
    """The provider reports of ``group``'s nodes and the disks as they would be made
    there; raises why the group cannot take them."""
    cfg = ctx.config
    disks = []
    for index, spec in enumerate(op.disks):
        provider, pool = resolve_disk(cfg, spec, index, group)
        disks.append(
            Disk(
                uuid="",
                index=index,
                size=spec.size,
                provider=provider,
                pool=pool,
                params=disk_params(cfg, spec),
            )
        )
    reports = await validate_in_group(ctx, group, {d.provider for d in disks})
    for disk in disks:
        declared = [r[disk.provider].parameters for r in reports.values()]
        common = {k: v for k, v in declared[0].items() if all(k in d for d in declared)}
        check_params(disk.provider, disk.params, common)
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
    for node in ordered:
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
            f"storage, primary of {counts[node.name]} instance(s), the fewest"
            + (f" (others: {'; '.join(others)})" if others else "")
        )
        return node
    why = "; ".join(f"{name}: {reason}" for name, reason in sorted(passed.items()))
    raise PrerequisiteError(
        f"no node can take instance {op.instance_name} ({why or 'the cluster has no node'})",
        instance=op.instance_name,
    )
