"""Several masters on one shared store, in process: one leads, the others serve the API
from the store; a killed leader is replaced and its in-flight job recovered; a former
leader's writes are refused."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Iterator

import anyio
import pytest

from extjobs.engine.configmgr import ConfigManager
from extjobs.engine.leadership import Leadership
from extjobs.engine.queue import JobQueue
from extjobs.engine.standby import Master, StandbyQueue, serve_master
from extjobs.errors import FencedError
from extjobs.model.config import Config
from extjobs.model.jobs import Job, LogEntry, LogKind
from extjobs.model.journal import Entry
from extjobs.model.opcodes import OpClusterInit, OpNodeAdd, OpTestDelay
from extjobs.model.requests import JobRequest
from extjobs.model.states import JobStatus
from extjobs.model.steps import PlainCommand
from extjobs.store.postgres import PostgresStore
from extjobs.store.shared import SharedStore
from extjobs.store.shared_memory import SharedMemory
from extjobs.testing import Call, ScriptedRunner
from tests.lus.scenario import PROVIDERS, create_op

TTL = 0.6


OpenHandle = Callable[[], SharedStore]


class InProcessMaster:
    """One master: an unfenced handle for its API, a fenced one for its queue."""

    def __init__(
        self, name: str, open_handle: OpenHandle, runner: ScriptedRunner, options: Config
    ) -> None:
        self.name = name
        self.runner = runner
        self.options = options
        self.scope = anyio.CancelScope()
        self.api_store = open_handle()
        self.leader_store = open_handle()
        self.leadership = Leadership(self.api_store, self.name, f"mem:{self.name}", ttl=TTL)
        self.master = Master(StandbyQueue(self.api_store), self.name, self.api_store)

    def open_queue(self, epoch: int) -> JobQueue:
        self.leader_store.set_fence(epoch)
        store = self.leader_store
        return JobQueue(
            store, ConfigManager(store), self.runner, self.options, leadership=self.leadership
        )

    async def run(self) -> None:
        with self.scope:
            await serve_master(self.master, self.leadership, self.open_queue)

    async def wait(self, job_id: int, timeout: float = 10) -> Job:
        with anyio.fail_after(timeout):
            while True:
                job, _ = await self.master.wait_for_change(job_id, 1 << 40, 1.0)
                if job.status.finalized:
                    return job

    def log(self, job_id: int) -> list[LogEntry]:
        return self.master.log_since(job_id)


@pytest.fixture(
    params=[
        pytest.param("memory", id="memory"),
        pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
    ]
)
def open_handle(request: pytest.FixtureRequest) -> Iterator[OpenHandle]:
    """How a master opens its handle on the shared store (one store per test)."""
    if request.param == "memory":
        yield SharedMemory().open
        return
    url = request.getfixturevalue("pg_url")
    opened: list[PostgresStore] = []

    def open_postgres() -> SharedStore:
        opened.append(PostgresStore(url))
        return opened[-1]

    yield open_postgres
    for store in opened:
        store.close()


@contextlib.asynccontextmanager
async def masters(open_handle: OpenHandle, count: int = 2) -> AsyncIterator[list[InProcessMaster]]:
    runner = ScriptedRunner(PROVIDERS)
    options = Config()
    group = [InProcessMaster(f"m{i + 1}", open_handle, runner, options) for i in range(count)]
    async with anyio.create_task_group() as tg:
        tg.start_soon(group[0].run)
        await leads(group[0])
        for m in group[1:]:
            tg.start_soon(m.run)
        yield group
        tg.cancel_scope.cancel()


async def leads(m: InProcessMaster, timeout: float = 5) -> None:
    with anyio.fail_after(timeout):
        while not m.master.leads:  # noqa: ASYNC110 - the switch has no event of its own
            await anyio.sleep(0.01)


def submit(master: InProcessMaster, *ops: object) -> int:
    [job_id] = master.master.submit([JobRequest(ops=ops)])  # type: ignore[arg-type]
    return job_id


async def setup_cluster(m: InProcessMaster) -> None:
    for op in (
        OpClusterInit(cluster_name="ha"),
        *(OpNodeAdd(node_name=f"node{i}", accept_new_host_key=True) for i in (1, 2, 3)),
    ):
        job = await m.wait(submit(m, op))
        assert job.status is JobStatus.SUCCESS, job.ops[0].error


async def test_one_leads_and_a_standby_queues_and_follows_a_job_to_its_end(
    open_handle: OpenHandle,
) -> None:
    async with masters(open_handle, 3) as (m1, m2, m3):
        assert m1.master.leads
        assert not m2.master.leads
        assert not m3.master.leads
        await setup_cluster(m2)  # submitted to a standby, run by the leader
        job_id = submit(m3, OpTestDelay(duration=0, on_nodes=("node1",)))
        job = await m2.wait(job_id)
        assert job.status is JobStatus.SUCCESS
        assert [c.node for c in m1.runner.select(kind="command", node="node1")]
        lease, seen = m3.master.masters()
        assert lease is not None
        assert (lease.holder, lease.epoch) == ("m1", 1)
        assert {m.name for m in seen} == {"m1", "m2", "m3"}
        assert m2.master.config.cluster is not None


async def test_a_killed_leader_is_replaced_and_its_add_is_recovered(
    open_handle: OpenHandle,
) -> None:
    async with masters(open_handle, 2) as (m1, m2):
        await setup_cluster(m1)
        killed = anyio.Event()

        def kill_the_leader(call: Call) -> None:
            m1.scope.cancel()  # like SIGKILL: no step-down, the lease just runs out
            killed.set()

        m1.runner.on(kind="provider", action="create", disk=1, handler=kill_the_leader, times=1)
        job_id = submit(m2, create_op("db", disks=2))
        with anyio.fail_after(5):
            await killed.wait()
        job = await m2.wait(job_id, timeout=15)
        log = [e.message for e in m2.log(job_id)]
        assert m2.master.leads, (job.status, log)
        lease, _ = m2.master.masters()
        assert lease is not None
        assert (lease.holder, lease.epoch) == ("m2", 2)
        assert job.status is JobStatus.ERROR, log
        assert any("add of db interrupted" in m for m in log), log
        assert any(e.kind is LogKind.RECOVERY for e in m2.log(job_id))
        assert m1.runner.storage.volumes == {}
        assert m1.runner.storage.attached_anywhere() == {}


async def test_a_former_leader_can_write_nothing(open_handle: OpenHandle) -> None:
    a, b = open_handle(), open_handle()
    lease = a.acquire_lease("a", 0.05)
    assert lease is not None
    assert lease.epoch == 1
    assert b.acquire_lease("b", 0.05) is None
    a.set_fence(1)
    a.save_jobs([])  # still the leader: writes pass
    await anyio.sleep(0.1)  # a paused past its lease
    taken = b.acquire_lease("b", 5)
    assert taken is not None
    assert taken.epoch == 2
    with pytest.raises(FencedError, match="epoch 2"):
        a.save_jobs([])
    with pytest.raises(FencedError):
        a.journal_start(1, 0, 1, "node1", "create disk0", Entry(PlainCommand()))
    assert b.load_journal(1) == []
    assert a.renew_lease("a", 1, 5) is None
    leadership = Leadership(a, "a", "mem:a", ttl=0.05)
    leadership.epoch, leadership._act_until = 1, 0.0
    assert not leadership.may_act()
