"""The processor: runs a job's opcodes, one at a time, each as its LU.

For one opcode: decode it and build its LU → ask for its locks (the job shows
``waiting`` with what it waits for) → under the locks, check prerequisites → ``exec``
through a :class:`~extjobs.engine.context.JobContext`. A failure marks the remaining
opcodes failed; a cancel (the worker's cancel scope) kills the running step — the runner
kills the remote process group — and runs the LU's compensation, shielded and bounded.
An opcode found running after a restart goes, under the same locks, to its LU's
``recover`` with its journal, after what the crashed daemon left running is killed.

A :class:`~extjobs.errors.StoreError` (the store refuses writes) is never taken for the
LU's failure: no compensation runs (its steps could not be journalled), the error goes
up to the queue, which recovers the opcode through the same ``recover`` path once
writes succeed again. Since a step's ``started`` entry is written before the step runs,
a job that cannot record its progress starts no further step.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import anyio

from extjobs.engine.book import JobBook
from extjobs.engine.context import JobContext, Services, StepJournal
from extjobs.engine.locks import LockManager
from extjobs.engine.recovery import kill_leftovers
from extjobs.errors import ExtJobsError, StoreError
from extjobs.lus import LU_FOR
from extjobs.lus.base import LogicalUnit, RecoveryAction
from extjobs.lus.journal import Journal
from extjobs.model.jobs import LogKind
from extjobs.model.locks import LockKey
from extjobs.model.opcodes import decode_opcode
from extjobs.model.states import OpStatus


class Processor:
    """Runs jobs' opcodes (see the module docstring); owns no task."""

    def __init__(self, book: JobBook, locks: LockManager, services: Services) -> None:
        self._book = book
        self._locks = locks
        self._services = services

    async def run_job(self, job_id: int, canceled: Callable[[], bool]) -> None:
        """Run the job's unfinished opcodes in order; stop at the first failure (the rest
        are marked not run) or when ``canceled()`` says so."""
        for op_state in self._book[job_id].ops:
            if op_state.status.finalized:
                continue
            if canceled():
                return
            ok = await self._run_op(job_id, op_state.index, canceled)
            if not ok:
                self._book.fail_rest(
                    job_id,
                    op_state.index,
                    OpStatus.ERROR,
                    f"not run: opcode {op_state.index} failed",
                )
                return

    def _on_wait(self, job_id: int, index: int) -> Callable[[LockKey, list[int]], None]:
        def note(key: LockKey, holders: list[int]) -> None:
            held_by = ", ".join(f"job {h}" for h in holders) or "earlier waiters"
            text = f"lock {key} (held by {held_by})"
            if self._book[job_id].ops[index].status is OpStatus.QUEUED:
                self._book.set_op(job_id, index, OpStatus.WAITING)
            self._book.set_waiting(job_id, text)
            self._book.append_log(job_id, f"waiting for {text}", kind=LogKind.WAITING)

        return note

    def _context(self, job_id: int, index: int, *, recovering: bool) -> JobContext:
        store = self._services.store
        # Steps taken while recovering are numbered after those of the crashed run.
        last = 0
        if recovering:
            last = max((r.seq for r in store.load_journal(job_id, index)), default=0)
        journal = StepJournal(
            self._services.writer, job_id, index, last_seq=last, may_act=self._services.may_act
        )
        return JobContext(self._services, journal, self._book.logger(job_id))

    async def _run_op(self, job_id: int, index: int, canceled: Callable[[], bool]) -> bool:
        book = self._book
        job = book[job_id]
        state = job.ops[index]
        recovering = state.status in (OpStatus.RUNNING, OpStatus.CANCELING)
        ctx = self._context(job_id, index, recovering=recovering)
        try:
            op = decode_opcode(state.input, where=f"op[{index}]")
            lu: LogicalUnit[Any] = LU_FOR[type(op)](op, self._services.options)
            wanted = lu.locks(self._services.configmgr.current)
        except ExtJobsError as exc:
            book.set_op(job_id, index, OpStatus.ERROR, error=exc.to_dict())
            return False
        # An opcode is ``waiting`` only when it has to queue for a lock (``_on_wait``):
        # one whose locks are free goes from ``queued`` to ``running`` in one write.
        asked = time.monotonic()
        async with self._locks.acquire(
            job_id, wanted, priority=job.priority, on_wait=self._on_wait(job_id, index)
        ):
            if self._services.metrics is not None:
                self._services.metrics.lock_waited(state.op_id, time.monotonic() - asked)
            book.set_waiting(job_id, None)
            if recovering:
                return await self._recover_op(job_id, index, lu, ctx, canceled)
            return await self._exec_op(job_id, index, lu, ctx, canceled)

    async def _exec_op(
        self,
        job_id: int,
        index: int,
        lu: LogicalUnit[Any],
        ctx: JobContext,
        canceled: Callable[[], bool],
    ) -> bool:
        book = self._book
        try:
            lu.check(self._services.configmgr.current)
        except ExtJobsError as exc:
            book.set_op(job_id, index, OpStatus.ERROR, error=exc.to_dict())
            book.append_log(job_id, f"prerequisites not met: {exc.message}", kind=LogKind.ERROR)
            return False
        book.set_op(job_id, index, OpStatus.RUNNING)
        try:
            result = await _exec_with_aside(lu, ctx)
        except StoreError:
            raise
        except ExtJobsError as exc:
            book.append_log(
                job_id, f"failed: {exc.message}", kind=LogKind.ERROR, data=exc.to_dict()
            )
            await self._compensate(job_id, lu, ctx)
            book.set_op(job_id, index, OpStatus.ERROR, error=exc.to_dict())
            return False
        except anyio.get_cancelled_exc_class():
            if canceled():
                await self._compensate(job_id, lu, ctx)
            raise
        book.set_op(job_id, index, OpStatus.SUCCESS, result=result)
        return True

    async def _compensate(self, job_id: int, lu: LogicalUnit[Any], ctx: JobContext) -> None:
        # Shielded so a cancel does not interrupt the undo; bounded so a dead node
        # cannot hold the worker forever.
        book = self._book
        with anyio.CancelScope(shield=True):
            with anyio.move_on_after(self._services.options.storage.timeout("remove") * 2) as guard:
                try:
                    await lu.compensate(ctx)
                except StoreError:
                    raise
                except ExtJobsError as exc:
                    book.append_log(
                        job_id,
                        f"undo incomplete: {exc.message}",
                        kind=LogKind.ERROR,
                        data=exc.to_dict(),
                    )
            if guard.cancelled_caught:
                book.append_log(job_id, "undo timed out", kind=LogKind.ERROR)

    async def _recover_op(
        self,
        job_id: int,
        index: int,
        lu: LogicalUnit[Any],
        ctx: JobContext,
        canceled: Callable[[], bool],
    ) -> bool:
        book = self._book
        store = self._services.store
        state = book[job_id].ops[index]
        # Written before anything is asked of a node: while the store refuses writes,
        # recovery stops here.
        book.append_log(job_id, f"recovering opcode {index} {state.op_id}", kind=LogKind.RECOVERY)
        await self._services.writer.flush()
        await kill_leftovers(
            store.load_journal(job_id, index),
            config=self._services.configmgr.current,
            runner=self._services.runner,
            writer=self._services.writer,
            log=lambda message, kind: book.append_log(job_id, message, kind=kind),
        )
        if state.status is OpStatus.CANCELING:
            await self._compensate(job_id, lu, ctx)
            book.set_op(job_id, index, OpStatus.CANCELED)
            book.fail_rest(job_id, index, OpStatus.CANCELED, "canceled")
            return True
        await self._services.writer.flush()
        journal = Journal(store.load_journal(job_id, index))
        try:
            outcome = await lu.recover(ctx, journal)
        except StoreError:
            raise
        except ExtJobsError as exc:
            book.set_op(job_id, index, OpStatus.ERROR, error=exc.to_dict())
            return False
        book.append_log(job_id, f"recovery: {outcome.message}", kind=LogKind.RECOVERY)
        if outcome.action is RecoveryAction.RETRY:
            # The locks are still held: run it again from the start.
            book.set_op(job_id, index, OpStatus.QUEUED)
            book.set_op(job_id, index, OpStatus.WAITING)
            return await self._exec_op(job_id, index, lu, ctx, canceled)
        if outcome.action is RecoveryAction.DONE:
            book.set_op(job_id, index, OpStatus.SUCCESS, result=outcome.result)
            return True
        book.set_op(
            job_id,
            index,
            OpStatus.ERROR,
            error={"kind": "interrupted", "message": outcome.message},
        )
        return False


async def _exec_with_aside(lu: LogicalUnit[Any], ctx: JobContext) -> Any:
    """``lu.exec(ctx)``, with what the LU starts beside its own steps (``ctx.aside``: a
    shared result's renewal) run in a task group the opcode ends with. A failure or a
    cancellation of the LU stops that work and is raised as it is (not wrapped)."""
    failure: BaseException | None = None
    result: Any = None
    async with anyio.create_task_group() as aside:
        ctx.aside = aside.start_soon
        try:
            result = await lu.exec(ctx)
        except BaseException as exc:  # noqa: BLE001 - raised again below, unwrapped
            failure = exc
            aside.cancel_scope.cancel()
        finally:
            ctx.aside = None
    if failure is not None:
        raise failure
    return result
