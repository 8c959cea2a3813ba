"""The StepContext an LU runs with: journal → node runner → recorded result.

Each step is written to the journal as ``started`` before it runs (a durability point:
the entry, with its typed payload and inverse, is committed before the node is asked)
and as ``done``/``failed`` with its exit status, duration and output tails afterwards,
and a line goes to the job log. ``run_many`` runs steps concurrently in its own task
group; each step's bookkeeping is finished even when a sibling fails.

A :class:`JobContext` is built from narrow collaborators — the daemon's
:class:`Services`, the opcode's :class:`StepJournal` and a function appending to the
job's log — and knows nothing of the queue that runs the job.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, TypeVar

import anyio
import attrs

from extjobs.engine.configmgr import ConfigManager
from extjobs.engine.local import run_local_process
from extjobs.engine.memo import Aside, Memo
from extjobs.engine.metrics import Metrics
from extjobs.engine.writer import Writer
from extjobs.errors import (
    CommandTimeoutError,
    ExtJobsError,
    FencedError,
    ProviderError,
    StoreError,
)
from extjobs.model import codec
from extjobs.model.cluster import ClusterConfig
from extjobs.model.config import Config
from extjobs.model.jobs import LogKind
from extjobs.model.journal import Entry, JournalRecord, StepStatus
from extjobs.model.opcodes import OpCode
from extjobs.model.remote import DEFAULT_PATH, CommandResult, Endpoint, RemoteCommand
from extjobs.model.requests import JobRequest
from extjobs.model.steps import (
    SUBMIT_JOBS,
    FenceRun,
    HostKeyFetch,
    LocalRun,
    MoveTag,
    Payload,
    ProviderCall,
    Step,
    StepKind,
    StreamOpen,
    TreeCopy,
)
from extjobs.nodes.runner import NodeRunner, UnixStream
from extjobs.store.base import JournalEnd, JournalStart, Store, WriteBatch

TAIL = 2000

T = TypeVar("T")


class CrashPoint:
    """Fault injection for the crash-safety tests; inert unless the daemon was started
    with ``EXTJOBS_CRASH_FILE`` pointing at a file.

    Each line of the file is ``WHERE:K:JOB``, a point in the K-th step of job JOB (remote
    commands, tree copies and local runs, counted in the order they are journalled):
    ``before`` journalling it; ``started``, once journalled but before the command, copy
    or program starts; ``after`` recording its result. A job that reaches its point
    stops there, and so does any other step of it running concurrently at its next
    point; once every job named has reached its point, the daemon SIGKILLs itself, so
    that one crash leaves each job where its line says. Without the variable this costs
    one comparison per step.
    """

    def __init__(self, path: str | None) -> None:
        self.path = path
        self.counts: dict[int, int] = {}
        self.reached: set[str] = set()
        self.stopped: set[int] = set()

    def step(self, job_id: int) -> int:
        if self.path is None:
            return 0
        number = self.counts.get(job_id, 0) + 1
        self.counts[job_id] = number
        return number

    def _points(self) -> set[str]:
        # A few bytes of a local file, read only in the crash tests: not worth a thread.
        assert self.path is not None
        try:
            return set(Path(self.path).read_text().split())
        except OSError:
            return set()

    async def check(self, where: str, job_id: int, number: int) -> None:
        """Return at once, unless this is a point of the file (see the class docstring)."""
        if self.path is None:
            return
        if job_id in self.stopped:
            await anyio.sleep_forever()
        points = self._points()
        here = f"{where}:{number}:{job_id}"
        if here not in points:
            return
        self.reached.add(here)
        self.stopped.add(job_id)
        if points <= self.reached:
            os.kill(os.getpid(), signal.SIGKILL)
        await anyio.sleep_forever()


CRASH = CrashPoint(os.environ.get("EXTJOBS_CRASH_FILE"))


def result_record(result: CommandResult) -> dict[str, Any]:
    return {
        "exit_status": result.exit_status,
        "signal": result.signal,
        "duration": round(result.duration, 6),
        "stdout_tail": result.stdout[-TAIL:],
        "stderr_tail": result.stderr[-TAIL:],
        "stdout_dropped": result.stdout_dropped,
        "stderr_dropped": result.stderr_dropped,
    }


@attrs.frozen
class Services:
    """What every job's steps share: the configuration, the nodes, the options, the
    memo of shared results and the store (for the journal)."""

    configmgr: ConfigManager
    runner: NodeRunner
    options: Config
    memo: Memo
    store: Store
    #: What the engine writes through (the store's own, or a group writer).
    writer: Writer
    #: Whether this master may start steps (it leads; always, with one master).
    may_act: Callable[[], bool] = lambda: True
    #: The daemon's metrics (None: not measured, as in unit tests).
    metrics: Metrics | None = None
    #: Queues a batch of jobs atomically (the queue's ``submit``); ``None`` where no
    #: queue runs the job (an opcode that expands into jobs then refuses).
    submit: Callable[[Sequence[JobRequest]], list[int]] | None = None


class JobLogger(Protocol):
    """Appends a line to one job's log; ``also``: writes committed with it."""

    def __call__(
        self,
        message: str,
        kind: LogKind,
        data: dict[str, Any] | None,
        also: WriteBatch | None = None,
    ) -> object: ...


class StepJournal:
    """The journal of one opcode as its steps are written: numbered in order."""

    def __init__(
        self,
        writer: Writer,
        job_id: int,
        op_index: int,
        *,
        last_seq: int = 0,
        may_act: Callable[[], bool] = lambda: True,
    ) -> None:
        self._writer = writer
        self.job_id = job_id
        self.op_index = op_index
        self._seq = last_seq
        self._may_act = may_act

    async def start(self, node: str, description: str, entry: Entry) -> int:
        """Journal a step as started (committed when this returns); its record id.

        Raises :class:`FencedError` when this master may no longer act (it stopped
        leading): no step starts then."""
        if not self._may_act():
            raise FencedError(
                f"{description} on {node} not started: this master no longer leads",
                node=node,
            )
        self._seq += 1
        return await self._writer.journal_start(
            JournalStart(self.job_id, self.op_index, self._seq, node, description, entry)
        )

    def end(self, record_id: int, status: StepStatus, result: dict[str, Any]) -> WriteBatch:
        """The write that ends a step (committed with the step's log line)."""
        return WriteBatch(ends=[JournalEnd(record_id, status, result, time.time())])

    def finish(self, record_id: int, status: StepStatus, result: dict[str, Any]) -> None:
        self._writer.write(self.end(record_id, status, result))

    def set_pgid(self, record_id: int, pgid: int) -> None:
        self._writer.write(WriteBatch(pgids=[(record_id, pgid)]))


def log_fields(payload: Payload, move: MoveTag | None) -> dict[str, Any]:
    """What a step's job-log line carries about it (the API's ``data`` of a ``step``)."""
    fields: dict[str, Any] = codec.unstructure(payload)
    if isinstance(payload, ProviderCall):
        fields["provider"] = payload.provider
    if move is not None:
        fields["move"] = codec.unstructure(move)
    return fields


class JobContext:
    """StepContext for one opcode of one job (see the module docstring)."""

    def __init__(
        self,
        services: Services,
        journal: StepJournal,
        log: JobLogger,
        *,
        move: MoveTag | None = None,
    ) -> None:
        self._services = services
        self._runner = services.runner
        self._journal = journal
        self._log = log
        self._move = move
        self.job_id = journal.job_id
        #: Where work beside the opcode's own runs (a renewal of a shared result), while
        #: its LU executes; the opcode ends once that work has (see the processor).
        self.aside: Aside | None = None

    @property
    def config(self) -> ClusterConfig:
        return self._services.configmgr.current

    @property
    def options(self) -> Config:
        return self._services.options

    def log(self, message: str, *, kind: LogKind = LogKind.MESSAGE, **data: Any) -> None:
        self._log(message, kind, data or None)

    def tagged(self, move: MoveTag) -> JobContext:
        return JobContext(self._services, self._journal, self._log, move=move)

    def update_config(self, change: Callable[[ClusterConfig], ClusterConfig]) -> ClusterConfig:
        return self._services.configmgr.update(change)

    @contextlib.asynccontextmanager
    async def _journalled(
        self, node: str, description: str, entry: Entry, *, kills: bool = False
    ) -> AsyncIterator[_Outcome]:
        """Journal one step around the block: ``started`` before it, then ``done`` or
        ``failed`` with the record the block leaves in the outcome (or the error, or the
        cancellation), and one job-log line either way. ``kills``: the block runs a
        command that is killed on a timeout or a cancel (counted so in the metrics)."""
        if self._move is not None and entry.move is None:
            entry = attrs.evolve(entry, move=self._move)
        outcome = _Outcome(await self._journal.start(node, description, entry))
        extra = {"node": node, **log_fields(entry.payload, entry.move)}
        started = time.monotonic()
        metrics = self._services.metrics
        try:
            yield outcome
        except ExtJobsError as exc:
            if metrics is not None:
                metrics.step_ended(entry.payload, node, started, error=exc, kills=kills)
            record = {"error": exc.to_dict(), "duration": round(time.monotonic() - started, 6)}
            # What a killed or lost command printed is kept like any other output.
            for key in ("stdout_tail", "stderr_tail"):
                if key in exc.fields:
                    record[key] = exc.fields[key]
            self._ended(
                outcome, StepStatus.FAILED, record, f"{node}: {description}: {exc.message}", extra
            )
            raise
        except BaseException as exc:
            # Cancelled (job cancel or shutdown): the runner killed the remote group.
            if metrics is not None:
                metrics.step_ended(entry.payload, node, started, error=exc, kills=kills)
            record = {
                "error": {"kind": "canceled", "message": "step canceled"},
                "duration": round(time.monotonic() - started, 6),
            }
            self._ended(
                outcome, StepStatus.FAILED, record, f"{node}: {description}: canceled", extra
            )
            raise
        if metrics is not None:
            metrics.step_ended(
                entry.payload, node, started, failed=outcome.status is StepStatus.FAILED
            )
        duration = round(time.monotonic() - started, 6)
        record = outcome.record if outcome.record is not None else {"duration": duration}
        summary = outcome.summary or f"done in {duration * 1000:.1f} ms"
        self._ended(outcome, outcome.status, record, f"{node}: {description}: {summary}", extra)

    def _ended(
        self,
        outcome: _Outcome,
        status: StepStatus,
        record: dict[str, Any],
        message: str,
        extra: dict[str, Any],
    ) -> None:
        """Journal the step's end and log its line, in one transaction."""
        end = self._journal.end(outcome.record_id, status, record)
        self._log(message, LogKind.STEP, {**extra, **record}, end)

    async def fetch_host_key(self, host: str, port: int, *, node: str) -> str:
        entry = Entry(HostKeyFetch(host, port))
        async with self._journalled(node, f"read the host key of {host}:{port}", entry):
            return await self._runner.fetch_host_key(host, port)

    async def put_tree(self, node: str, local_dir: str, remote_dir: str) -> None:
        description = f"copy {local_dir} to {remote_dir}"
        number = CRASH.step(self.job_id)
        await CRASH.check("before", self.job_id, number)
        async with self._journalled(node, description, Entry(TreeCopy(local_dir, remote_dir))):
            await CRASH.check("started", self.job_id, number)
            endpoint = self.config.node(node).endpoint
            await self._runner.put_tree(
                endpoint,
                Path(local_dir),
                remote_dir,
                timeout=self.options.storage.timeout("install"),
            )
        await CRASH.check("after", self.job_id, number)

    async def submit_jobs(self, jobs: Sequence[Sequence[OpCode]], *, reason: str) -> list[int]:
        submit = self._services.submit
        if submit is None:
            raise StoreError("this master runs no job queue: jobs cannot be submitted")
        why = f"{reason} (submitted by job {self.job_id})"
        description = f"{SUBMIT_JOBS}: {len(jobs)} job(s), {reason}"
        number = CRASH.step(self.job_id)
        await CRASH.check("before", self.job_id, number)
        async with self._journalled("master", description, Entry(LocalRun())) as outcome:
            await CRASH.check("started", self.job_id, number)
            ids = submit([JobRequest(ops=tuple(ops), reason=why) for ops in jobs])
            await self._services.writer.flush()
            outcome.summary = "job(s) " + ", ".join(str(i) for i in ids)
        await CRASH.check("after", self.job_id, number)
        return ids

    async def journal_records(self, kinds: tuple[StepKind, ...]) -> list[JournalRecord]:
        await self._services.writer.flush()
        return self._services.store.load_journal_kinds(kinds)

    async def memo(
        self, key: str, ttl: float, compute: Callable[[], Awaitable[tuple[T, bool]]]
    ) -> tuple[T, float | None]:
        return await self._services.memo.get(key, ttl, compute, aside=self.aside)

    async def sleep(self, seconds: float) -> None:
        await anyio.sleep(seconds)

    def _endpoint(self, step: Step) -> Endpoint:
        if step.endpoint is not None:
            return step.endpoint
        return self.config.node(step.node).endpoint

    async def run(self, step: Step) -> CommandResult:
        number = CRASH.step(self.job_id)
        await CRASH.check("before", self.job_id, number)
        async with self._journalled(
            step.node, step.description, Entry.of(step), kills=True
        ) as outcome:
            await CRASH.check("started", self.job_id, number)
            result = await self._runner.run(
                self._endpoint(step),
                step.command,
                on_started=lambda pgid: self._journal.set_pgid(outcome.record_id, pgid),
            )
            ok = result.ok or step.check
            outcome.finish(ok, result)
        await CRASH.check("after", self.job_id, number)
        if not ok:
            raise ProviderError(
                f"{step.description} on node {step.node} failed with exit status "
                f"{result.exit_status}: {result.stderr.strip()[-500:] or '(no stderr)'}",
                node=step.node,
                exit_status=result.exit_status,
                stderr_tail=result.stderr[-TAIL:],
                **log_fields(step.payload, None),
            )
        return result

    @contextlib.asynccontextmanager
    async def open_unix_stream(
        self, node: str, path: str, *, timeout: float, description: str
    ) -> AsyncIterator[UnixStream]:
        """A journalled stream to a Unix socket on ``node``; each send/receive is bounded
        by ``timeout`` (:class:`CommandTimeoutError`)."""
        async with (
            self._journalled(node, description, Entry(StreamOpen(path, timeout))),
            self._runner.open_unix_stream(self.config.node(node).endpoint, path) as stream,
        ):
            yield _TimedStream(stream, node, path, timeout)

    async def run_local(
        self,
        argv: Sequence[str],
        *,
        timeout: float,
        description: str,
        env: Mapping[str, str] | None = None,
        payload: FenceRun | LocalRun | None = None,
    ) -> CommandResult:
        """Run a program on the master, journalled as a step on node ``master`` (see
        :func:`extjobs.engine.local.run_local_process`)."""
        full_env = {"PATH": DEFAULT_PATH, "LC_ALL": "C", **(env or {})}
        command = RemoteCommand(argv=tuple(argv), env=full_env, timeout=timeout)
        entry = Entry(payload or LocalRun(), command=command)
        number = CRASH.step(self.job_id)
        await CRASH.check("before", self.job_id, number)
        async with self._journalled("master", description, entry, kills=True) as outcome:
            await CRASH.check("started", self.job_id, number)
            result = await run_local_process(
                argv, full_env, timeout=timeout, cap=self.options.storage.output_cap
            )
            outcome.finish(result.ok, result)
        await CRASH.check("after", self.job_id, number)
        return result

    async def run_many(self, steps: Sequence[Step]) -> list[CommandResult | ExtJobsError]:
        """See :meth:`StepContext.run_many`. A :class:`StoreError` is not a step's
        answer: it is raised (after every sibling's bookkeeping), as from :meth:`run`."""
        if len(steps) == 1:
            # One step needs no task group: the same result, without a task to spawn.
            try:
                return [await self.run(steps[0])]
            except StoreError:
                raise
            except ExtJobsError as exc:
                return [exc]
        results: list[CommandResult | ExtJobsError | None] = [None] * len(steps)
        refused: list[StoreError] = []

        async def one(i: int, step: Step) -> None:
            try:
                results[i] = await self.run(step)
            except StoreError as exc:
                refused.append(exc)
            except ExtJobsError as exc:
                results[i] = exc

        async with anyio.create_task_group() as tg:
            for i, step in enumerate(steps):
                tg.start_soon(one, i, step)
        if refused:
            raise refused[0]
        return [r for r in results if r is not None]


class _Outcome:
    """What a journalled step leaves for its record (see ``JobContext._journalled``)."""

    def __init__(self, record_id: int) -> None:
        self.record_id = record_id
        self.status = StepStatus.DONE
        self.record: dict[str, Any] | None = None
        self.summary: str | None = None

    def finish(self, ok: bool, result: CommandResult) -> None:
        self.status = StepStatus.DONE if ok else StepStatus.FAILED
        self.record = result_record(result)
        self.summary = f"exit {result.exit_status} in {result.duration * 1000:.1f} ms"


class _TimedStream:
    """A node stream whose every call is bounded by a timeout."""

    def __init__(self, stream: UnixStream, node: str, path: str, timeout: float) -> None:
        self._stream = stream
        self._node = node
        self._path = path
        self._timeout = timeout

    def _timed_out(self, what: str) -> CommandTimeoutError:
        return CommandTimeoutError(
            f"{what} {self._path} on node {self._node} took longer than {self._timeout:g}s",
            node=self._node,
            path=self._path,
            timeout=self._timeout,
        )

    async def send(self, data: bytes) -> None:
        try:
            with anyio.fail_after(self._timeout):
                await self._stream.send(data)
        except TimeoutError:
            raise self._timed_out("writing to") from None

    async def receive(self, max_bytes: int = 65536) -> bytes:
        try:
            with anyio.fail_after(self._timeout):
                return await self._stream.receive(max_bytes)
        except TimeoutError:
            raise self._timed_out("waiting for") from None
