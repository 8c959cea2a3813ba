"""The shared, single-flight results of :class:`extjobs.engine.memo.Memo` (a provider's
validity in a node group, shared between instance adds)."""

from __future__ import annotations

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
