"""Asking providers how much storage is left (the optional ``capacity`` script).

:func:`capacity_on` runs the script on one node; :func:`group_capacity` sums up a node
group: it asks the first online node (in name order) where the provider is valid, and
when that node says the storage is ``shared`` the answer stands for the group; otherwise
it asks the others too, and the group's figures are the smallest free (and total) of
its nodes — what any node of the group can count on. A figure nobody could give is
``None``: *unknown*. Failures are reported, never raised, in the listings; for new
disks (:func:`shortages`, :func:`require_fit`) a provider without a ``capacity`` script
fits, and one whose script failed or printed something else is a shortage quoting it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from extjobs.errors import ExtJobsError, PrerequisiteError
from extjobs.extstorage.capacity import Capacity, capacity_command, parse_capacity_output
from extjobs.extstorage.diagnose import ProviderStatus
from extjobs.lus.base import StepContext
from extjobs.model.cluster import Disk
from extjobs.model.jobs import LogKind
from extjobs.model.steps import Step


def capacity_step(
    ctx: StepContext, node: str, status: ProviderStatus, params: Mapping[str, str]
) -> Step:
    assert status.path is not None
    storage = ctx.options.storage
    return Step(
        node=node,
        description=f"capacity of {status.name}",
        command=capacity_command(
            status.path,
            status.name,
            params,
            timeout=storage.timeout("capacity"),
            path_env=storage.path_env,
        ),
    )


async def capacity_on(
    ctx: StepContext, node: str, status: ProviderStatus, params: Mapping[str, str]
) -> Capacity | str | None:
    """The capacity ``status.name`` reports on ``node``; ``None`` when it has no
    ``capacity`` script; the error message when asking failed."""
    return (await _ask(ctx, [(node, status)], params))[0]


async def _ask(
    ctx: StepContext, where: list[tuple[str, ProviderStatus]], params: Mapping[str, str]
) -> list[Capacity | str | None]:
    answers = await ctx.run_many([capacity_step(ctx, n, st, params) for n, st in where])
    out: list[Capacity | str | None] = []
    for (node, status), answer in zip(where, answers, strict=True):
        if isinstance(answer, ExtJobsError):
            out.append(answer.message)
            continue
        try:
            out.append(parse_capacity_output(answer.stdout, provider=status.name, node=node))
        except ExtJobsError as exc:
            out.append(exc.message)
    return out


def _figures(answer: Capacity | str | None) -> dict[str, Any]:
    if isinstance(answer, Capacity):
        return {"total": answer.total, "free": answer.free}
    if answer is None:
        return {"total": None, "free": None, "error": None}
    return {"total": None, "free": None, "error": answer}


async def group_capacity(
    ctx: StepContext, statuses: Mapping[str, ProviderStatus], params: Mapping[str, str]
) -> dict[str, Any]:
    """``{"total", "free", "shared", "nodes": {node: {"total", "free"[, "error"]}}}`` for
    one provider in one group, given where it is valid on each node (``statuses``)."""
    where = [(n, st) for n, st in sorted(statuses.items()) if st.valid and st.path]
    if not where:
        return {"total": None, "free": None, "shared": False, "nodes": {}}
    first = (await _ask(ctx, where[:1], params))[0]
    if isinstance(first, Capacity) and first.shared:
        return {
            "total": first.total,
            "free": first.free,
            "shared": True,
            "nodes": {where[0][0]: _figures(first)},
        }
    answers = [first, *(await _ask(ctx, where[1:], params) if where[1:] else [])]
    nodes = {n: _figures(a) for (n, _), a in zip(where, answers, strict=True)}
    known = [a for a in answers if isinstance(a, Capacity)]
    complete = len(known) == len(answers)
    return {
        "total": min(a.total for a in known) if complete else None,
        "free": min(a.free for a in known) if complete else None,
        "shared": False,
        "nodes": nodes,
    }


def shown(capacity: Mapping[str, Any]) -> str:
    """``free X of Y MiB`` or ``unknown``, for logs and the CLI."""
    if capacity.get("free") is None:
        return "unknown"
    return f"{capacity['free']} MiB free of {capacity['total']} MiB"


async def shortages(
    ctx: StepContext, node: str, statuses: Mapping[str, ProviderStatus], disks: Sequence[Disk]
) -> list[str]:
    """What does not fit on ``node``: for each provider and parameter set of ``disks``
    (such disks share the space), the disks and figures when their sizes add up to more
    than the free space the provider reports there, or the error of a ``capacity``
    script that failed or printed something else. A provider without the script is
    logged and counts as fitting."""
    wanted: dict[tuple[str, tuple[tuple[str, str], ...]], list[Disk]] = {}
    for disk in disks:
        wanted.setdefault((disk.provider, tuple(sorted(disk.params.items()))), []).append(disk)
    short = []
    for (provider, params), group in wanted.items():
        names = ", ".join(f"disk {d.index}" for d in group)
        need = sum(d.size for d in group)
        answer = await capacity_on(ctx, node, statuses[provider], dict(params))
        if answer is None:
            ctx.log(
                f"{node}: free space for {names} unknown (provider {provider} has no "
                "capacity script); not checked"
            )
            continue
        if isinstance(answer, str):
            short.append(f"cannot tell the free space for {names} on node {node}: {answer}")
            continue
        ctx.log(
            f"{node}: provider {provider} reports {answer.free} MiB free of "
            f"{answer.total} MiB; {names} need {need} MiB"
        )
        if need > answer.free:
            shown = ",".join(f"{k}={v}" for k, v in params) or "no parameters"
            verb = "needs" if len(group) == 1 else "need"
            short.append(
                f"{names} {verb} {need} MiB of provider {provider} ({shown}) but node {node} "
                f"reports {answer.free} MiB free of {answer.total} MiB"
            )
    return short


async def require_fit(
    ctx: StepContext,
    node: str,
    statuses: Mapping[str, ProviderStatus],
    disks: Sequence[Disk],
    *,
    force: bool,
) -> None:
    """Refuse new ``disks`` that do not fit the free space their providers report on
    ``node`` (:func:`shortages`; ``statuses``: where each provider lives there), before
    anything is created: PrerequisiteError with the figures. With ``force`` a shortage
    is logged as a warning instead. An unknown capacity fits. For every LU that creates
    disks (instance add, a disk added to an instance)."""
    short = await shortages(ctx, node, statuses, disks)
    if not short:
        return
    if force:
        ctx.log("; ".join(short) + "; creating anyway (force)", kind=LogKind.WARNING)
        return
    raise PrerequisiteError(
        "not enough storage: " + "; ".join(short) + "; nothing was created "
        "(use --force to create anyway)",
        node=node,
    )
