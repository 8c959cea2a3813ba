"""The job book: every job the daemon holds, its log serials, and change events.

Theory of operation: every change of a job (a status, a result, a log line) is decided
in a synchronous method and handed to the writer (:mod:`extjobs.engine.writer`). The
book keeps two views of each job: the *decided* one, which the engine acts on at once
(the dispatcher is woken through ``on_change``), and the *shown* one, which the API
reads and which changes only once the write has committed — then the job's change event
is set and replaced. So watchers are never told what the store does not hold.

With the synchronous writer (SQLite) both views change together, after the write; a
write the store refuses (:class:`~extjobs.errors.StoreError`: disk full, I/O error)
raises before anything changes in memory, and no serial is used up. With the group
writer (PostgreSQL) the decided view runs ahead by the writes in flight, which commit
in order.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import anyio
import attrs

from extjobs.engine.metrics import Metrics
from extjobs.engine.recovery import requeue_at_load
from extjobs.engine.writer import SyncWriter, Writer
from extjobs.errors import NotFoundError
from extjobs.model.jobs import Job, LogEntry, LogKind
from extjobs.model.states import JobStatus, OpStatus, advance_op
from extjobs.store.base import Store, WriteBatch


class JobBook:
    """Jobs in memory, written through to the store (see the module docstring)."""

    def __init__(
        self,
        store: Store,
        on_change: Callable[[], None],
        writer: Writer | None = None,
        *,
        metrics: Metrics | None = None,
    ) -> None:
        self.store = store
        self.metrics = metrics
        self.writer: Writer = writer or SyncWriter(store)
        self._on_change = on_change
        #: The decided view (what the engine acts on) and the shown one (committed).
        self._jobs: dict[int, Job] = {}
        self._shown: dict[int, Job] = {}
        # Ids of the jobs not yet finalized, in id order (a dict used as an ordered
        # set): the dispatcher and the queue-full check look only at these, so their
        # cost does not grow with the number of finished jobs kept in memory.
        self._unfinished: dict[int, None] = {}
        self._serial: dict[int, int] = {}
        self._changed: dict[int, anyio.Event] = {}
        self.finished = 0
        #: Jobs found running at load: their running opcodes go to recovery.
        self.recovering: set[int] = set()

    # -- loading ----------------------------------------------------------------------

    def load(self) -> None:
        """Read every job of the store; requeue what was waiting, note what was running."""
        changed: list[Job] = []
        for job in self.store.load_jobs():
            self._serial[job.id] = self.store.last_serial(job.id)
            new, recovering = requeue_at_load(job)
            if recovering:
                self.recovering.add(job.id)
            if new != job:
                changed.append(new)
            self._jobs[job.id] = new
            self._shown[job.id] = job
            if not new.status.finalized:
                self._unfinished[job.id] = None
        if changed:
            self.writer.write(
                WriteBatch(jobs={j.id: j for j in changed}), lambda: self._show(changed)
            )
        for job_id in sorted(self.recovering):
            self.append_log(
                job_id, "daemon restarted while this job ran; recovering", kind=LogKind.RECOVERY
            )

    # -- reading ----------------------------------------------------------------------

    def get(self, job_id: int) -> Job:
        """The job as the store holds it (the shown view); raises NotFoundError."""
        job = self._shown.get(job_id) or self.store.load_job(job_id)
        if job is None:
            raise NotFoundError(f"job {job_id} does not exist", job=job_id)
        return job

    def decided(self, job_id: int) -> Job:
        """The job as decided (the engine's view); raises NotFoundError."""
        job = self._jobs.get(job_id)
        return job if job is not None else self.get(job_id)

    def find(self, job_id: int) -> Job | None:
        """The decided job, or None."""
        try:
            return self.decided(job_id)
        except NotFoundError:
            return None

    def __getitem__(self, job_id: int) -> Job:
        return self._jobs[job_id]

    def held(self) -> Iterator[Job]:
        """Every job in memory (not archived), as shown."""
        return iter(list(self._shown.values()))

    def held_decided(self) -> Iterator[Job]:
        """Every job in memory (not archived), as decided."""
        return iter(list(self._jobs.values()))

    def unfinished(self) -> list[Job]:
        """The jobs not yet finalized, in id order."""
        return [self._jobs[i] for i in self._unfinished]

    @property
    def pending(self) -> int:
        return len(self._unfinished)

    def last_serial(self, job_id: int) -> int | None:
        return self._serial.get(job_id)

    # -- changing ---------------------------------------------------------------------

    def _notify(self, job_id: int) -> None:
        event = self._changed.pop(job_id, None)
        if event is not None:
            event.set()

    def _show(self, jobs: Sequence[Job]) -> None:
        """Committed: show ``jobs`` and tell their watchers."""
        for job in jobs:
            if job.archived:
                self._shown.pop(job.id, None)
            else:
                self._shown[job.id] = job
            self._notify(job.id)

    def _logged(self, log: Sequence[LogEntry]) -> None:
        for entry in log:
            self._serial[entry.job_id] = max(self._serial.get(entry.job_id, 0), entry.serial)

    def save(self, job: Job, log: Sequence[LogEntry] = ()) -> Job:
        """Write ``job`` together with its new ``log`` entries (one transaction) and
        keep it; it is shown once committed. With the synchronous writer, raises
        StoreError, changing nothing, if the write fails."""
        self.writer.write(WriteBatch(jobs={job.id: job}, log=list(log)), lambda: self._show([job]))
        self._logged(log)
        self._jobs[job.id] = job
        if job.status.finalized:
            self._unfinished.pop(job.id, None)
            # A job that ended may let a dependent one start (or fail it): the
            # dispatcher looks again. Any other change concerns the job's own worker
            # (which wakes the dispatcher when it returns), not the dispatcher.
            self._on_change()
        else:
            self._unfinished[job.id] = None
        return job

    def add(self, jobs: Sequence[Job], log: Sequence[LogEntry]) -> None:
        """Write new jobs and their first log entries in one transaction."""
        self.writer.write(
            WriteBatch(jobs={j.id: j for j in jobs}, log=list(log)), lambda: self._show(jobs)
        )
        self._logged(log)
        for job in jobs:
            self._jobs[job.id] = job
            self._unfinished[job.id] = None
        if self.metrics is not None:
            self.metrics.jobs_submitted(len(jobs))
        self._on_change()

    def adopt(self, job: Job, serial: int) -> None:
        """Take on a job another master queued in the shared store (read there, with its
        last log serial), unless it is held already or archived."""
        if job.id in self._jobs or job.archived:
            return
        self._serial[job.id] = serial
        self._jobs[job.id] = job
        self._shown[job.id] = job
        if not job.status.finalized:
            self._unfinished[job.id] = None
        if self.metrics is not None:
            self.metrics.jobs_submitted(1)
        self._notify(job.id)
        self._on_change()

    def forget(self, job: Job) -> None:
        """Write ``job`` (archived) and drop it from memory."""
        self.writer.write(WriteBatch(jobs={job.id: job}), lambda: self._show([job]))
        self._jobs.pop(job.id, None)
        self._unfinished.pop(job.id, None)
        self._on_change()

    def entry(
        self, job_id: int, message: str, kind: LogKind, data: dict[str, Any] | None
    ) -> LogEntry:
        """The job's next log entry; its serial counts as used once it is stored (through
        :meth:`save` or :meth:`append_log`)."""
        serial = self._serial.get(job_id, 0) + 1
        return LogEntry(job_id, serial, time.time(), kind, message, data)

    def append_log(
        self,
        job_id: int,
        message: str,
        *,
        kind: LogKind = LogKind.MESSAGE,
        data: dict[str, Any] | None = None,
        also: WriteBatch | None = None,
    ) -> LogEntry:
        """Append a line to the job's log; ``also``: other writes committed with it."""
        entry = self.entry(job_id, message, kind, data)
        batch = WriteBatch(log=[entry])
        if also is not None:
            also.merge(batch)
            batch = also
        self.writer.write(batch, functools.partial(self._notify, job_id))
        self._logged([entry])
        return entry

    def logger(self, job_id: int) -> Callable[..., LogEntry]:
        """A function appending to ``job_id``'s log (what a step context is given)."""

        def log(
            message: str,
            kind: LogKind,
            data: dict[str, Any] | None,
            also: WriteBatch | None = None,
        ) -> LogEntry:
            return self.append_log(job_id, message, kind=kind, data=data, also=also)

        return log

    def set_waiting(self, job_id: int, text: str | None) -> None:
        """Record what the job waits for (``None``: nothing any more)."""
        job = self._jobs[job_id]
        if job.waiting_for != text:
            self.save(attrs.evolve(job, waiting_for=text))

    def set_op(self, job_id: int, index: int, status: OpStatus, **changes: Any) -> Job:
        """Move opcode ``index`` to ``status`` (raises on an illegal transition, changing
        nothing); the status and the log line announcing it are written together."""
        job = self._jobs[job_id]
        op = job.ops[index]
        if op.status is not status:
            advance_op(op.status, status)
        now = time.time()
        if status is OpStatus.RUNNING and op.started is None:
            changes.setdefault("started", now)
        if status.finalized:
            changes.setdefault("ended", now)
        new = job.with_op(attrs.evolve(op, status=status, **changes))
        if new.started is None and status is OpStatus.RUNNING:
            new = attrs.evolve(new, started=now)
        finishing = new.status.finalized and new.ended is None
        if finishing:
            new = attrs.evolve(new, ended=now, waiting_for=None)
        if op.status is status:
            saved = self.save(new)
        else:
            entry = self.entry(
                job_id,
                f"opcode {index} {op.op_id}: {status.value}",
                LogKind.STATUS,
                {"op": index, "status": status.value, "job_status": new.status.value},
            )
            saved = self.save(new, [entry])
            if self.metrics is not None:
                self.metrics.op_changed(op, saved, now)
        if finishing:
            self.finished += 1
        return saved

    def fail_rest(self, job_id: int, after: int, status: OpStatus, reason: str) -> None:
        """Finalize every opcode after ``after`` with ``status`` (``not_run`` errors)."""
        for op in self._jobs[job_id].ops[after + 1 :]:
            if not op.status.finalized:
                error = {"kind": "not_run", "message": reason} if status is OpStatus.ERROR else None
                self.set_op(job_id, op.index, status, error=error)

    def fail_job(self, job_id: int, reason: str, kind: str) -> None:
        """Fail every unfinished opcode of the job with an error of ``kind``."""
        self.append_log(job_id, reason, kind=LogKind.ERROR)
        for op in self._jobs[job_id].ops:
            if not op.status.finalized:
                self.set_op(
                    job_id, op.index, OpStatus.ERROR, error={"kind": kind, "message": reason}
                )

    # -- waiting --------------------------------------------------------------------

    async def wait_for_change(
        self, job_id: int, since: int, timeout: float
    ) -> tuple[Job, list[LogEntry]]:
        """Return as soon as the job has log entries after ``since`` or has ended.

        Event-driven: the caller sleeps on the job's change event, bounded by timeout.
        """
        with anyio.move_on_after(max(timeout, 0.0)):
            while True:
                job = self.get(job_id)
                # The store is asked only when the job's last serial (known in memory
                # for every job this daemon holds) is past ``since``.
                entries = (
                    self.store.load_log(job_id, since)
                    if self._serial.get(job_id, since + 1) > since
                    else []
                )
                if entries or job.status.finalized:
                    return job, entries
                event = self._changed.setdefault(job_id, anyio.Event())
                await event.wait()
        return self.get(job_id), []

    def counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for job in self._shown.values():
            counts[job.status.value] = counts.get(job.status.value, 0) + 1
        return counts


def is_active(job: Job) -> bool:
    """Whether a job not yet finalized may be dispatched (queued, waiting or running)."""
    return job.status in (JobStatus.QUEUED, JobStatus.WAITING, JobStatus.RUNNING)
