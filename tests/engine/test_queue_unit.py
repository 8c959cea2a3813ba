"""Queue decisions that need no node: aging of priorities, dependency outcomes."""

from __future__ import annotations

from pathlib import Path

import anyio
import attrs
import pytest

from extjobs.engine.configmgr import ConfigManager
from extjobs.engine.queue import JobQueue
from extjobs.engine.scheduler import effective_priority, pick
from extjobs.errors import QueueFullError
from extjobs.model.config import Config, QueueOptions
from extjobs.model.opcodes import OpTestDelay
from extjobs.model.requests import JobRequest
from extjobs.nodes.ssh import SSHRunner
from extjobs.store.sqlite import SqliteStore


def make_queue(tmp_path: Path, **queue: float) -> JobQueue:
    config = Config(state_dir=tmp_path, queue=QueueOptions(**queue))  # type: ignore[arg-type]
    store = SqliteStore(tmp_path / "db.sqlite")
    return JobQueue(store, ConfigManager(store), SSHRunner(config.ssh), config)


def test_a_waiting_low_priority_job_ages_past_new_high_priority_ones(tmp_path: Path) -> None:
    queue = make_queue(tmp_path, aging_interval=10.0)
    [low] = queue.submit([JobRequest(ops=(OpTestDelay(),), priority=19)])
    [high] = queue.submit([JobRequest(ops=(OpTestDelay(),), priority=-20)])
    low_job, high_job = queue.get(low), queue.get(high)
    now = high_job.received
    # Fresh: the high-priority job goes first.
    assert effective_priority(high_job, now, 10.0) < effective_priority(low_job, now, 10.0)
    # The low one has waited 400 s (40 aging steps); a high one submitted just now has not.
    old_low = attrs.evolve(low_job, received=now - 400)
    assert effective_priority(old_low, now, 10.0) < effective_priority(high_job, now, 10.0)
    order = pick([high_job, old_low], now=now, aging_interval=10.0, recovering=(), limit=2)
    assert [j.id for j in order] == [low, high]


def test_queue_refuses_more_than_max_queued_and_keeps_nothing(tmp_path: Path) -> None:
    queue = make_queue(tmp_path, max_queued=2)
    queue.submit([JobRequest(ops=(OpTestDelay(),))])
    before = queue.list_jobs()
    with pytest.raises(QueueFullError, match="queue is full"):
        queue.submit([JobRequest(ops=(OpTestDelay(),)), JobRequest(ops=(OpTestDelay(),))])
    assert queue.list_jobs() == before


async def test_an_opcode_waits_only_when_a_lock_is_held(tmp_path: Path) -> None:
    """Free locks: ``queued → running`` in one write. A held one: ``waiting``, naming
    the holder, then ``running`` once it is released."""
    from extjobs.model.jobs import LogKind
    from extjobs.model.states import JobStatus
    from extjobs.testing.engine import open_engine

    config = Config(state_dir=tmp_path)
    async with open_engine(config, SSHRunner(config.ssh), store="memory") as engine:
        hold = OpTestDelay(duration=0.3, on_master=True, lock_instances=("a",))
        first = engine.submit(hold)
        second = engine.submit(hold)
        await engine.queue.flush()
        since = 0
        with anyio.fail_after(10):
            while engine.queue.get(second).status is not JobStatus.WAITING:
                _, entries = await engine.queue.wait_for_change(second, since, 5.0)
                since = max([since, *(e.serial for e in entries)])
        assert engine.queue.get(second).waiting_for == f"lock instance/a (held by job {first})"
        done = [await engine.wait(job_id, timeout=10) for job_id in (first, second)]
    assert [j.status for j in done] == [JobStatus.SUCCESS, JobStatus.SUCCESS]

    def statuses(job_id: int) -> list[str]:
        log = engine.log(job_id)
        return [
            e.data["status"] for e in log if e.kind is LogKind.STATUS and "status" in (e.data or {})
        ]

    assert statuses(first) == ["running", "success"]
    assert statuses(second) == ["waiting", "running", "success"]
    assert any(e.kind is LogKind.WAITING for e in engine.log(second))
