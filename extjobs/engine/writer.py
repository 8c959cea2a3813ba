"""How the engine's decisions reach the store: written at once, or grouped and in order.

The engine decides in synchronous code and hands the writes of each decision (a
:class:`~extjobs.store.base.WriteBatch`) to a writer, with a callback to run once they
have committed — the book announces a status there. Two writers:

* :class:`SyncWriter` (SQLite, memory: a store on this machine) writes each batch
  before :meth:`~SyncWriter.write` returns; a write the store refuses raises, and the
  caller changes nothing.
* :class:`GroupWriter` (PostgreSQL: a store a round trip away) only queues. One task
  commits everything queued since its last commit as one transaction (group commit), in
  a worker thread on a connection of its own, so the event loop never waits for the
  database. Commits follow the order of the decisions, so the store always holds a
  prefix of them, and a crash loses at most a suffix that nobody was told of.

Only the durability points wait: :meth:`~GroupWriter.journal_start` returns a step's
record id once the batch holding it committed (no step starts before), and
:meth:`~GroupWriter.flush` waits for everything written so far (a submission is
answered after it). Callbacks run once their batch committed: nothing is announced
before it is durable.

A commit that fails is tried again — the same batch, merged with nothing, written with
``again=True`` since whether it committed is unknown — every :attr:`GroupWriter.retry`
seconds until it commits. Meanwhile :attr:`~GroupWriter.trouble` says why (the queue
refuses submissions then), and no step starts, since its journal start waits. A
:class:`~extjobs.errors.FencedError` is final: this master no longer leads; every waiter
gets the error and the writer stops. When the writer is stopped (shutdown, or the
master deposed), what it holds is committed first if that takes less than
:data:`DRAIN` seconds — through the fence, so never after another master took over.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable
from typing import Protocol, TypeVar

import anyio
import anyio.lowlevel
import attrs
from anyio.abc import TaskStatus

from extjobs.errors import FencedError, StoreError
from extjobs.store.base import JournalStart, Store, WriteBatch

log = logging.getLogger("extjobs.writer")

#: Seconds between attempts to commit while the store refuses.
RETRY = 0.5
#: Seconds a stopping writer gives itself to commit what it holds.
DRAIN = 5.0
#: Turns of the event loop the writer lets pass before it takes what was queued.
GATHER_TURNS = 2

#: Run once a batch has committed.
OnCommit = Callable[[], None]

T = TypeVar("T")


class Writer(Protocol):
    """What the engine writes through (see the module docstring)."""

    @property
    def trouble(self) -> StoreError | None:
        """Why commits fail at the moment (None: they succeed)."""
        ...

    def write(self, batch: WriteBatch, on_commit: OnCommit | None = None) -> None: ...
    async def journal_start(self, start: JournalStart) -> int: ...
    async def flush(self) -> None: ...
    async def call(self, read: Callable[[Store], T]) -> T:
        """``read(store)`` on the writer's store, off the event loop where the store is
        a round trip away (a write through it is fenced like the writer's)."""
        ...

    def statistics(self) -> dict[str, object]: ...
    async def serve(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None: ...


class SyncWriter:
    """Each batch committed before :meth:`write` returns (see the module docstring)."""

    trouble: StoreError | None = None

    def __init__(self, store: Store) -> None:
        self._store = store

    def write(self, batch: WriteBatch, on_commit: OnCommit | None = None) -> None:
        self._store.write(batch)
        if on_commit is not None:
            on_commit()

    async def journal_start(self, start: JournalStart) -> int:
        return self._store.write(WriteBatch(starts=[start]))[0]

    async def flush(self) -> None:
        return None

    async def call(self, read: Callable[[Store], T]) -> T:
        return read(self._store)

    def statistics(self) -> dict[str, object]:
        return {"group_commit": False}

    async def serve(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        await anyio.sleep_forever()


@attrs.define(eq=False)
class _Round:
    """What one commit writes, who waits for it, and how it went."""

    batch: WriteBatch = attrs.Factory(WriteBatch)
    callbacks: list[OnCommit] = attrs.Factory(list)
    done: anyio.Event = attrs.Factory(anyio.Event)
    ids: list[int] = attrs.Factory(list)
    error: StoreError | None = None
    #: A write of it was started (its outcome may be unknown).
    tried: bool = False

    def __bool__(self) -> bool:
        return bool(self.batch) or bool(self.callbacks)

    def end(self, error: StoreError | None = None) -> None:
        self.error = error
        self.done.set()

    async def wait(self) -> None:
        await self.done.wait()
        if self.error is not None:
            raise self.error


class GroupWriter:
    """Group commit in order, off the event loop (see the module docstring).

    ``store`` is this writer's own handle: it is used from a worker thread, and closed
    when :meth:`serve` ends — after a write still running in its thread.
    """

    def __init__(self, store: Store, *, retry: float = RETRY, drain: float = DRAIN) -> None:
        self._store = store
        self.retry = retry
        self.drain = drain
        self._open = _Round()
        self._writing: _Round | None = None
        self._ready = anyio.Event()
        self._stopped: StoreError | None = None
        self.trouble: StoreError | None = None
        #: Transactions committed, and batches handed to :meth:`write` (statistics).
        self.commits = 0
        self.batches = 0
        self._lock = threading.Lock()
        self._store_lock = threading.Lock()
        self._in_thread = 0
        self._close_asked = False

    # -- what the engine calls --------------------------------------------------------

    def write(self, batch: WriteBatch, on_commit: OnCommit | None = None) -> None:
        """Queue ``batch`` after everything written before; ``on_commit`` runs once it
        committed. Raises the writer's final error once it has stopped."""
        if self._stopped is not None:
            raise self._stopped
        self._open.batch.merge(batch)
        if on_commit is not None:
            self._open.callbacks.append(on_commit)
        self.batches += 1
        self._ready.set()

    async def journal_start(self, start: JournalStart) -> int:
        """Journal a step as started; its record id once that has committed."""
        if self._stopped is not None:
            raise self._stopped
        round_ = self._open
        index = len(round_.batch.starts)
        self.write(WriteBatch(starts=[start]))
        await round_.wait()
        return round_.ids[index]

    async def flush(self) -> None:
        """Return once everything written before this call has committed (raises the
        error of a write that never will)."""
        if self._open:
            await self._open.wait()
        elif self._writing is not None:
            await self._writing.wait()
        elif self._stopped is not None:
            raise self._stopped

    async def call(self, read: Callable[[Store], T]) -> T:
        """``read(store)`` in a worker thread on this writer's handle (its calls and the
        commits take turns on the connection)."""
        return await anyio.to_thread.run_sync(
            functools.partial(self._in_thread_do, read), abandon_on_cancel=True
        )

    def statistics(self) -> dict[str, object]:
        return {
            "group_commit": True,
            "commits": self.commits,
            "batches": self.batches,
            "trouble": None if self.trouble is None else self.trouble.message,
        }

    # -- the task that commits --------------------------------------------------------

    async def serve(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Commit rounds until cancelled, then drain (see the module docstring)."""
        task_status.started()
        try:
            while self._stopped is None:
                await self._ready.wait()
                # Let the tasks that are ready run first: what they decide in this turn
                # of the event loop joins the same transaction.
                for _ in range(GATHER_TURNS):
                    await anyio.lowlevel.checkpoint()
                self._ready = anyio.Event()
                round_, self._open = self._open, _Round()
                if round_:
                    self._writing = round_
                    await self._commit(round_)
                    self._writing = None
        finally:
            with anyio.CancelScope(shield=True), anyio.move_on_after(self.drain):
                await self._drain()
            self._stop(StoreError("the store writer stopped before this write committed"))
            self.close()

    async def _drain(self) -> None:
        for round_ in (self._writing, self._open):
            if round_ is not None and round_ and not round_.done.is_set():
                await self._commit(round_, attempts=1)

    async def _commit(self, round_: _Round, *, attempts: int | None = None) -> None:
        while self._stopped is None:
            again, round_.tried = round_.tried, True
            try:
                round_.ids = await anyio.to_thread.run_sync(
                    functools.partial(self._write_in_thread, round_.batch, again),
                    abandon_on_cancel=True,
                )
            except FencedError as exc:
                log.warning("store writes refused: %s; the writer stops", exc.message)
                self._stop(exc)
                return
            except StoreError as exc:
                if self.trouble is None:
                    log.error(
                        "the store refuses writes (%s); retrying every %gs", exc.message, self.retry
                    )
                self.trouble = exc
                if attempts is not None:
                    attempts -= 1
                    if attempts <= 0:
                        return
                await anyio.sleep(self.retry)
                continue
            if self.trouble is not None:
                log.warning("the store accepts writes again")
                self.trouble = None
            self.commits += 1
            for callback in round_.callbacks:
                try:
                    callback()
                except Exception:  # pragma: no cover - callbacks only set events
                    log.exception("after a commit")
            round_.end()
            return

    def _stop(self, error: StoreError) -> None:
        """No more writes: every waiter gets ``error``."""
        if self._stopped is None:
            self._stopped = error
        for round_ in (self._writing, self._open):
            if round_ is not None and not round_.done.is_set():
                round_.end(self._stopped)

    # -- the thread -------------------------------------------------------------------

    def _write_in_thread(self, batch: WriteBatch, again: bool) -> list[int]:
        return self._in_thread_do(lambda store: store.write(batch, again=again))

    def _in_thread_do(self, work: Callable[[Store], T]) -> T:
        with self._lock:
            if self._close_asked:
                raise StoreError("the store writer is closed")
            self._in_thread += 1
        try:
            # One thread at a time on the connection: a psycopg connection may be used
            # from several threads, but their transactions must not interleave.
            with self._store_lock:
                return work(self._store)
        finally:
            self._leave_thread()

    def _leave_thread(self) -> None:
        with self._lock:
            self._in_thread -= 1
            if self._close_asked and not self._in_thread:
                self._store.close()

    def close(self) -> None:
        """Close this writer's store handle (after a write still running in a thread)."""
        with self._lock:
            self._close_asked = True
            if not self._in_thread:
                self._store.close()
