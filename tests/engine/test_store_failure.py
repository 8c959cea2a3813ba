"""A store that refuses writes (disk full) never kills the engine: submissions are
refused, the running job stops starting steps, and once writes succeed again it is
recovered as after a restart — with nothing leaked."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from extjobs.errors import StoreError
from extjobs.model.opcodes import OpTestDelay
from extjobs.model.requests import JobRequest
from extjobs.model.states import JobStatus
from extjobs.store.memory import MemoryStore
from extjobs.store.shared_memory import WRITES
from extjobs.testing import Call, open_test_cluster
from tests.lus.scenario import PROVIDERS, create_op


class FullDisk(MemoryStore):
    """An in-memory store whose writes fail while ``full`` is set, like SQLite's
    ``database or disk is full``."""

    def __init__(self) -> None:
        super().__init__()
        self.full = False
        self.refused = 0

    def __getattribute__(self, name: str) -> Any:
        attr = super().__getattribute__(name)
        if name in WRITES and super().__getattribute__("full"):

            def refuse(*_args: object, **_kwargs: object) -> None:
                self.refused += 1
                raise StoreError("store write failed: database or disk is full")

            return refuse
        return attr


async def test_a_full_store_stops_the_job_and_it_is_recovered_once_writes_succeed() -> None:
    store = FullDisk()
    async with open_test_cluster(3, providers=PROVIDERS, store=store) as cluster:
        cluster.engine.queue.store_retry = 0.05
        runner = cluster.runner

        def fill_the_disk(call: Call) -> None:
            store.full = True  # after this create ran, nothing more can be recorded

        runner.on(kind="provider", action="create", disk=1, handler=fill_the_disk, times=1)
        job_id = cluster.engine.submit(create_op("db", disks=2))
        with anyio.fail_after(10):
            while store.refused == 0:  # noqa: ASYNC110 - the store has no event to wait on
                await anyio.sleep(0.01)
        calls_when_full = runner.mark()
        # Submissions are refused with the store's reason; the engine keeps serving.
        with pytest.raises(StoreError, match="disk is full"):
            cluster.engine.queue.submit([JobRequest(ops=(OpTestDelay(),))])
        await anyio.sleep(0.3)  # several retries while the disk stays full
        assert cluster.engine.queue.statistics()["store_trouble"] is not None
        # No step started once its progress could not be journalled.
        assert runner.calls[calls_when_full:] == []
        assert cluster.engine.queue.get(job_id).status is JobStatus.RUNNING
        store.full = False
        job = await cluster.engine.wait(job_id, timeout=10)
    log = [e.message for e in cluster.engine.log(job_id)]
    # Recovered like an add interrupted by a crash: what it created is removed again.
    assert job.status is JobStatus.ERROR, log
    assert any("add of db interrupted" in m for m in log), log
    assert "db" not in cluster.config.instances
    assert runner.storage.volumes == {}
    assert runner.storage.attached_anywhere() == {}
    assert cluster.engine.queue.statistics()["store_trouble"] is None
