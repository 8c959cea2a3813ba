"""The shared, single-flight results of :class:`extjobs.engine.memo.Memo` (a provider's
validity in a node group, shared between instance adds)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator

import anyio
import pytest

from extjobs.engine.memo import Memo


async def _ask_at_once(memo: Memo, n: int, keep: bool) -> tuple[list[object], list[int]]:
    calls: list[int] = []
    gate = anyio.Event()

    async def compute() -> tuple[str, bool]:
        calls.append(len(calls))
        await gate.wait()
        return f"answer {len(calls)}", keep

    got: list[object] = []

    async def ask() -> None:
        got.append(await memo.get("diagnose|g", 30.0, compute))

    async with anyio.create_task_group() as tg:
        for _ in range(n):
            tg.start_soon(ask)
        await anyio.wait_all_tasks_blocked()
        gate.set()
    return got, calls


async def test_callers_at_once_share_one_kept_result() -> None:
    memo = Memo()
    got, calls = await _ask_at_once(memo, 5, keep=True)
    assert calls == [0]
    assert got == [("answer 1", None)] * 5
    value, age = await memo.get("diagnose|g", 30.0, pytest.fail)  # type: ignore[arg-type]
    assert value == "answer 1"
    assert age is not None


async def test_callers_at_once_share_a_result_not_kept_and_later_ones_ask_again() -> None:
    memo = Memo()
    got, calls = await _ask_at_once(memo, 5, keep=False)
    # One computation for all who asked while it ran (not one each, in turn).
    assert calls == [0]
    assert got == [("answer 1", None)] * 5
    got, calls = await _ask_at_once(memo, 2, keep=False)
    assert calls == [0]
    assert memo.statistics()["misses"] == 2


async def test_a_computation_that_raises_is_redone_by_a_waiter() -> None:
    memo = Memo()
    attempts: list[int] = []
    gate = anyio.Event()

    async def compute() -> tuple[str, bool]:
        attempts.append(1)
        await gate.wait()
        if len(attempts) == 1:
            raise RuntimeError("node did not answer")
        return "valid", True

    results: list[object] = []

    async def first() -> None:
        with pytest.raises(RuntimeError):
            await memo.get("k", 30.0, compute)

    async def second() -> None:
        results.append(await memo.get("k", 30.0, compute))

    async with anyio.create_task_group() as tg:
        tg.start_soon(first)
        await anyio.wait_all_tasks_blocked()
        tg.start_soon(second)
        await anyio.wait_all_tasks_blocked()
        gate.set()
    assert len(attempts) == 2
    assert results == [("valid", None)]


class _Clock:
    """A hand-moved clock for the memo's lifetimes."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def _first_then_gated() -> tuple[
    _Clock, Memo, anyio.Event, Callable[[], Awaitable[tuple[str, bool]]]
]:
    """A memo on a fake clock holding "first" (computed at 0 s), and a computation whose
    next answer, "second", waits for the gate."""
    clock = _Clock()
    memo = Memo(clock)
    answers = iter(["first", "second"])
    gate = anyio.Event()

    async def compute() -> tuple[str, bool]:
        value = next(answers)
        if value == "second":
            await gate.wait()
        return value, True

    assert await memo.get("k", 30.0, compute) == ("first", None)
    return clock, memo, gate, compute


async def test_a_quick_value_is_renewed_in_its_last_tenth_while_others_take_it() -> None:
    clock, memo, gate, compute = await _first_then_gated()
    clock.now += 26.0  # computed at once: renewed in the last 3 s of 30, not before
    assert await memo.get("k", 30.0, pytest.fail) == ("first", 26.0)  # type: ignore[arg-type]
    clock.now += 2.0
    renewed: list[object] = []

    async def renew() -> None:
        renewed.append(await memo.get("k", 30.0, compute))

    async with anyio.create_task_group() as tg:
        tg.start_soon(renew)
        await anyio.wait_all_tasks_blocked()
        # The renewal is under way: another caller takes the kept value, at once.
        with anyio.fail_after(5):
            got = await memo.get("k", 30.0, pytest.fail)  # type: ignore[arg-type]
        assert got == ("first", 28.0)
        gate.set()
    assert renewed == [("second", None)]
    clock.now += 1.0
    assert await memo.get("k", 30.0, pytest.fail) == ("second", 1.0)  # type: ignore[arg-type]
    assert memo.statistics()["renewals"] == 1


async def test_a_slow_value_is_renewed_twice_its_duration_before_it_expires() -> None:
    clock = _Clock()
    memo = Memo(clock)

    def taking(seconds: float) -> Callable[[], Awaitable[tuple[str, bool]]]:
        async def compute() -> tuple[str, bool]:
            clock.now += seconds
            return f"took {seconds:g}", True

        return compute

    # 4 s to compute: kept until 34 s, renewed from 26 s (8 s before it expires).
    assert await memo.get("k", 30.0, taking(4.0)) == ("took 4", None)
    clock.now += 21.5  # 25.5 s
    assert await memo.get("k", 30.0, pytest.fail) == ("took 4", 21.5)  # type: ignore[arg-type]
    clock.now += 1.0  # 26.5 s
    assert await memo.get("k", 30.0, taking(12.0)) == ("took 12", None)
    # 12 s to compute: twice that before it expires would be before half its life,
    # which bounds it: renewed from 15 s after it was computed, not before.
    clock.now += 14.5
    assert await memo.get("k", 30.0, pytest.fail) == ("took 12", 14.5)  # type: ignore[arg-type]
    clock.now += 1.0
    assert await memo.get("k", 30.0, taking(0.0)) == ("took 0", None)
    assert memo.statistics()["renewals"] == 2


async def test_a_failed_renewal_falls_back_to_the_kept_value_and_a_broken_one_drops_it() -> None:
    clock = _Clock()
    memo = Memo(clock)
    outcomes: Iterator[tuple[str, bool] | Exception] = iter(
        [("valid", True), RuntimeError("node3 did not answer"), ("broken", False)]
    )

    async def compute() -> tuple[str, bool]:
        outcome = next(outcomes, LookupError("asked again"))
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    assert await memo.get("k", 30.0, compute) == ("valid", None)
    clock.now += 28.0
    assert await memo.get("k", 30.0, compute) == ("valid", 28.0)  # the renewal raised
    assert await memo.get("k", 30.0, compute) == ("broken", None)  # renewed, not kept
    with pytest.raises(LookupError):  # nothing kept any more: asked again
        await memo.get("k", 30.0, compute)


async def test_an_expired_value_is_not_served_while_it_is_renewed() -> None:
    clock = _Clock()
    memo = Memo(clock)
    answers: Iterator[tuple[str, bool] | Exception] = iter(
        [("first", True), RuntimeError("unreachable")]
    )

    async def compute() -> tuple[str, bool]:
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return answer

    assert await memo.get("k", 30.0, compute) == ("first", None)
    clock.now += 31.0
    with pytest.raises(RuntimeError, match="unreachable"):
        await memo.get("k", 30.0, compute)


async def test_aside_the_renewing_caller_takes_the_kept_value_and_the_renewal_runs_beside() -> None:
    clock, memo, gate, compute = await _first_then_gated()
    clock.now += 28.0
    async with anyio.create_task_group() as tg:
        with anyio.fail_after(5):
            # At once, while the renewal waits at the gate; and so do the others.
            assert await memo.get("k", 30.0, compute, aside=tg.start_soon) == ("first", 28.0)
            assert await memo.get("k", 30.0, pytest.fail) == ("first", 28.0)  # type: ignore[arg-type]
        gate.set()
    clock.now += 1.0
    assert await memo.get("k", 30.0, pytest.fail) == ("second", 1.0)  # type: ignore[arg-type]
    assert memo.statistics()["renewals"] == 1


async def test_a_renewal_aside_that_fails_leaves_the_kept_value_to_last() -> None:
    clock = _Clock()
    memo = Memo(clock)
    outcomes: Iterator[tuple[str, bool] | Exception] = iter(
        [("valid", True), RuntimeError("node3 did not answer")]
    )

    async def compute() -> tuple[str, bool]:
        outcome = next(outcomes, LookupError("asked again"))
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    assert await memo.get("k", 30.0, compute) == ("valid", None)
    clock.now += 28.0
    async with anyio.create_task_group() as tg:
        assert await memo.get("k", 30.0, compute, aside=tg.start_soon) == ("valid", 28.0)
    # The renewal raised (and nobody saw it): the kept value lasts its time.
    assert await memo.get("k", 30.0, compute) == ("valid", 28.0)
    clock.now += 3.0
    with pytest.raises(LookupError):
        await memo.get("k", 30.0, compute)
