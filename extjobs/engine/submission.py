"""A submitted batch as jobs: ids, dependencies resolved, first log lines. Pure.

Shared by the leader's queue and by masters that do not lead (which queue jobs in the
shared store for the leader).
"""

from __future__ import annotations

from collections.abc import Sequence

from extjobs.errors import InputError
from extjobs.model.cluster import ClusterConfig
from extjobs.model.jobquery import TagKind, job_tags
from extjobs.model.jobs import Dependency, Job, LogEntry, LogKind, OpState
from extjobs.model.opcodes import encode_opcode
from extjobs.model.requests import JobRequest


def touched_nodes(
    ops: Sequence[dict[str, object]], config: ClusterConfig | None
) -> tuple[str, ...]:
    """The nodes a job touches that its opcodes do not name: the primary node of each
    instance they name, as ``config`` has it now (what a search by node finds later)."""
    if config is None:
        return ()
    tags = job_tags(ops)
    named = {name for kind, name in tags if kind is TagKind.NODE}
    primaries = {
        instance.primary
        for kind, name in tags
        if kind is TagKind.INSTANCE and (instance := config.instances.get(name)) is not None
    }
    return tuple(sorted(primaries - named))


def build_jobs(
    batch: Sequence[JobRequest],
    ids: Sequence[int],
    now: float,
    config: ClusterConfig | None = None,
) -> tuple[list[Job], list[LogEntry]]:
    """The jobs of ``batch`` with ``ids`` (in order), and the first log line of each;
    ``config`` (the configuration at submission) tells which nodes they touch.

    A negative dependency ``-k`` is the job ``k`` places earlier in the batch (ids from a
    shared sequence need not be consecutive); a positive one must be an earlier job.
    Raises :class:`InputError` naming the dependency otherwise; nothing is built then.
    """
    jobs: list[Job] = []
    for i, (job_id, req) in enumerate(zip(ids, batch, strict=True)):
        deps = []
        for d, dep in enumerate(req.depends):
            target = dep.job_id
            if target < 0:
                if i + target < 0:
                    raise InputError(
                        f"jobs[{i}].depends[{d}]: relative id {dep.job_id} points before "
                        "the first job of this submission",
                        field=f"jobs[{i}].depends[{d}]",
                    )
                target = ids[i + target]
            elif target >= job_id:
                raise InputError(
                    f"jobs[{i}].depends[{d}]: job {target} is not an earlier job",
                    field=f"jobs[{i}].depends[{d}]",
                )
            deps.append(Dependency(target, dep.statuses))
        ops = tuple(OpState(index=k, input=encode_opcode(op)) for k, op in enumerate(req.ops))
        jobs.append(
            Job(
                id=job_id,
                ops=ops,
                priority=req.priority,
                depends=tuple(deps),
                received=now,
                submitter=req.submitter,
                reason=req.reason,
                touches=touched_nodes([op.input for op in ops], config),
            )
        )
    entries = [
        LogEntry(
            job.id,
            1,
            now,
            LogKind.STATUS,
            f"job submitted: {', '.join(job.summaries())}",
            {"job_status": "queued"},
        )
        for job in jobs
    ]
    return jobs, entries
