"""The scheduler: which queued jobs may run now, and in which order. Pure functions.

Nothing here writes anything or awaits: the queue asks, gets verdicts, and acts on them
(as Ganeti's dependency check answers ``WAIT``/``ERROR``/``CONTINUE`` and leaves the
acting to its caller).

* **Effective priority**: a job's priority minus one step per ``aging_interval`` it has
  waited since it was received, so that low priorities cannot starve (floored at a bound
  that grows slowly with age, so that ages stay ordered).
* **Dependencies**: a job that depends on others is :class:`Ready` once every one of
  them ended in one of the wanted statuses, :class:`Wait` while one has not ended, and
  :class:`Fail` when one ended otherwise or does not exist.
* **Picking**: jobs being recovered after a restart first, then by effective priority,
  then by id.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable

import attrs

from extjobs.model.jobs import Job


@attrs.frozen
class Ready:
    """Every dependency ended as wanted (or there are none)."""


@attrs.frozen
class Wait:
    """A dependency has not ended yet; ``reason`` names it and its status."""

    reason: str


@attrs.frozen
class Fail:
    """A dependency ended badly or does not exist; the job cannot run."""

    reason: str


Verdict = Ready | Wait | Fail


def effective_priority(job: Job, now: float, aging_interval: float) -> int:
    """``job``'s priority aged by the time it has waited (lower runs first)."""
    steps = int((now - job.received) / max(aging_interval, 1e-3))
    return max(job.priority - steps, -21 - steps // 1000)


def dependency_verdict(job: Job, lookup: Callable[[int], Job | None]) -> Verdict:
    """Whether ``job``'s dependencies let it run; ``lookup`` finds a job by id."""
    for dep in job.depends:
        other = lookup(dep.job_id)
        if other is None:
            return Fail(f"depends on job {dep.job_id}, which does not exist")
        if not other.status.finalized:
            return Wait(f"job {dep.job_id} ({other.status.value})")
        if other.status not in dep.statuses:
            wanted = "/".join(s.value for s in dep.statuses)
            return Fail(
                f"dependency job {dep.job_id} ended {other.status.value}, this job needed {wanted}"
            )
    return Ready()


def pick(
    ready: Iterable[Job],
    *,
    now: float,
    aging_interval: float,
    recovering: Collection[int],
    limit: int,
) -> list[Job]:
    """Up to ``limit`` jobs of ``ready``, in the order they should start."""
    if limit <= 0:
        return []
    ordered = sorted(
        ready,
        key=lambda j: (
            j.id not in recovering,
            effective_priority(j, now, aging_interval),
            j.id,
        ),
    )
    return ordered[:limit]
