"""The StepContext an LU runs with: journal → node runner → recorded result.

Each step is written to the journal as ``started`` before it runs and as
``done``/``failed`` with its exit status, duration and output tails afterwards, and a
line goes to the job log. ``run_many`` runs steps concurrently in its own task group;
each step's bookkeeping is finished even when a sibling fails.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import anyio

from extjobs.engine.local import run_local_process
from extjobs.errors import CommandTimeoutError, ExtJobsError, ProviderError
from extjobs.model import codec
from extjobs.model.cluster import ClusterConfig
from extjobs.model.config import Config
from extjobs.model.jobs import JournalRecord
from extjobs.model.remote import DEFAULT_PATH, CommandResult, Endpoint
from extjobs.model.steps import Step
from extjobs.nodes.runner import NodeRunner, UnixStream

if TYPE_CHECKING:
    from extjobs.engine.queue import JobQueue

TAIL = 2000

T = TypeVar("T")


class CrashPoint:
    """Fault injection for the crash-safety tests; inert unless the daemon was started
    with ``EXTJOBS_CRASH_FILE`` pointing at a file.

    The file holds ``before:K:JOB`` or ``after:K:JOB``: the daemon SIGKILLs itself just
    before journalling the K-th step of job JOB, or just after recording its result.
    Without the variable this costs one comparison per step.
    """

    def __init__(self, path: str | None) -> None:
        self.path = path
        self.counts: dict[int, int] = {}

    def step(self, job_id: int) -> int:
        if self.path is None:
            return 0
        number = self.counts.get(job_id, 0) + 1
        self.counts[job_id] = number
        return number

    def check(self, where: str, job_id: int, number: int) -> None:
        if self.path is None:
            return
        try:
            spec = Path(self.path).read_text().strip()
        except OSError:
            return
        if spec == f"{where}:{number}:{job_id}":
            os.kill(os.getpid(), signal.SIGKILL)


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


class JobContext:
    """StepContext for one opcode of one job."""

    def __init__(self, queue: JobQueue, runner: NodeRunner, job_id: int, op_index: int) -> None:
        self._queue = queue
        self._runner = runner
        self.job_id = job_id
        self.op_index = op_index
        self._seq = 0

    @property
    def config(self) -> ClusterConfig:
        return self._queue.configmgr.current

    @property
    def options(self) -> Config:
        return self._queue.options

    def log(self, message: str, *, kind: str = "message", **data: Any) -> None:
        self._queue.append_log(self.job_id, message, kind=kind, data=data or None)

    def update_config(self, change: Callable[[ClusterConfig], ClusterConfig]) -> ClusterConfig:
        return self._queue.configmgr.update(change)

    async def fetch_host_key(self, host: str, port: int) -> str:
        return await self._runner.fetch_host_key(host, port)

    @contextlib.asynccontextmanager
    async def _journalled(
        self,
        node: str,
        kind: str,
        description: str,
        data: Mapping[str, Any],
        *,
        log_data: Mapping[str, Any] | None = None,
    ) -> AsyncIterator[_Outcome]:
        """Journal one step around the block: ``started`` before it, then ``done`` or
        ``failed`` with the record the block leaves in the outcome (or the error, or the
        cancellation), and one job-log line either way."""
        self._seq += 1
        store = self._queue.store
        outcome = _Outcome(
            store.journal_start(
                self.job_id, self.op_index, self._seq, node, kind, description, dict(data)
            )
        )
        extra = {"node": node, **(log_data or {})}
        started = time.monotonic()
        try:
            yield outcome
        except ExtJobsError as exc:
            record = {"error": exc.to_dict(), "duration": round(time.monotonic() - started, 6)}
            # What a killed or lost command printed is kept like any other output.
            for key in ("stdout_tail", "stderr_tail"):
                if key in exc.fields:
                    record[key] = exc.fields[key]
            store.journal_finish(outcome.record_id, "failed", record)
            self.log(f"{node}: {description}: {exc.message}", kind="step", **{**extra, **record})
            raise
        except BaseException:
            # Cancelled (job cancel or shutdown): the runner killed the remote group.
            record = {
                "error": {"kind": "canceled", "message": "step canceled"},
                "duration": round(time.monotonic() - started, 6),
            }
            store.journal_finish(outcome.record_id, "failed", record)
            self.log(f"{node}: {description}: canceled", kind="step", **{**extra, **record})
            raise
        duration = round(time.monotonic() - started, 6)
        record = outcome.record if outcome.record is not None else {"duration": duration}
        store.journal_finish(outcome.record_id, outcome.status, record)
        summary = outcome.summary or f"done in {duration * 1000:.1f} ms"
        self.log(f"{node}: {description}: {summary}", kind="step", **{**extra, **record})

    async def put_tree(self, node: str, local_dir: str, remote_dir: str) -> None:
        description = f"copy {local_dir} to {remote_dir}"
        data = {"source": local_dir, "destination": remote_dir}
        async with self._journalled(node, "sftp", description, data):
            endpoint = self.config.node(node).endpoint
            await self._runner.put_tree(endpoint, Path(local_dir), remote_dir)

    def journal_records(self, kinds: tuple[str, ...]) -> list[JournalRecord]:
        return self._queue.store.load_journal_kinds(kinds)

    async def memo(
        self, key: str, ttl: float, compute: Callable[[], Awaitable[tuple[T, bool]]]
    ) -> tuple[T, float | None]:
        return await self._queue.memo.get(key, ttl, compute)

    async def sleep(self, seconds: float) -> None:
        await anyio.sleep(seconds)

    def _endpoint(self, step: Step) -> Endpoint:
        override = step.data.get("endpoint")
        if override is not None:
            return codec.structure(override, Endpoint)
        return self.config.node(step.node).endpoint

    async def run(self, step: Step) -> CommandResult:
        number = CRASH.step(self.job_id)
        CRASH.check("before", self.job_id, number)
        store = self._queue.store
        cmd = step.command
        step_data = {k: v for k, v in step.data.items() if k != "endpoint"}
        data = {
            **step_data,
            "argv": list(cmd.argv),
            "env": cmd.env_dict,
            "cwd": cmd.cwd,
            "timeout": cmd.timeout,
        }
        async with self._journalled(
            step.node, step.kind, step.description, data, log_data=step_data
        ) as outcome:
            result = await self._runner.run(
                self._endpoint(step),
                cmd,
                on_started=lambda pgid: store.journal_set_pgid(outcome.record_id, pgid),
            )
            ok = result.ok or step.check
            outcome.finish(ok, result)
        CRASH.check("after", self.job_id, number)
        if not ok:
            raise ProviderError(
                f"{step.description} on node {step.node} failed with exit status "
                f"{result.exit_status}: {result.stderr.strip()[-500:] or '(no stderr)'}",
                node=step.node,
                exit_status=result.exit_status,
                stderr_tail=result.stderr[-TAIL:],
                **step_data,
            )
        return result

    @contextlib.asynccontextmanager
    async def open_unix_stream(
        self, node: str, path: str, *, timeout: float, description: str
    ) -> AsyncIterator[UnixStream]:
        """A journalled stream to a Unix socket on ``node``; each send/receive is bounded
        by ``timeout`` (:class:`CommandTimeoutError`)."""
        data = {"path": path, "timeout": timeout}
        async with (
            self._journalled(node, "stream", description, data),
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
        data: Mapping[str, Any] | None = None,
    ) -> CommandResult:
        """Run a program on the master, journalled as a step of kind ``local`` on node
        ``master`` (see :func:`extjobs.engine.local.run_local_process`)."""
        full_env = {"PATH": DEFAULT_PATH, "LC_ALL": "C", **(env or {})}
        record = {**(data or {}), "argv": list(argv), "env": full_env, "timeout": timeout}
        async with self._journalled("master", "local", description, record) as outcome:
            result = await run_local_process(
                argv, full_env, timeout=timeout, cap=self.options.storage.output_cap
            )
            outcome.finish(result.ok, result)
        return result

    async def run_many(self, steps: Sequence[Step]) -> list[CommandResult | ExtJobsError]:
        if len(steps) == 1:
            # One step needs no task group: the same result, without a task to spawn.
            try:
                return [await self.run(steps[0])]
            except ExtJobsError as exc:
                return [exc]
        results: list[CommandResult | ExtJobsError | None] = [None] * len(steps)

        async def one(i: int, step: Step) -> None:
            try:
                results[i] = await self.run(step)
            except ExtJobsError as exc:
                results[i] = exc

        async with anyio.create_task_group() as tg:
            for i, step in enumerate(steps):
                tg.start_soon(one, i, step)
        return [r for r in results if r is not None]


class _Outcome:
    """What a journalled step leaves for its record (see ``JobContext._journalled``)."""

    def __init__(self, record_id: int) -> None:
        self.record_id = record_id
        self.status = "done"
        self.record: dict[str, Any] | None = None
        self.summary: str | None = None

    def finish(self, ok: bool, result: CommandResult) -> None:
        self.status = "done" if ok else "failed"
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
