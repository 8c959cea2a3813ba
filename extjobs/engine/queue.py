"""The durable job queue: submit, schedule, run, cancel, watch, archive, recover.

Theory of operation:

* Every change of a job (a status, a result, a log line) is decided in a synchronous
  method, written to the store, and then announced: the job's change event is set and
  replaced, and the dispatcher is woken. Nothing awaits in the middle of a change.
* The dispatcher (:meth:`JobQueue.serve`) is the single owner of the worker tasks. On
  each wake-up it picks runnable jobs in order of effective priority (priority minus
  one step per ``aging_interval`` waited, so low priorities cannot starve) and id, up to
  ``max_running`` at once, and starts a worker for each.
* A worker runs the job's opcodes in order: locks (the job shows ``waiting`` with what
  it waits for) → prerequisites → ``exec`` through a :class:`JobContext`. A failure
  marks the remaining opcodes failed; a cancel kills the running step (the runner kills
  the remote process group) and runs the LU's compensation.
* After a restart, opcodes found ``running`` go to their LU's ``recover`` under the same
  locks; ``waiting`` ones go back to ``queued``. No job stays ``running``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

import anyio
import attrs
from anyio.abc import TaskGroup, TaskStatus

from extjobs.engine.configmgr import ConfigManager
from extjobs.engine.context import JobContext
from extjobs.engine.locks import LockManager
from extjobs.engine.memo import Memo
from extjobs.engine.store import Store
from extjobs.errors import (
    ExtJobsError,
    InputError,
    NotFoundError,
    QueueFullError,
    StateError,
)
from extjobs.lus import LU_FOR
from extjobs.lus.base import LogicalUnit, RecoveryAction
from extjobs.model.config import Config
from extjobs.model.jobs import Dependency, Job, JournalRecord, LogEntry, OpState
from extjobs.model.locks import LockKey
from extjobs.model.opcodes import decode_opcode, encode_opcode
from extjobs.model.remote import DEFAULT_PATH, RemoteCommand
from extjobs.model.requests import JobRequest
from extjobs.model.states import JobStatus, OpStatus, advance_op
from extjobs.nodes.runner import NodeRunner

log = logging.getLogger("extjobs.queue")

#: Kill process group $1 if its leader still runs $2 (guards against a reused pid).
KILL_IF_OURS = (
    '[ -r "/proc/$1/cmdline" ] || exit 0; '
    'tr "\\000" " " <"/proc/$1/cmdline" | grep -qF -- "$2" || exit 0; '
    'kill -s KILL -- "-$1" 2>/dev/null && echo killed; exit 0'
)


class JobQueue:
    def __init__(
        self,
        store: Store,
        configmgr: ConfigManager,
        runner: NodeRunner,
        options: Config,
        locks: LockManager | None = None,
    ) -> None:
        self.store = store
        self.configmgr = configmgr
        self.runner = runner
        self.options = options
        self.locks = locks or LockManager()
        self.memo = Memo()
        self._jobs: dict[int, Job] = {}
        # Ids of the jobs not yet finalized, in id order (a dict used as an ordered
        # set): the dispatcher and the queue-full check look only at these, so their
        # cost does not grow with the number of finished jobs kept in memory.
        self._unfinished: dict[int, None] = {}
        self._serial: dict[int, int] = {}
        self._changed: dict[int, anyio.Event] = {}
        self._wakeup = anyio.Event()
        self._workers: dict[int, anyio.CancelScope] = {}
        self._cancel_requested: set[int] = set()
        self._recover: set[int] = set()
        self._submitted = 0
        self._finished = 0
        self._load()

    # -- loading and recovery bookkeeping -------------------------------------------

    def _load(self) -> None:
        changed: list[Job] = []
        for job in self.store.load_jobs():
            self._serial[job.id] = self.store.last_serial(job.id)
            if job.status.finalized:
                self._jobs[job.id] = job
                continue
            self._unfinished[job.id] = None
            ops = []
            for op in job.ops:
                if op.status is OpStatus.WAITING:
                    op = attrs.evolve(op, status=advance_op(op.status, OpStatus.QUEUED))
                elif op.status in (OpStatus.RUNNING, OpStatus.CANCELING):
                    self._recover.add(job.id)
                ops.append(op)
            new = attrs.evolve(job, ops=tuple(ops), waiting_for=None)
            if new != job:
                changed.append(new)
            self._jobs[job.id] = new
        if changed:
            self.store.save_jobs(changed)
        for job_id in sorted(self._recover):
            self.append_log(
                job_id, "daemon restarted while this job ran; recovering", kind="recovery"
            )

    # -- change notification ----------------------------------------------------------

    def _notify(self, job_id: int) -> None:
        event = self._changed.pop(job_id, None)
        if event is not None:
            event.set()
        self._wakeup.set()

    def _save(self, job: Job, log: Sequence[LogEntry] = ()) -> Job:
        """Store ``job`` together with its new ``log`` entries (one transaction)."""
        self._jobs[job.id] = job
        if job.status.finalized:
            self._unfinished.pop(job.id, None)
        else:
            self._unfinished[job.id] = None
        self.store.save_jobs([job], log=log)
        self._notify(job.id)
        return job

    def _log_entry(
        self, job_id: int, message: str, kind: str, data: dict[str, Any] | None
    ) -> LogEntry:
        """The job's next log entry (takes its serial; the caller stores it)."""
        serial = self._serial.get(job_id, 0) + 1
        self._serial[job_id] = serial
        return LogEntry(job_id, serial, time.time(), kind, message, data)

    def append_log(
        self,
        job_id: int,
        message: str,
        *,
        kind: str = "message",
        data: dict[str, Any] | None = None,
    ) -> LogEntry:
        entry = self._log_entry(job_id, message, kind, data)
        self.store.append_log(entry)
        self._notify(job_id)
        return entry

    def _set_op(self, job_id: int, index: int, status: OpStatus, **changes: Any) -> Job:
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
        if new.status.finalized and new.ended is None:
            new = attrs.evolve(new, ended=now, waiting_for=None)
            self._finished += 1
        if op.status is not status:
            # The status and the log line announcing it are written together.
            entry = self._log_entry(
                job_id,
                f"opcode {index} {op.op_id}: {status.value}",
                "status",
                {"op": index, "status": status.value, "job_status": new.status.value},
            )
            self._save(new, [entry])
        else:
            self._save(new)
        return new

    def _fail_rest(self, job_id: int, after: int, status: OpStatus, reason: str) -> None:
        job = self._jobs[job_id]
        for op in job.ops[after + 1 :]:
            if not op.status.finalized:
                error = {"kind": "not_run", "message": reason} if status is OpStatus.ERROR else None
                self._set_op(job_id, op.index, status, error=error)

    # -- public, synchronous ----------------------------------------------------------

    def submit(self, batch: Sequence[JobRequest]) -> list[int]:
        """Queue a batch of jobs atomically; returns their ids in order.

        Raises QueueFullError when the queue would exceed ``max_queued`` and InputError
        for a relative dependency outside the batch; nothing is queued then.
        """
        pending = len(self._unfinished)
        limit = self.options.queue.max_queued
        if pending + len(batch) > limit:
            raise QueueFullError(
                f"the queue is full: {pending} unfinished jobs, limit {limit}; "
                "retry later or raise queue.max_queued",
                pending=pending,
                limit=limit,
            )
        now = time.time()
        jobs: list[Job] = []
        ids = [self.store.next_job_id() for _ in batch]
        first = ids[0]
        for i, (job_id, req) in enumerate(zip(ids, batch, strict=True)):
            deps = []
            for d, dep in enumerate(req.depends):
                target = dep.job_id
                if target < 0:
                    target = job_id + target
                    if target < first:
                        raise InputError(
                            f"jobs[{i}].depends[{d}]: relative id {dep.job_id} points before "
                            "the first job of this submission",
                            field=f"jobs[{i}].depends[{d}]",
                        )
                elif target >= job_id:
                    raise InputError(
                        f"jobs[{i}].depends[{d}]: job {target} is not an earlier job",
                        field=f"jobs[{i}].depends[{d}]",
                    )
                deps.append(Dependency(target, dep.statuses))
            ops = tuple(OpState(index=k, input=encode_opcode(op)) for k, op in enumerate(req.ops))
            jobs.append(
                Job(id=job_id, ops=ops, priority=req.priority, depends=tuple(deps), received=now)
            )
        # The whole batch and each job's first log line are one transaction.
        entries = [
            LogEntry(
                job.id,
                1,
                now,
                "status",
                f"job submitted: {job.summary()}",
                {"job_status": "queued"},
            )
            for job in jobs
        ]
        self.store.save_jobs(jobs, log=entries)
        for job in jobs:
            self._jobs[job.id] = job
            self._unfinished[job.id] = None
            self._serial[job.id] = 1
            self._notify(job.id)
        self._submitted += len(jobs)
        self._wakeup.set()
        return [j.id for j in jobs]

    def get(self, job_id: int) -> Job:
        job = self._jobs.get(job_id) or self.store.load_job(job_id)
        if job is None:
            raise NotFoundError(f"job {job_id} does not exist", job=job_id)
        return job

    def list_jobs(self, *, statuses: Sequence[JobStatus] = (), archived: bool = False) -> list[Job]:
        jobs = (
            self.store.load_jobs(include_archived=True) if archived else list(self._jobs.values())
        )
        if statuses:
            jobs = [j for j in jobs if j.status in statuses]
        return sorted(jobs, key=lambda j: j.id)

    def log_since(self, job_id: int, since: int = 0) -> list[LogEntry]:
        self.get(job_id)
        return self.store.load_log(job_id, since)

    def cancel(self, job_id: int) -> Job:
        """Cancel a job: at once when it has not started, else kill and compensate.

        Raises StateError for a job that already ended.
        """
        job = self.get(job_id)
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
                    self._set_op(job_id, op.index, OpStatus.CANCELED)
            self.append_log(job_id, "job canceled before it ran", kind="status")
            self._cancel_requested.discard(job_id)
            return self._jobs[job_id]
        self._cancel_requested.add(job_id)
        for op in job.ops:
            if op.status is OpStatus.RUNNING:
                self._set_op(job_id, op.index, OpStatus.CANCELING)
        self.append_log(job_id, "cancel requested", kind="status")
        scope.cancel()
        return self._jobs[job_id]

    def archive(self, job_id: int) -> Job:
        job = self.get(job_id)
        if not job.status.finalized:
            raise StateError(
                f"job {job_id} is {job.status.value}; only finished jobs can be archived",
                job=job_id,
            )
        if job.archived:
            return job
        job = attrs.evolve(job, archived=True)
        self.store.save_jobs([job])
        self._jobs.pop(job_id, None)
        self._notify(job_id)
        return job

    def archive_old(self, now: float | None = None) -> list[int]:
        now = time.time() if now is None else now
        cutoff = now - self.options.queue.archive_after
        old = [
            j.id
            for j in self._jobs.values()
            if j.status.finalized and j.ended is not None and j.ended < cutoff
        ]
        for job_id in old:
            self.archive(job_id)
        return old

    def statistics(self) -> dict[str, Any]:
        counts: dict[str, int] = {}
        for job in self._jobs.values():
            counts[job.status.value] = counts.get(job.status.value, 0) + 1
        return {
            "jobs": counts,
            "running_workers": len(self._workers),
            "max_running": self.options.queue.max_running,
            "submitted": self._submitted,
            "finished": self._finished,
            "locks": self.locks.statistics(),
            "memo": self.memo.statistics(),
        }

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

    # -- dispatching ----------------------------------------------------------------

    def _effective_priority(self, job: Job, now: float) -> int:
        steps = int((now - job.received) / max(self.options.queue.aging_interval, 1e-3))
        return max(job.priority - steps, -21 - steps // 1000)

    def _dependencies(self, job: Job) -> tuple[bool, str | None]:
        """(ready, reason-if-failed-or-waiting). Fails the job if a dependency ended badly."""
        for dep in job.depends:
            try:
                other = self.get(dep.job_id)
            except NotFoundError:
                self._fail_job(job, f"depends on job {dep.job_id}, which does not exist")
                return False, None
            if not other.status.finalized:
                return False, f"job {dep.job_id} ({other.status.value})"
            if other.status not in dep.statuses:
                wanted = "/".join(s.value for s in dep.statuses)
                self._fail_job(
                    job,
                    f"dependency job {dep.job_id} ended {other.status.value}, "
                    f"this job needed {wanted}",
                )
                return False, None
        return True, None

    def _fail_job(self, job: Job, reason: str) -> None:
        self.append_log(job.id, reason, kind="error")
        for op in job.ops:
            if not op.status.finalized:
                self._set_op(
                    job.id,
                    op.index,
                    OpStatus.ERROR,
                    error={"kind": "dependency", "message": reason},
                )

    def _runnable(self, now: float) -> list[Job]:
        ready = []
        for job_id in list(self._unfinished):
            job = self._jobs[job_id]
            if job.id in self._workers or job.status.finalized:
                continue
            if job.id not in self._recover and job.status not in (
                JobStatus.QUEUED,
                JobStatus.WAITING,
                JobStatus.RUNNING,
            ):
                continue
            ok, waiting = self._dependencies(job)
            if not ok:
                if waiting is not None:
                    first = next(op for op in job.ops if not op.status.finalized)
                    if (
                        first.status is OpStatus.QUEUED
                        or job.waiting_for != f"dependency: {waiting}"
                    ):
                        if first.status is OpStatus.QUEUED:
                            self._set_op(job.id, first.index, OpStatus.WAITING)
                        self._save(
                            attrs.evolve(self._jobs[job.id], waiting_for=f"dependency: {waiting}")
                        )
                continue
            ready.append(self._jobs[job.id])
        ready.sort(
            key=lambda j: (j.id not in self._recover, self._effective_priority(j, now), j.id)
        )
        return ready

    def _dispatch(self, tg: TaskGroup) -> None:
        free = self.options.queue.max_running - len(self._workers)
        if free <= 0:
            return
        for job in self._runnable(time.time())[:free]:
            scope = anyio.CancelScope()
            self._workers[job.id] = scope
            tg.start_soon(self._work, job.id, scope)

    async def serve(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Run the dispatcher and own every worker until cancelled."""
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._serve_archiver)
            task_status.started()
            while True:
                self._dispatch(tg)
                with anyio.move_on_after(self.options.queue.aging_interval):
                    await self._wakeup.wait()
                self._wakeup = anyio.Event()

    async def _serve_archiver(self) -> None:
        while True:
            self.archive_old()
            await anyio.sleep(max(min(self.options.queue.archive_after / 10, 3600.0), 1.0))

    # -- the worker -------------------------------------------------------------------

    async def _work(self, job_id: int, scope: anyio.CancelScope) -> None:
        try:
            with scope:
                await self._run_job(job_id)
            if scope.cancelled_caught or job_id in self._cancel_requested:
                self._finish_canceled(job_id)
        except Exception as exc:
            log.exception("job %s: internal error", job_id)
            job = self._jobs[job_id]
            for op in job.ops:
                if not op.status.finalized:
                    status = OpStatus.ERROR
                    if op.status is OpStatus.CANCELING:
                        status = OpStatus.CANCELED
                    self._set_op(
                        job_id,
                        op.index,
                        status,
                        error={"kind": "internal", "message": f"internal error: {exc!r}"},
                    )
        finally:
            self._workers.pop(job_id, None)
            self._recover.discard(job_id)
            self._cancel_requested.discard(job_id)
            self._wakeup.set()

    def _finish_canceled(self, job_id: int) -> None:
        job = self._jobs[job_id]
        for op in job.ops:
            if op.status.finalized:
                continue
            if op.status is OpStatus.RUNNING:
                self._set_op(job_id, op.index, OpStatus.CANCELING)
            self._set_op(job_id, op.index, OpStatus.CANCELED)
        self.append_log(job_id, "job canceled", kind="status")

    def _on_wait(self, job_id: int) -> Any:
        def note(key: LockKey, holders: list[int]) -> None:
            held_by = ", ".join(f"job {h}" for h in holders) or "earlier waiters"
            text = f"lock {key} (held by {held_by})"
            self._save(attrs.evolve(self._jobs[job_id], waiting_for=text))
            self.append_log(job_id, f"waiting for {text}", kind="waiting")

        return note

    async def _run_job(self, job_id: int) -> None:
        job = self._jobs[job_id]
        for op_state in job.ops:
            if op_state.status.finalized:
                continue
            if job_id in self._cancel_requested:
                return
            ok = await self._run_op(job_id, op_state.index)
            if not ok:
                self._fail_rest(
                    job_id,
                    op_state.index,
                    OpStatus.ERROR,
                    f"not run: opcode {op_state.index} failed",
                )
                return

    async def _run_op(self, job_id: int, index: int) -> bool:
        job = self._jobs[job_id]
        state = job.ops[index]
        ctx = JobContext(self, self.runner, job_id, index)
        try:
            op = decode_opcode(state.input, where=f"op[{index}]")
            lu: LogicalUnit[Any] = LU_FOR[type(op)](op, self.options)
            wanted = lu.locks(self.configmgr.current)
        except ExtJobsError as exc:
            self._set_op(job_id, index, OpStatus.ERROR, error=exc.to_dict())
            return False
        recovering = state.status in (OpStatus.RUNNING, OpStatus.CANCELING)
        if not recovering:
            self._set_op(job_id, index, OpStatus.WAITING)
        async with self.locks.acquire(
            job_id, wanted, priority=job.priority, on_wait=self._on_wait(job_id)
        ):
            if self._jobs[job_id].waiting_for is not None:
                self._save(attrs.evolve(self._jobs[job_id], waiting_for=None))
            if recovering:
                return await self._recover_op(job_id, index, lu, ctx)
            return await self._exec_op(job_id, index, lu, ctx)

    async def _exec_op(
        self, job_id: int, index: int, lu: LogicalUnit[Any], ctx: JobContext
    ) -> bool:
        try:
            lu.check(self.configmgr.current)
        except ExtJobsError as exc:
            self._set_op(job_id, index, OpStatus.ERROR, error=exc.to_dict())
            self.append_log(job_id, f"prerequisites not met: {exc.message}", kind="error")
            return False
        self._set_op(job_id, index, OpStatus.RUNNING)
        try:
            result = await lu.exec(ctx)
        except ExtJobsError as exc:
            self.append_log(job_id, f"failed: {exc.message}", kind="error", data=exc.to_dict())
            await self._compensate(job_id, lu, ctx)
            self._set_op(job_id, index, OpStatus.ERROR, error=exc.to_dict())
            return False
        except anyio.get_cancelled_exc_class():
            if job_id in self._cancel_requested:
                await self._compensate(job_id, lu, ctx)
            raise
        self._set_op(job_id, index, OpStatus.SUCCESS, result=result)
        return True

    async def _compensate(self, job_id: int, lu: LogicalUnit[Any], ctx: JobContext) -> None:
        # Shielded so a cancel does not interrupt the undo; bounded so a dead node
        # cannot hold the worker forever.
        with anyio.CancelScope(shield=True):
            with anyio.move_on_after(self.options.storage.timeout("remove") * 2) as guard:
                try:
                    await lu.compensate(ctx)
                except ExtJobsError as exc:
                    self.append_log(
                        job_id, f"undo incomplete: {exc.message}", kind="error", data=exc.to_dict()
                    )
            if guard.cancelled_caught:
                self.append_log(job_id, "undo timed out", kind="error")

    async def _kill_leftovers(self, job_id: int, journal: Sequence[JournalRecord]) -> None:
        """Kill remote commands a crashed daemon left running, then mark them interrupted.

        Only a process group whose leader still runs the step's program is killed, so a
        reused process id on the node is left alone.
        """
        for record in journal:
            if record.status != "started":
                continue
            node = self.configmgr.current.nodes.get(record.node)
            argv = record.data.get("argv") or []
            if record.pgid and node is not None and not node.offline and argv:
                command = RemoteCommand(
                    argv=("/bin/sh", "-c", KILL_IF_OURS, "sh", str(record.pgid), str(argv[0])),
                    env={"PATH": DEFAULT_PATH},
                    timeout=self.options.ssh.kill_timeout + 5,
                )
                try:
                    result = await self.runner.run(node.endpoint, command)
                except ExtJobsError as exc:
                    self.append_log(
                        job_id,
                        f"{record.node}: could not check for a leftover '{record.description}': "
                        f"{exc.message}",
                        kind="warning",
                    )
                else:
                    if result.stdout.strip() == "killed":
                        self.append_log(
                            job_id,
                            f"{record.node}: killed '{record.description}' left running by the "
                            "crashed daemon",
                            kind="recovery",
                        )
            self.store.journal_finish(
                record.id,
                "interrupted",
                {
                    "error": {
                        "kind": "interrupted",
                        "message": "the daemon stopped during this step",
                    }
                },
            )

    async def _recover_op(
        self, job_id: int, index: int, lu: LogicalUnit[Any], ctx: JobContext
    ) -> bool:
        state = self._jobs[job_id].ops[index]
        await self._kill_leftovers(job_id, self.store.load_journal(job_id, index))
        if state.status is OpStatus.CANCELING:
            await self._compensate(job_id, lu, ctx)
            self._set_op(job_id, index, OpStatus.CANCELED)
            self._fail_rest(job_id, index, OpStatus.CANCELED, "canceled")
            return True
        journal = self.store.load_journal(job_id, index)
        try:
            outcome = await lu.recover(ctx, journal)
        except ExtJobsError as exc:
            self._set_op(job_id, index, OpStatus.ERROR, error=exc.to_dict())
            return False
        self.append_log(job_id, f"recovery: {outcome.message}", kind="recovery")
        if outcome.action is RecoveryAction.RETRY:
            self._set_op(job_id, index, OpStatus.QUEUED)
            return await self._exec_op_after_requeue(job_id, index, lu, ctx)
        if outcome.action is RecoveryAction.DONE:
            self._set_op(job_id, index, OpStatus.SUCCESS, result=outcome.result)
            return True
        self._set_op(
            job_id,
            index,
            OpStatus.ERROR,
            error={"kind": "interrupted", "message": outcome.message},
        )
        return False

    async def _exec_op_after_requeue(
        self, job_id: int, index: int, lu: LogicalUnit[Any], ctx: JobContext
    ) -> bool:
        # Locks are already held by the caller.
        self._set_op(job_id, index, OpStatus.WAITING)
        return await self._exec_op(job_id, index, lu, ctx)
