"""The durable job queue: submit, cancel, watch, archive — and the dispatcher.

The engine is cut along its concepts:

* :mod:`.book` — the jobs in memory, written through to the store, and their change
  events (every change decided synchronously, stored, then announced);
* :mod:`.scheduler` — pure verdicts: dependencies (ready, wait, fail), effective
  priority with aging, which runnable jobs start first;
* :mod:`.processor` — one job's opcodes: locks → check → exec → compensate, or
  recover after a restart;
* :mod:`.recovery` — what a restarted daemon does with the jobs it finds;
* this module — the queue's public operations and the dispatcher (:meth:`JobQueue.serve`),
  the single owner of the worker tasks: on each wake-up it asks the scheduler, acts on
  its verdicts, and starts a worker for each picked job, up to ``max_running``.

When the store refuses writes (disk full, I/O error), nothing here dies: a submission
is refused with the store's error (the API answers 503), a job that cannot record its
progress stops where it is and is marked for recovery, the condition is logged once,
and the dispatcher tries again every :attr:`JobQueue.store_retry` seconds; once writes
succeed, the interrupted jobs are recovered as after a restart.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

import anyio
import attrs
from anyio.abc import TaskGroup, TaskStatus

from extjobs.engine.book import JobBook, is_active
from extjobs.engine.configmgr import ConfigManager
from extjobs.engine.context import Services
from extjobs.engine.leadership import Leadership
from extjobs.engine.locks import LockManager
from extjobs.engine.memo import Memo
from extjobs.engine.metrics import Metrics
from extjobs.engine.processor import Processor
from extjobs.engine.purge import purge_old
from extjobs.engine.scheduler import Fail, Wait, dependency_verdict, pick
from extjobs.engine.submission import build_jobs
from extjobs.engine.watcher import Observed, Watcher
from extjobs.engine.writer import SyncWriter, Writer
from extjobs.errors import ExtJobsError, QueueFullError, StateError, StoreError
from extjobs.model.cluster import ClusterConfig
from extjobs.model.config import Config
from extjobs.model.jobquery import JobQuery
from extjobs.model.jobs import Job, LogEntry, LogKind
from extjobs.model.masters import Request, RequestKind
from extjobs.model.requests import JobRequest
from extjobs.model.states import JobStatus, OpStatus
from extjobs.nodes.runner import NodeRunner
from extjobs.store.base import Store
from extjobs.store.shared import SharedStore

log = logging.getLogger("extjobs.queue")

#: Default seconds between attempts while the store refuses writes.
STORE_RETRY = 5.0
#: Seconds between looks for requests other masters left (several masters only).
REQUEST_POLL = 0.1


class JobQueue:
    """The queue of one daemon (see the module docstring)."""

    def __init__(
        self,
        store: Store,
        configmgr: ConfigManager,
        runner: NodeRunner,
        options: Config,
        locks: LockManager | None = None,
        *,
        leadership: Leadership | None = None,
        writer: Writer | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.options = options
        self.locks = locks or LockManager()
        self.memo = Memo()
        #: With several masters: this master's election (it runs the queue while it
        #: leads); ``None`` with one master.
        self.leadership = leadership
        may_act = leadership.may_act if leadership is not None else (lambda: True)
        #: What the engine writes through (see :mod:`extjobs.engine.writer`); the
        #: configuration manager must write through the same one, in the same order.
        self.writer: Writer = writer or SyncWriter(store)
        self._services = Services(
            configmgr,
            runner,
            options,
            self.memo,
            store,
            self.writer,
            may_act,
            metrics=metrics,
            submit=self.submit,
        )
        self._store = store
        self._wakeup = anyio.Event()
        self._book = JobBook(store, self._wakeup_soon, self.writer, metrics=metrics)
        self._processor = Processor(self._book, self.locks, self._services)
        self._workers: dict[int, anyio.CancelScope] = {}
        self._cancel_requested: set[int] = set()
        self._submitted = 0
        #: Why the store last refused a write, while it does (None: writes succeed).
        self.store_trouble: StoreError | None = None
        #: Seconds between attempts to go on while the store refuses writes.
        self.store_retry = STORE_RETRY
        self._book.load()
        #: The watcher (:mod:`extjobs.engine.watcher`): it runs while the queue serves.
        self.watcher = Watcher(self._services, self._book, self.submit)

    def _wakeup_soon(self) -> None:
        self._wakeup.set()

    # -- read-only views -----------------------------------------------------------------

    @property
    def config(self) -> ClusterConfig:
        """The cluster configuration as the store holds it (a frozen snapshot)."""
        return self._services.configmgr.shown

    @property
    def book(self) -> JobBook:
        """The jobs held in memory (read by the metrics at scrape time)."""
        return self._book

    def get(self, job_id: int) -> Job:
        """The job; raises NotFoundError."""
        return self._book.get(job_id)

    def list_jobs(self, *, statuses: Sequence[JobStatus] = (), archived: bool = False) -> list[Job]:
        jobs = self._store.load_jobs(include_archived=True) if archived else list(self._book.held())
        if statuses:
            jobs = [j for j in jobs if j.status in statuses]
        return sorted(jobs, key=lambda j: j.id)

    def search_jobs(self, query: JobQuery) -> list[Job]:
        """A page of a job search, from the store's index: what it holds is what has
        been shown (the book changes its shown view only once a write committed)."""
        return self._store.search_jobs(query)

    def log_since(self, job_id: int, since: int = 0) -> list[LogEntry]:
        self.get(job_id)
        return self._store.load_log(job_id, since)

    async def wait_for_change(
        self, job_id: int, since: int, timeout: float
    ) -> tuple[Job, list[LogEntry]]:
        """As soon as the job has log entries after ``since`` or has ended (bounded by
        ``timeout``): the job and those entries."""
        return await self._book.wait_for_change(job_id, since, timeout)

    def statistics(self) -> dict[str, Any]:
        trouble = self._trouble()
        return {
            "jobs": self._book.counts(),
            "running_workers": len(self._workers),
            "max_running": self.options.queue.max_running,
            "submitted": self._submitted,
            "finished": self._book.finished,
            "locks": self.locks.statistics(),
            "memo": self.memo.statistics(),
            "store_trouble": None if trouble is None else trouble.message,
            "writer": self.writer.statistics(),
        }

    def runner_statistics(self) -> dict[str, Any]:
        stats: dict[str, Any] = self._services.runner.statistics()
        return stats

    def watcher_status(self) -> dict[str, Any]:
        return self.watcher.status()

    def observed(self) -> dict[str, dict[str, Any]]:
        """The watcher's last observation of every instance, with its age."""
        return self.watcher.observed()

    def observations(self) -> dict[str, Observed]:
        """The watcher's last observation of every instance, as it was made."""
        return self.watcher.observations()

    async def wait_observation(self, timeout: float) -> bool:
        """Wait for a fresh observation (at most ``timeout`` seconds); whether one came."""
        return await self.watcher.wait_observation(timeout)

    def _trouble(self) -> StoreError | None:
        """Why the store refuses writes at the moment (None: it does not)."""
        return self.store_trouble or self.writer.trouble

    # -- changing ----------------------------------------------------------------------

    async def flush(self) -> None:
        """Return once every change made so far is in the store (what the API waits for
        before it answers a submission, a cancel or an archive)."""
        await self.writer.flush()

    def submit(self, batch: Sequence[JobRequest]) -> list[int]:
        """Queue a batch of jobs atomically; returns their ids in order.

        Raises QueueFullError when the queue would exceed ``max_queued`` and InputError
        for a relative dependency outside the batch; nothing is queued then.
        """
        trouble = self._trouble()
        if trouble is not None:
            raise StoreError(f"submission refused: {trouble.message}", **trouble.fields)
        pending = self._book.pending
        limit = self.options.queue.max_queued
        if pending + len(batch) > limit:
            raise QueueFullError(
                f"the queue is full: {pending} unfinished jobs, limit {limit}; "
                "retry later or raise queue.max_queued",
                pending=pending,
                limit=limit,
            )
        ids = self._store.next_job_ids(len(batch))
        # The whole batch and each job's first log line are one transaction.
        jobs, entries = build_jobs(batch, ids, time.time(), self.config)
        self._book.add(jobs, entries)
        self._submitted += len(jobs)
        return [j.id for j in jobs]

    def cancel(self, job_id: int) -> Job:
        """Cancel a job: at once when it has not started, else kill and compensate.

        Raises StateError for a job that already ended.
        """
        book = self._book
        job = book.decided(job_id)
        if job.status.finalized:
            raise StateError(
                f"job {job_id} already ended ({job.status.value}); nothing to cancel", job=job_id
            )
        if job.status is JobStatus.CANCELING:
            return job
        scope = self._workers.get(job_id)
        if scope is None:
            for op in job.ops:
                if not op.status.finalized:
                    book.set_op(job_id, op.index, OpStatus.CANCELED)
            book.append_log(job_id, "job canceled before it ran", kind=LogKind.STATUS)
            self._cancel_requested.discard(job_id)
            return book[job_id]
        self._cancel_requested.add(job_id)
        for op in job.ops:
            if op.status is OpStatus.RUNNING:
                book.set_op(job_id, op.index, OpStatus.CANCELING)
        book.append_log(job_id, "cancel requested", kind=LogKind.STATUS)
        scope.cancel()
        return book[job_id]

    def archive(self, job_id: int) -> Job:
        """Archive a finished job (kept in the store, no longer in listings)."""
        job = self._book.decided(job_id)
        if not job.status.finalized:
            raise StateError(
                f"job {job_id} is {job.status.value}; only finished jobs can be archived",
                job=job_id,
            )
        if job.archived:
            return job
        job = attrs.evolve(job, archived=True)
        self._book.forget(job)
        return job

    def archive_old(self, now: float | None = None) -> list[int]:
        now = time.time() if now is None else now
        cutoff = now - self.options.queue.archive_after
        old = [
            j.id
            for j in self._book.held()
            if j.status.finalized and j.ended is not None and j.ended < cutoff
        ]
        for job_id in old:
            self.archive(job_id)
        return old

    def purge_old(self, now: float | None = None) -> int:
        """Delete archived jobs older than ``queue.purge_after`` (see
        :mod:`extjobs.engine.purge`); how many were deleted."""
        now = time.time() if now is None else now
        return purge_old(self._store, now=now, purge_after=self.options.queue.purge_after)

    # -- dispatching ----------------------------------------------------------------

    def _runnable(self) -> list[Job]:
        """The jobs that may start now; acts on the scheduler's verdicts on the way
        (fails a job whose dependency failed, notes what a waiting one waits for)."""
        book = self._book
        ready = []
        for job in book.unfinished():
            if job.id in self._workers:
                continue
            if job.id not in book.recovering and not is_active(job):
                continue
            verdict = dependency_verdict(job, book.find)
            if isinstance(verdict, Fail):
                book.fail_job(job.id, verdict.reason, "dependency")
            elif isinstance(verdict, Wait):
                first = next(op for op in job.ops if not op.status.finalized)
                if first.status is OpStatus.QUEUED:
                    book.set_op(job.id, first.index, OpStatus.WAITING)
                book.set_waiting(job.id, f"dependency: {verdict.reason}")
            else:
                ready.append(book[job.id])
        return ready

    def _dispatch(self, tg: TaskGroup) -> None:
        free = self.options.queue.max_running - len(self._workers)
        if free <= 0:
            return
        chosen = pick(
            self._runnable(),
            now=time.time(),
            aging_interval=self.options.queue.aging_interval,
            recovering=self._book.recovering,
            limit=free,
        )
        for job in chosen:
            scope = anyio.CancelScope()
            self._workers[job.id] = scope
            tg.start_soon(self._work, job.id, scope)

    async def _serve_requests(self) -> None:
        """Act on what masters that do not lead asked for (several masters only), every
        :data:`REQUEST_POLL` seconds; the store is asked off the event loop."""
        if self.leadership is None:
            return
        while True:
            try:
                found = await self.writer.call(_take_requests)
                for request, job, serial in found:
                    self._act_on(request, job, serial)
            except StoreError as exc:
                self._store_failed(exc, "taking requests")
            await anyio.sleep(REQUEST_POLL)

    def _act_on(self, request: Request, job: Job | None, serial: int) -> None:
        try:
            if request.kind is RequestKind.SUBMITTED:
                if job is not None:
                    self._book.adopt(job, serial)
            elif request.kind is RequestKind.CANCEL:
                self.cancel(request.job_id)
            elif request.kind is RequestKind.ARCHIVE:
                self.archive(request.job_id)
        except StoreError:
            raise
        except ExtJobsError as exc:
            log.warning("request %s of job %s: %s", request.kind, request.job_id, exc.message)

    def _store_failed(self, exc: StoreError, what: str) -> None:
        """Note that the store refused a write; logged once per episode."""
        if self.store_trouble is None:
            log.error(
                "the store refuses writes (%s) while %s; jobs that cannot record their "
                "progress stop and will be recovered, retrying every %gs",
                exc.message,
                what,
                self.store_retry,
            )
        self.store_trouble = exc

    def _store_works(self) -> None:
        if self.store_trouble is not None:
            log.warning("the store accepts writes again; recovering interrupted jobs")
            self.store_trouble = None

    async def serve(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Run the writer and the dispatcher, and own every worker, until cancelled."""
        async with anyio.create_task_group() as tg:
            await tg.start(self.writer.serve)
            tg.start_soon(self._serve_archiver)
            tg.start_soon(self._serve_requests)
            await tg.start(self.watcher.serve)
            task_status.started()
            while True:
                try:
                    self._dispatch(tg)
                except StoreError as exc:
                    self._store_failed(exc, "dispatching")
                wait = self.options.queue.aging_interval
                if self.store_trouble is not None:
                    wait = min(wait, self.store_retry)
                with anyio.move_on_after(wait):
                    await self._wakeup.wait()
                self._wakeup = anyio.Event()

    async def _serve_archiver(self) -> None:
        options = self.options.queue
        # A purge at most every purge_after / 30 (daily by default): each one that deletes
        # journal records keeps a ledger checkpoint until its host job is purged.
        purge_every = max(options.purge_after / 30, 60.0)
        next_purge = 0.0
        while True:
            try:
                self.archive_old()
                if options.purge_after > 0 and time.monotonic() >= next_purge:
                    # The purge reads the journal for its ledger: all of it.
                    await self.writer.flush()
                    self.purge_old()
                    next_purge = time.monotonic() + purge_every
            except StoreError as exc:
                self._store_failed(exc, "archiving")
            await anyio.sleep(max(min(options.archive_after / 10, 3600.0), 1.0))

    # -- the worker -------------------------------------------------------------------

    async def _work(self, job_id: int, scope: anyio.CancelScope) -> None:
        book = self._book
        interrupted = False
        try:
            with scope:
                await self._processor.run_job(job_id, lambda: job_id in self._cancel_requested)
            if scope.cancelled_caught or job_id in self._cancel_requested:
                self._finish_canceled(job_id)
            if book[job_id].status.finalized:
                self._store_works()
        except StoreError as exc:
            interrupted = True
            self._store_failed(exc, f"job {job_id} ran")
        except Exception as exc:
            log.exception("job %s: internal error", job_id)
            try:
                self._fail_internal(job_id, exc)
            except StoreError as store_exc:
                interrupted = True
                self._store_failed(store_exc, f"job {job_id} failed")
        finally:
            self._workers.pop(job_id, None)
            if interrupted:
                # What it did is in the journal; it is recovered as after a restart
                # (its running opcode goes to its LU's recover) once writes succeed.
                book.recovering.add(job_id)
            else:
                book.recovering.discard(job_id)
                self._cancel_requested.discard(job_id)
            self._wakeup.set()

    def _fail_internal(self, job_id: int, exc: Exception) -> None:
        book = self._book
        for op in book[job_id].ops:
            if not op.status.finalized:
                status = OpStatus.ERROR
                if op.status is OpStatus.CANCELING:
                    status = OpStatus.CANCELED
                book.set_op(
                    job_id,
                    op.index,
                    status,
                    error={"kind": "internal", "message": f"internal error: {exc!r}"},
                )

    def _finish_canceled(self, job_id: int) -> None:
        book = self._book
        for op in book[job_id].ops:
            if op.status.finalized:
                continue
            if op.status is OpStatus.RUNNING:
                book.set_op(job_id, op.index, OpStatus.CANCELING)
            book.set_op(job_id, op.index, OpStatus.CANCELED)
        book.append_log(job_id, "job canceled", kind=LogKind.STATUS)


def _take_requests(store: Store) -> list[tuple[Request, Job | None, int]]:
    """The requests left for the leader (taken: deleted), each submitted job with its last
    log serial (in the writer's thread, see :meth:`JobQueue._serve_requests`)."""
    assert isinstance(store, SharedStore)
    found: list[tuple[Request, Job | None, int]] = []
    for request in store.take_requests():
        job, serial = None, 0
        if request.kind is RequestKind.SUBMITTED:
            job = store.load_job(request.job_id)
            serial = store.last_serial(request.job_id)
        found.append((request, job, serial))
    return found
