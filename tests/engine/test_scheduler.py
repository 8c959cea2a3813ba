"""The pure scheduler: dependency verdicts, aging and picking, without a queue."""

from __future__ import annotations

import attrs
from hypothesis import given
from hypothesis import strategies as st

from extjobs.engine.scheduler import (
    Fail,
    Ready,
    Wait,
    dependency_verdict,
    effective_priority,
    pick,
)
from extjobs.model.jobs import Dependency, Job, OpState
from extjobs.model.states import JobStatus, OpStatus

FINAL = [OpStatus.SUCCESS, OpStatus.ERROR, OpStatus.CANCELED]
ANY = [OpStatus.QUEUED, OpStatus.WAITING, OpStatus.RUNNING, *FINAL]


def job(job_id: int, status: OpStatus = OpStatus.QUEUED, **changes: object) -> Job:
    base = Job(id=job_id, ops=(OpState(0, {"OP_ID": "OP_TEST_DELAY"}, status=status),))
    return attrs.evolve(base, **changes)


@given(st.lists(st.tuples(st.sampled_from(ANY), st.booleans()), max_size=5))
def test_a_job_is_ready_exactly_when_every_dependency_ended_as_wanted(
    deps: list[tuple[OpStatus, bool]],
) -> None:
    others = {i + 1: job(i + 1, status) for i, (status, _) in enumerate(deps)}
    wanted = (JobStatus.SUCCESS,)
    waiting = job(100, depends=tuple(Dependency(i + 1, wanted) for i in range(len(deps))))
    # A dependency marked False does not exist (archived and gone, or never was).
    exists = {i + 1 for i, (_, present) in enumerate(deps) if present}
    verdict = dependency_verdict(waiting, lambda i: others[i] if i in exists else None)
    ready = all(i + 1 in exists and s is OpStatus.SUCCESS for i, (s, _) in enumerate(deps))
    assert isinstance(verdict, Ready) == ready
    if not ready:
        # The first dependency that is not satisfied decides, and is named.
        first = next(
            i + 1
            for i, (s, _) in enumerate(deps)
            if i + 1 not in exists or s is not OpStatus.SUCCESS
        )
        assert f"job {first}" in verdict.reason
        if first in exists and not others[first].status.finalized:
            assert isinstance(verdict, Wait)
        else:
            assert isinstance(verdict, Fail)


def test_a_dependency_may_ask_for_a_failure() -> None:
    failed = job(1, OpStatus.ERROR)
    waiting = job(2, depends=(Dependency(1, (JobStatus.ERROR, JobStatus.CANCELED)),))
    assert dependency_verdict(waiting, {1: failed}.get) == Ready()
    wants_success = job(3, depends=(Dependency(1, (JobStatus.SUCCESS,)),))
    verdict = dependency_verdict(wants_success, {1: failed}.get)
    assert verdict == Fail("dependency job 1 ended error, this job needed success")


@given(
    st.integers(-20, 19),
    st.floats(0, 1e6, allow_nan=False),
    st.floats(0, 1e6, allow_nan=False),
    st.floats(0.1, 1e3, allow_nan=False),
)
def test_waiting_never_makes_a_job_less_urgent(
    priority: int, waited: float, more: float, interval: float
) -> None:
    j = job(1, priority=priority, received=0.0)
    now = effective_priority(j, waited, interval)
    later = effective_priority(j, waited + more, interval)
    assert later <= now <= priority
    # Each full aging interval waited counts, until the floor.
    steps = int(waited / interval)
    assert now == max(priority - steps, -21 - steps // 1000)


@given(
    st.lists(st.tuples(st.integers(-20, 19), st.booleans()), min_size=0, max_size=12),
    st.integers(0, 15),
)
def test_pick_starts_recovering_jobs_first_then_by_priority_then_id(
    specs: list[tuple[int, bool]], limit: int
) -> None:
    jobs = [job(i + 1, priority=p, received=0.0) for i, (p, _) in enumerate(specs)]
    recovering = {i + 1 for i, (_, r) in enumerate(specs) if r}
    chosen = pick(jobs, now=0.0, aging_interval=10.0, recovering=recovering, limit=limit)
    assert len(chosen) == min(limit, len(jobs))
    keys = [(j.id not in recovering, j.priority, j.id) for j in chosen]
    assert keys == sorted(keys)
    left = [j for j in jobs if j not in chosen]
    if chosen and left:
        assert max(keys) < min((j.id not in recovering, j.priority, j.id) for j in left)
