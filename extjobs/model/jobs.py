"""Jobs, their opcodes' states, log entries and journal records. Pure data.

A :class:`Job` is immutable; the queue replaces it with ``attrs.evolve`` on each change
and writes it to the store. ``Job.status`` is derived from the opcodes (see
``extjobs.model.states``).
"""

from __future__ import annotations

from typing import Any

import attrs

from extjobs.errors import InputError
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

    @property
    def status(self) -> JobStatus:
        return derive_job_status([op.status for op in self.ops])

    def with_op(self, op: OpState) -> Job:
        ops = list(self.ops)
        ops[op.index] = op
        return attrs.evolve(self, ops=tuple(ops))

    def summary(self) -> str:
        return ", ".join(op.op_id for op in self.ops)


@attrs.frozen
class LogEntry:
    job_id: int
    serial: int
    timestamp: float
    kind: str
    message: str
    data: dict[str, Any] | None = None


@attrs.frozen
class JournalRecord:
    """One step of an opcode as written before and after it runs (crash recovery)."""

    id: int
    job_id: int
    op_index: int
    seq: int
    node: str
    kind: str
    description: str
    status: str  # started | done | failed | interrupted
    data: dict[str, Any]
    started: float
    ended: float | None = None
    result: dict[str, Any] | None = None
    #: The remote process group while the step runs (killed if the daemon crashed).
    pgid: int | None = None
