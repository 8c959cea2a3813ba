"""Jobs, their opcodes' states and log entries. Pure data.

A :class:`Job` is immutable; the queue replaces it with ``attrs.evolve`` on each change
and writes it to the store. ``Job.status`` is derived from the opcodes (see
``extjobs.model.states``).
"""

from __future__ import annotations

import enum
from typing import Any

import attrs

from extjobs.errors import ExtJobsError, InputError
from extjobs.model.opcodes import decode_opcode
from extjobs.model.states import JobStatus, OpStatus, derive_job_status

PRIORITY_MIN, PRIORITY_MAX = -20, 19
PRIORITY_NAMES = {"high": -10, "normal": 0, "low": 10}


def parse_priority(value: Any) -> int:
    """``low|normal|high`` or an integer in -20…19 (lower runs first)."""
    if isinstance(value, str) and value in PRIORITY_NAMES:
        return PRIORITY_NAMES[value]
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise InputError(
            f"priority must be low, normal, high or an integer {PRIORITY_MIN}..{PRIORITY_MAX}, "
            f"not {value!r}",
            field="priority",
        ) from None
    if isinstance(value, bool) or not PRIORITY_MIN <= number <= PRIORITY_MAX:
        raise InputError(
            f"priority {value!r} is out of range {PRIORITY_MIN}..{PRIORITY_MAX}", field="priority"
        )
    return number


MAX_REASON = 1024


def check_reason(value: Any) -> str | None:
    """A job's reason: None, or a string of at most :data:`MAX_REASON` characters
    without control characters; raises InputError naming ``reason`` otherwise."""
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > MAX_REASON:
        raise InputError(
            f"reason must be a string of at most {MAX_REASON} characters", field="reason"
        )
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise InputError("reason must not contain control characters", field="reason")
    return value or None


@attrs.frozen
class Dependency:
    job_id: int
    statuses: tuple[JobStatus, ...] = (JobStatus.SUCCESS,)


@attrs.frozen
class OpState:
    index: int
    input: dict[str, Any]
    status: OpStatus = OpStatus.QUEUED
    result: Any = None
    error: dict[str, Any] | None = None
    started: float | None = None
    ended: float | None = None

    @property
    def op_id(self) -> str:
        return str(self.input.get("OP_ID", ""))


@attrs.frozen
class Job:
    id: int
    ops: tuple[OpState, ...]
    priority: int = 0
    depends: tuple[Dependency, ...] = ()
    received: float = 0.0
    started: float | None = None
    ended: float | None = None
    archived: bool = False
    #: What the job waits for while ``waiting`` (locks or dependencies), for operators.
    waiting_for: str | None = None
    #: Who submitted the job (the remote API's user), when the API knows; None otherwise
    #: and for jobs stored before this field existed.
    submitter: str | None = None
    #: Why, in the submitter's words (``reason``); None when none was given.
    reason: str | None = None
    #: Nodes the job touches that its opcodes do not name: the primary node of each
    #: instance named, as the configuration said at submission (what a search by node
    #: finds, :mod:`extjobs.model.jobquery`).
    touches: tuple[str, ...] = ()

    @property
    def status(self) -> JobStatus:
        return derive_job_status([op.status for op in self.ops])

    def with_op(self, op: OpState) -> Job:
        ops = list(self.ops)
        ops[op.index] = op
        return attrs.evolve(self, ops=tuple(ops))

    def summary(self) -> str:
        return ", ".join(op.op_id for op in self.ops)

    def summaries(self) -> list[str]:
        """Each opcode's summary (``OP_INSTANCE_MIGRATE(web1 → node2)``), or its ``OP_ID``
        where the stored input no longer decodes."""
        out = []
        for op in self.ops:
            try:
                out.append(decode_opcode(op.input).summary())
            except ExtJobsError:
                out.append(op.op_id or "?")
        return out


class LogKind(enum.StrEnum):
    """The type of a job log entry (``type`` in the API; docs/api.md lists them)."""

    MESSAGE = "message"  # what an LU tells the operator
    STATUS = "status"  # submitted, an opcode's new status, cancel requested or done
    STEP = "step"  # one journalled step's outcome, with its node and record
    WAITING = "waiting"  # waiting for a lock, and who holds it
    ERROR = "error"  # why an opcode failed
    WARNING = "warning"  # something went wrong that did not fail the opcode
    RECOVERY = "recovery"  # what happened to a job interrupted by a daemon restart
    UNDO = "undo"  # a failed or cancelled opcode's effects being undone
    FENCE = "fence"  # a node being fenced before another takes its disks
    FINDING = "finding"  # a discrepancy found by verify
    PROGRESS = "progress"  # a live migration's progress
    QMP = "qmp"  # a command sent to a guest's QEMU monitor


@attrs.frozen
class LogEntry:
    job_id: int
    serial: int
    timestamp: float
    kind: LogKind
    message: str
    data: dict[str, Any] | None = None
