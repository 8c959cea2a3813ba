"""The group writer: decisions commit in order, many per transaction, off the event loop;
only the durability points wait; nothing is announced before it committed; a failed
commit is written again until it commits; a fenced one stops the writer."""

from __future__ import annotations

import threading
from typing import Any

import anyio
import pytest

from extjobs.engine.book import JobBook
from extjobs.engine.writer import GroupWriter
from extjobs.errors import FencedError, NotFoundError, StoreError
from extjobs.model.jobs import Job, LogEntry, LogKind, OpState
from extjobs.model.journal import Entry, StepStatus
from extjobs.model.remote import RemoteCommand
from extjobs.model.states import OpStatus
from extjobs.model.steps import PlainCommand
from extjobs.store.base import JournalEnd, JournalStart, WriteBatch
from extjobs.store.memory import MemoryStore


class GatedStore(MemoryStore):
    """A memory store whose commits run in the writer's thread and can be held back
    (``gate``), fail (``fail``: raise before applying; ``fail_after_commit``: apply, then
    raise as a connection lost during the commit would), and are counted."""

    def __init__(self) -> None:
        super().__init__()
        self.lock = threading.Lock()
        self.gate = threading.Event()
        self.gate.set()
        self.fail: StoreError | None = None
        self.fail_after_commit = 0
        self.transactions: list[tuple[WriteBatch, bool]] = []
        self.threads: set[int] = set()

    def write(self, batch: WriteBatch, *, again: bool = False) -> list[int]:
        if threading.current_thread() is threading.main_thread():
            raise AssertionError("a group writer must not commit on the event loop thread")
        self.threads.add(threading.get_ident())
        assert self.gate.wait(10)
        with self.lock:
            if self.fail is not None:
                raise self.fail
            ids = super().write(batch, again=again)
            self.transactions.append((batch, again))
            if self.fail_after_commit:
                self.fail_after_commit -= 1
                raise StoreError("store write failed: server closed the connection")
            return ids


def job(job_id: int, status: OpStatus = OpStatus.QUEUED) -> Job:
    return Job(id=job_id, ops=(OpState(0, {"OP_ID": "OP_TEST_DELAY"}, status=status),))


def entry(job_id: int, serial: int) -> LogEntry:
    return LogEntry(job_id, serial, float(serial), LogKind.MESSAGE, f"line {serial}", None)


def start(job_id: int, seq: int) -> JournalStart:
    command = RemoteCommand(argv=("/bin/true",), timeout=5)
    return JournalStart(job_id, 0, seq, "node1", f"step {seq}", Entry(PlainCommand(), command))


async def test_decisions_commit_in_order_many_per_transaction_and_announce_after() -> None:
    store = GatedStore()
    writer = GroupWriter(store)
    announced: list[int] = []
    async with anyio.create_task_group() as tg:
        await tg.start(writer.serve)
        store.gate.clear()
        writer.write(WriteBatch(jobs={1: job(1)}, log=[entry(1, 1)]), lambda: announced.append(1))
        await anyio.sleep(0.05)  # the writer took that batch and waits at the gate
        # Decided while the first commit is held: one later transaction for all of them.
        for n in range(2, 6):
            status = OpStatus.RUNNING if n % 2 else OpStatus.QUEUED
            writer.write(
                WriteBatch(jobs={1: job(1, status)}, log=[entry(1, n)]),
                lambda n=n: announced.append(n),  # type: ignore[misc]
            )
        assert announced == []
        assert store.load_job(1) is None
        store.gate.set()
        await writer.flush()
        assert announced == [1, 2, 3, 4, 5]
        assert len(store.transactions) == 2
        assert [e.serial for e in store.transactions[1][0].log] == [2, 3, 4, 5]
        # The last decision about job 1 is what the store holds.
        assert store.load_job(1) == job(1, OpStatus.RUNNING)
        assert [e.serial for e in store.load_log(1)] == [1, 2, 3, 4, 5]
        tg.cancel_scope.cancel()
    assert store.threads
    assert threading.main_thread().ident not in store.threads


async def test_a_journal_start_returns_its_id_once_committed_and_ends_follow_in_order() -> None:
    store = GatedStore()
    writer = GroupWriter(store)
    async with anyio.create_task_group() as tg:
        await tg.start(writer.serve)
        first = await writer.journal_start(start(1, 1))
        second, third = [0], [0]

        async def begin(seq: int, out: list[int]) -> None:
            out[0] = await writer.journal_start(start(1, seq))

        async with anyio.create_task_group() as steps:
            steps.start_soon(begin, 2, second)
            steps.start_soon(begin, 3, third)
        assert len({first, second[0], third[0]}) == 3
        writer.write(WriteBatch(ends=[JournalEnd(first, StepStatus.DONE, {"ok": 1}, 1.0)]))
        writer.write(WriteBatch(pgids=[(second[0], 4242)]))
        await writer.flush()
        records = {r.id: r for r in store.load_journal(1)}
        assert records[first].status is StepStatus.DONE
        assert records[second[0]].pgid == 4242
        assert records[third[0]].status is StepStatus.STARTED
        tg.cancel_scope.cancel()


async def test_a_failed_commit_is_written_again_until_it_commits_without_duplicates() -> None:
    store = GatedStore()
    writer = GroupWriter(store, retry=0.01)
    async with anyio.create_task_group() as tg:
        await tg.start(writer.serve)
        # The first attempt commits, then the connection is lost: outcome unknown.
        store.fail_after_commit = 1
        record = await writer.journal_start(start(7, 1))
        writer.write(WriteBatch(jobs={7: job(7)}, log=[entry(7, 1)]))
        await writer.flush()
        assert [again for _, again in store.transactions] == [False, True, False]
        assert [r.id for r in store.load_journal(7)] == [record]
        # The store refuses for a while: trouble is reported, then clears by itself.
        store.fail = StoreError("store write failed: could not connect to server")
        writer.write(WriteBatch(log=[entry(7, 2)]))
        with anyio.fail_after(5):
            while writer.trouble is None:  # noqa: ASYNC110 - no event for a failing commit
                await anyio.sleep(0.01)
        assert "could not connect" in writer.trouble.message
        store.fail = None
        await writer.flush()
        assert writer.trouble is None
        assert [e.serial for e in store.load_log(7)] == [1, 2]
        tg.cancel_scope.cancel()


async def test_a_fenced_commit_stops_the_writer_and_every_waiter_gets_the_error() -> None:
    store = GatedStore()
    writer = GroupWriter(store, retry=0.01)
    async with anyio.create_task_group() as tg:
        await tg.start(writer.serve)
        store.fail = FencedError("store write refused: the lease is at epoch 3", epoch=2)
        with pytest.raises(FencedError):
            await writer.journal_start(start(1, 1))
        with pytest.raises(FencedError):
            writer.write(WriteBatch(log=[entry(1, 1)]))
        with pytest.raises(FencedError):
            await writer.flush()
        tg.cancel_scope.cancel()
    assert store.transactions == []


async def test_a_stopping_writer_commits_what_it_holds_then_closes_its_store() -> None:
    store = GatedStore()
    writer = GroupWriter(store)
    async with anyio.create_task_group() as tg:
        await tg.start(writer.serve)
        store.gate.clear()
        writer.write(WriteBatch(jobs={1: job(1)}))
        await anyio.sleep(0.05)
        writer.write(WriteBatch(jobs={2: job(2)}))
        tg.cancel_scope.cancel()
        store.gate.set()
    assert {j.id for j in store.load_jobs()} == {1, 2}
    with pytest.raises(StoreError, match="closed"):
        MemoryStore.write(store, WriteBatch(jobs={3: job(3)}))
    with pytest.raises(StoreError):
        writer.write(WriteBatch(jobs={3: job(3)}))


async def test_the_book_shows_a_change_only_once_it_committed() -> None:
    store = GatedStore()
    writer = GroupWriter(store)
    woken: list[Any] = []
    book = JobBook(store, lambda: woken.append(1), writer)
    async with anyio.create_task_group() as tg:
        await tg.start(writer.serve)
        store.gate.clear()
        book.add([job(1)], [entry(1, 1)])
        # Decided (the dispatcher is woken and sees it), not shown (not in the store).
        assert woken
        assert book.decided(1) == job(1)
        with pytest.raises(NotFoundError):
            book.get(1)
        store.gate.set()
        await writer.flush()
        assert book.get(1) == job(1)
        store.gate.clear()
        book.set_op(1, 0, OpStatus.RUNNING)
        assert book.decided(1).status.value == "running"
        assert book.get(1).status.value == "queued"
        watcher = await_change(tg, book)
        await anyio.sleep(0.05)
        assert watcher == []  # a watcher is not told before the commit
        store.gate.set()
        with anyio.fail_after(5):
            while not watcher:  # noqa: ASYNC110 - the list is filled by the watcher task
                await anyio.sleep(0.01)
        job_seen, entries = watcher[0]
        assert job_seen.status.value == "running"
        assert [e.kind for e in entries] == [LogKind.STATUS]
        tg.cancel_scope.cancel()


def await_change(tg: Any, book: JobBook) -> list[tuple[Job, list[LogEntry]]]:
    out: list[tuple[Job, list[LogEntry]]] = []

    async def watch() -> None:
        out.append(await book.wait_for_change(1, 1, 10))

    tg.start_soon(watch)
    return out
