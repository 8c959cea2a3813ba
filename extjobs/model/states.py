"""Job and opcode states, and the one table of legal transitions.

Theory: an opcode moves ``queued → waiting → running → success|error`` (or to
``canceling → canceled``); a job's status is *derived* from its opcodes' statuses and
never stored independently of them. Changing a status goes through :func:`advance_op`,
which raises :class:`IllegalTransitionError` and changes nothing for an edge not in
``OP_TRANSITIONS``.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence

from extjobs.errors import IllegalTransitionError


class OpStatus(enum.StrEnum):
    QUEUED = "queued"
    WAITING = "waiting"
    RUNNING = "running"
    CANCELING = "canceling"
    CANCELED = "canceled"
    SUCCESS = "success"
    ERROR = "error"

    @property
    def finalized(self) -> bool:
        return self in OP_FINAL


class JobStatus(enum.StrEnum):
    QUEUED = "queued"
    WAITING = "waiting"
    RUNNING = "running"
    CANCELING = "canceling"
    CANCELED = "canceled"
    SUCCESS = "success"
    ERROR = "error"

    @property
    def finalized(self) -> bool:
        return self in JOB_FINAL


OP_FINAL = frozenset({OpStatus.CANCELED, OpStatus.SUCCESS, OpStatus.ERROR})
JOB_FINAL = frozenset({JobStatus.CANCELED, JobStatus.SUCCESS, JobStatus.ERROR})

Q, W, R, CI, CD, S, E = (
    OpStatus.QUEUED,
    OpStatus.WAITING,
    OpStatus.RUNNING,
    OpStatus.CANCELING,
    OpStatus.CANCELED,
    OpStatus.SUCCESS,
    OpStatus.ERROR,
)

#: Every legal (from → to) edge for an opcode. Anything else is a bug.
OP_TRANSITIONS: dict[OpStatus, frozenset[OpStatus]] = {
    # queued → error: an earlier opcode failed, or a dependency ended badly.
    Q: frozenset({W, R, CD, E}),
    # waiting → queued: the daemon restarted while the job waited for locks.
    W: frozenset({Q, R, CI, CD, E}),
    # running → queued: the daemon restarted and recovery re-queues the opcode.
    R: frozenset({Q, S, E, CI}),
    CI: frozenset({CD, E}),
    CD: frozenset(),
    S: frozenset(),
    E: frozenset(),
}


def advance_op(current: OpStatus, new: OpStatus) -> OpStatus:
    """Return ``new`` if ``current → new`` is legal, else raise and change nothing."""
    if new not in OP_TRANSITIONS[current]:
        raise IllegalTransitionError(
            f"illegal opcode transition {current.value} → {new.value}",
            current=current.value,
            new=new.value,
        )
    return new


def derive_job_status(ops: Sequence[OpStatus]) -> JobStatus:
    """A job's status from its opcodes' statuses (in order).

    - any canceling → canceling; any canceled → canceled
    - any error → error
    - all success → success
    - any running → running; any waiting → waiting
    - otherwise queued (including "some succeeded, the next one not started yet":
      the job is between opcodes and counts as running).
    """
    if not ops:
        return JobStatus.SUCCESS
    present = set(ops)
    if CI in present:
        return JobStatus.CANCELING
    if CD in present:
        return JobStatus.CANCELED
    if E in present:
        return JobStatus.ERROR
    if present == {S}:
        return JobStatus.SUCCESS
    if R in present:
        return JobStatus.RUNNING
    if W in present:
        return JobStatus.WAITING
    if S in present:
        return JobStatus.RUNNING
    return JobStatus.QUEUED
