"""Lock manager: no deadlock and no exclusivity violation under random concurrent lock sets."""

from __future__ import annotations

import anyio
import anyio.lowlevel
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from extjobs.engine.locks import LockManager
from extjobs.model.locks import Level, LockKey, LockRequest, Mode

KEYS = [LockKey(Level.CLUSTER, "")] + [
    LockKey(level, name) for level in (Level.GROUP, Level.INSTANCE, Level.NODE) for name in "abc"
]

lock_sets = st.lists(
    st.lists(
        st.builds(LockRequest, st.sampled_from(KEYS), st.sampled_from(list(Mode))),
        min_size=1,
        max_size=5,
    ),
    min_size=2,
    max_size=12,
)


async def _exercise(jobs: list[list[LockRequest]], priorities: list[int]) -> None:
    manager = LockManager()
    holding: dict[LockKey, dict[int, Mode]] = {}

    async def job(owner: int, requests: list[LockRequest]) -> None:
        async with manager.acquire(owner, requests, priority=priorities[owner % len(priorities)]):
            for req in requests:
                holders = holding.setdefault(req.key, {})
                for other, mode in holders.items():
                    assert other != owner
                    overlap = f"{req.key}: {owner} ({req.mode}) overlaps {other} ({mode})"
                    assert mode is Mode.SHARED, overlap
                    assert req.mode is Mode.SHARED, overlap
            for req in requests:
                holding[req.key][owner] = (
                    Mode.EXCLUSIVE
                    if any(r.key == req.key and r.mode is Mode.EXCLUSIVE for r in requests)
                    else Mode.SHARED
                )
            await anyio.lowlevel.checkpoint()
            await anyio.lowlevel.checkpoint()
            for req in requests:
                holding[req.key].pop(owner, None)

    # Deadlock would hang; fail_after turns it into a failure.
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            for owner, requests in enumerate(jobs):
                tg.start_soon(job, owner, requests)
    stats = manager.statistics()
    assert stats["held"] == 0
    assert stats["waiting"] == 0


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(lock_sets, st.lists(st.integers(-20, 19), min_size=1, max_size=4))
def test_random_lock_sets_never_deadlock_or_overlap(
    jobs: list[list[LockRequest]], priorities: list[int]
) -> None:
    anyio.run(_exercise, jobs, priorities)


async def test_fifo_within_priority_and_priority_order() -> None:
    manager = LockManager()
    key = LockRequest.instance("x")
    order: list[str] = []
    release = anyio.Event()

    async def holder() -> None:
        async with manager.acquire(0, [key]):
            await release.wait()

    async def waiter(owner: int, name: str, priority: int) -> None:
        async with manager.acquire(owner, [key], priority=priority):
            order.append(name)

    async with anyio.create_task_group() as tg:
        tg.start_soon(holder)
        await anyio.wait_all_tasks_blocked()
        tg.start_soon(waiter, 1, "normal-1", 0)
        await anyio.wait_all_tasks_blocked()
        tg.start_soon(waiter, 2, "normal-2", 0)
        await anyio.wait_all_tasks_blocked()
        tg.start_soon(waiter, 3, "high", -10)
        await anyio.wait_all_tasks_blocked()
        assert manager.statistics()["waiting"] == 3
        release.set()
    assert order == ["high", "normal-1", "normal-2"]


async def test_shared_holders_overlap_and_exclusive_waits() -> None:
    manager = LockManager()
    shared = LockRequest.node("n1", Mode.SHARED)
    async with manager.acquire(1, [shared]), manager.acquire(2, [shared]):
        assert set(manager.holders(shared.key)) == {1, 2}
        waited: list[tuple[LockKey, list[int]]] = []

        async def want_exclusive() -> None:
            async with manager.acquire(
                3, [LockRequest.node("n1")], on_wait=lambda k, h: waited.append((k, h))
            ):
                pytest.fail("exclusive lock granted while shared holders exist")

        async with anyio.create_task_group() as tg:
            tg.start_soon(want_exclusive)
            await anyio.wait_all_tasks_blocked()
            assert manager.statistics()["waiting"] == 1
            tg.cancel_scope.cancel()
        assert waited == [(shared.key, [1, 2])]
    # The cancelled waiter left no trace.
    assert manager.statistics() == {**manager.statistics(), "held": 0, "waiting": 0}


async def test_exclusive_waiter_is_not_starved_by_later_shared_requests() -> None:
    manager = LockManager()
    shared = LockRequest.node("n1", Mode.SHARED)
    got: list[int] = []
    first_release = anyio.Event()

    async def hold_shared(owner: int, until: anyio.Event | None) -> None:
        async with manager.acquire(owner, [shared]):
            got.append(owner)
            if until is not None:
                await until.wait()

    async def want_exclusive() -> None:
        async with manager.acquire(2, [LockRequest.node("n1")]):
            got.append(2)

    async with anyio.create_task_group() as tg:
        tg.start_soon(hold_shared, 1, first_release)
        await anyio.wait_all_tasks_blocked()
        tg.start_soon(want_exclusive)
        await anyio.wait_all_tasks_blocked()
        tg.start_soon(hold_shared, 3, None)  # arrives after the exclusive waiter
        await anyio.wait_all_tasks_blocked()
        assert got == [1]
        first_release.set()
    assert got == [1, 2, 3]
