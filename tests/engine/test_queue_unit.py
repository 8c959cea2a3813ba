"""Queue decisions that need no node: aging of priorities, dependency outcomes."""

from __future__ import annotations

from pathlib import Path

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
