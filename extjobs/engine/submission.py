"""A submitted batch as jobs: ids, dependencies resolved, first log lines. Pure.

Shared by the leader's queue and by masters that do not lead (which queue jobs in the
shared store for the leader).
"""

from __future__ import annotations

from collections.abc import Sequence

from extjobs.errors import InputError
from extjobs.model.jobs import Dependency, Job, LogEntry, LogKind, OpState
from extjobs.model.opcodes import encode_opcode
from extjobs.model.requests import JobRequest


def build_jobs(
    batch: Sequence[JobRequest], ids: Sequence[int], now: float
) -> tuple[list[Job], list[LogEntry]]:
    """The jobs of ``batch`` with ``ids`` (in order), and the first log line of each.

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
            )
        )
    entries = [
        LogEntry(
            job.id,
            1,
            now,
            LogKind.STATUS,
            f"job submitted: {job.summary()}",
            {"job_status": "queued"},
        )
        for job in jobs
    ]
    return jobs, entries
