"""Logical units: what each opcode does, expressed as checks, locks and steps.

An LU never talks to a node itself: it hands :class:`~extjobs.model.steps.Step`
objects to its :class:`StepContext`, which journals them, runs them through the node
layer and records their results. No asyncssh, no SQL, no sockets in this package.

Life of an opcode (driven by :mod:`extjobs.engine.processor`)::

    lu = LU_FOR[type(op)](op, options)
    locks = lu.locks(config)        # data, before anything runs
    ... locks acquired ...
    lu.check(config)                # prerequisites against the current config
    result = await lu.exec(ctx)     # steps; returns a JSON-ready result
    # on failure or cancel:  await lu.compensate(ctx)   (undo what exec did)
    # after a daemon crash:  await lu.recover(ctx, journal)
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Protocol, TypeVar

import attrs

from extjobs.errors import ExtJobsError
from extjobs.model.cluster import ClusterConfig
from extjobs.model.config import Config
from extjobs.model.jobs import LogKind
from extjobs.model.journal import JournalRecord
from extjobs.model.locks import LockRequest
from extjobs.model.opcodes import OpCode
from extjobs.model.remote import CommandResult
from extjobs.model.steps import FenceRun, LocalRun, MoveTag, Step, StepKind

if TYPE_CHECKING:
    from extjobs.lus.journal import Journal


class NodeStream(Protocol):
    """A byte stream to a Unix socket on a node (see :meth:`StepContext.open_unix_stream`)."""

    async def send(self, data: bytes) -> None: ...

    async def receive(self, max_bytes: int = 65536) -> bytes:
        """Up to ``max_bytes`` bytes; ``b""`` once the other end closed."""
        ...


T = TypeVar("T")


class StepContext(Protocol):
    """The engine's services as seen by an LU."""

    @property
    def config(self) -> ClusterConfig:
        """The current cluster configuration (a frozen snapshot)."""

    @property
    def options(self) -> Config: ...

    def log(self, message: str, *, kind: LogKind = LogKind.MESSAGE, **data: Any) -> None:
        """Append a line to the job log."""

    def tagged(self, move: MoveTag) -> StepContext:
        """This context, with every step it journals tagged with ``move`` (migrate and
        failover: recovery after a crash learns both ends of the move from the tag)."""

    async def run(self, step: Step) -> CommandResult:
        """Journal, run and record one step.

        Raises the node layer's error (unreachable, timeout …) or ``ProviderError``
        when the command exits non-zero and ``step.check`` is false. Cancellable: the
        remote process group is killed.
        """

    async def run_many(self, steps: Sequence[Step]) -> list[CommandResult | ExtJobsError]:
        """Run steps concurrently; one failing does not cancel the others."""

    def update_config(self, change: Callable[[ClusterConfig], ClusterConfig]) -> ClusterConfig:
        """Apply ``change`` to the current configuration and persist it atomically."""

    def open_unix_stream(
        self, node: str, path: str, *, timeout: float, description: str
    ) -> AbstractAsyncContextManager[NodeStream]:
        """Connect to the Unix socket ``path`` on ``node`` (a hypervisor's control socket)
        through SSH stream-local forwarding; journalled like a step.

        Each send/receive is bounded by ``timeout`` (``CommandTimeoutError``); a refused
        connection raises ``NodeError``. Cancellable.
        """

    async def fetch_host_key(self, host: str, port: int, *, node: str) -> str:
        """The host key offered at ``host:port`` (the node ``node`` being added), in
        OpenSSH format; journalled. Nothing is verified."""

    async def put_tree(self, node: str, local_dir: str, remote_dir: str) -> None:
        """Copy a directory of the master to a node (SFTP, modes kept), journalled."""

    async def sleep(self, seconds: float) -> None: ...

    async def submit_jobs(self, jobs: Sequence[Sequence[OpCode]], *, reason: str) -> list[int]:
        """Queue one job per entry of ``jobs`` (its opcodes), all in one batch, each with
        ``reason``; returns their ids once the batch is stored. Raises QueueFullError
        (nothing queued). The jobs run on their own: this job does not wait for them."""

    async def journal_records(self, kinds: tuple[StepKind, ...]) -> list[JournalRecord]:
        """Every journal record of these step kinds, across all jobs (read-only)."""

    async def memo(
        self, key: str, ttl: float, compute: Callable[[], Awaitable[tuple[T, bool]]]
    ) -> tuple[T, float | None]:
        """A result shared between jobs for ``ttl`` seconds (in memory, single-flight).

        ``compute`` returns ``(value, keep)``; only a kept value is shared. Concurrent
        callers with the same key wait for the one computing it. Returns the value and,
        when it came from an earlier computation, its age in seconds (else ``None``).
        """

    async def run_local(
        self,
        argv: Sequence[str],
        *,
        timeout: float,
        description: str,
        env: Mapping[str, str] | None = None,
        payload: FenceRun | LocalRun | None = None,
    ) -> CommandResult:
        """Run a program on the master (a node's fence command: ``payload`` says which
        node it fences), journalled like a step on node ``master``.

        The environment is ``PATH`` and ``LC_ALL=C`` plus ``env``. Returns the result
        whatever the exit status (127 when the program cannot be started). Raises
        ``CommandTimeoutError`` after ``timeout`` seconds; the process group is killed
        then, and when the call is cancelled.
        """


class RecoveryAction(enum.Enum):
    RETRY = "retry"  # run the opcode again from the start (it is idempotent)
    DONE = "done"  # the interrupted work is finished or undone; result/error given
    FAILED = "failed"


@attrs.frozen
class Recovery:
    action: RecoveryAction
    message: str
    result: Any = None


O = TypeVar("O", bound=OpCode)


class LogicalUnit(Generic[O]):
    """Base class; subclasses set ``OPCODE`` and override what they need."""

    OPCODE: ClassVar[type[OpCode]]

    def __init__(self, op: O, options: Config) -> None:
        self.op = op
        self.options = options

    def locks(self, config: ClusterConfig) -> list[LockRequest]:
        """Locks needed, as data. Default: the cluster, shared."""
        return [LockRequest.cluster()]

    def check(self, config: ClusterConfig) -> None:
        """Raise ``PrerequisiteError``/``NotFoundError`` if the opcode cannot run."""

    async def exec(self, ctx: StepContext) -> Any:
        raise NotImplementedError

    async def compensate(self, ctx: StepContext) -> None:
        """Undo what a failed or cancelled ``exec`` did. Default: nothing to undo."""

    async def recover(self, ctx: StepContext, journal: Journal) -> Recovery:
        """Bring an opcode interrupted by a daemon crash to a consistent end.

        Default, for LUs whose effects are idempotent: run again from the start.
        """
        return Recovery(RecoveryAction.RETRY, "interrupted by a daemon restart; running again")
