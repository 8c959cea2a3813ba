"""Decoding submitted jobs: the filter between outside JSON and the model."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs

from extjobs.errors import InputError
from extjobs.model.jobs import Dependency, check_reason, parse_priority
from extjobs.model.opcodes import OpCode, decode_opcode
from extjobs.model.states import JobStatus

MAX_OPS_PER_JOB = 100
MAX_JOBS_PER_SUBMIT = 1000
#: The longest string a submission may hold anywhere. No field needs more (a disk
#: parameter value is bounded at 4096 bytes, a host key line is a few KiB), and a
#: command sent to a node is bounded at 64 KiB in all.
MAX_TEXT = 16384


@attrs.frozen
class JobRequest:
    """A job as submitted; dependency ids may be negative (relative within the batch)."""

    ops: tuple[OpCode, ...]
    priority: int = 0
    depends: tuple[Dependency, ...] = ()
    #: Set by the API from who is asking, never from the request body.
    submitter: str | None = None
    reason: str | None = None


def _decode_depends(value: Any, where: str) -> tuple[Dependency, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise InputError(f"{where} must be a list of [job_id, [statuses]]", field=where)
    out = []
    for i, item in enumerate(value):
        field = f"{where}[{i}]"
        if (
            not isinstance(item, list | tuple)
            or len(item) != 2
            or not isinstance(item[0], int)
            or isinstance(item[0], bool)
            or not isinstance(item[1], list)
        ):
            raise InputError(f"{field} must be [job_id, [statuses]]", field=field)
        if item[0] == 0:
            raise InputError(f"{field}: job id 0 does not exist", field=field)
        statuses = []
        for status in item[1]:
            try:
                js = JobStatus(status)
            except ValueError:
                raise InputError(
                    f"{field}: {status!r} is not a job status; use success, error or canceled",
                    field=field,
                ) from None
            if not js.finalized:
                raise InputError(
                    f"{field}: {status!r} is not a final status; use success, error or canceled",
                    field=field,
                )
            statuses.append(js)
        out.append(Dependency(item[0], tuple(statuses) or (JobStatus.SUCCESS,)))
    return tuple(out)


def _encodable(text: str, where: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InputError(
            f"{where} holds U+{ord(text[exc.start]):04X}, a lone surrogate: no character",
            field=where,
        ) from None


def _bounded(text: str, where: str) -> None:
    if "\0" in text:
        raise InputError(f"{where} must not contain NUL characters", field=where)
    if len(text) > MAX_TEXT:
        raise InputError(
            f"{where} is {len(text)} characters long, at most {MAX_TEXT} are allowed",
            field=where,
        )


def _each_string(data: Any, where: str, check: Callable[[str, str], None]) -> None:
    """``check(text, place)`` for every string in ``data``, a value or an object's key, at
    any depth (iteratively: however deep the nesting); a key's place is its object's.

    The places are spelled out only when a check fails: a first walk checks the strings
    alone (every request goes through it), and only then does a second one name where."""
    todo_fast = [data]
    try:
        while todo_fast:
            value = todo_fast.pop()
            if isinstance(value, str):
                check(value, where)
            elif isinstance(value, list):
                todo_fast += value
            elif isinstance(value, dict):
                for key in value:
                    if isinstance(key, str):
                        check(key, where)
                todo_fast += value.values()
    except InputError:
        _each_string_placed(data, where, check)
        raise


def _each_string_placed(data: Any, where: str, check: Callable[[str, str], None]) -> None:
    todo = [(data, where)]
    while todo:
        value, place = todo.pop()
        if isinstance(value, str):
            check(value, place)
        elif isinstance(value, list):
            todo += [(item, f"{place}[{i}]") for i, item in reversed(list(enumerate(value)))]
        elif isinstance(value, dict):
            for key in value:
                if isinstance(key, str):
                    check(key, place)
            todo += [(item, f"{place}.{key}") for key, item in reversed(list(value.items()))]


def check_strings(data: Any, where: str) -> None:
    """Refuse (InputError naming the place) a string anywhere in ``data`` that holds a
    lone surrogate or a NUL, or is longer than :data:`MAX_TEXT`."""

    def check(text: str, place: str) -> None:
        _encodable(text, place)
        _bounded(text, place)

    _each_string(data, where, check)


def decode_job_request(data: Any, *, where: str = "job") -> JobRequest:
    """``{"ops": [...], "priority": p, "depends": [[id, [statuses]]], "reason": text}`` or
    a bare op list."""
    if isinstance(data, list):
        data = {"ops": data}
    # First: a lone surrogate (JSON's "\\ud800") has no UTF-8 form, so it could be neither
    # stored, shown (not even in an error naming it) nor passed to a node.
    _each_string(data, where, _encodable)
    if not isinstance(data, dict):
        raise InputError(f"{where} must be an object with 'ops' or a list of opcodes", field=where)
    unknown = sorted(set(data) - {"ops", "priority", "depends", "reason"})
    if unknown:
        raise InputError(
            f"{where}: unknown field(s) {', '.join(unknown)}; "
            "allowed: ops, priority, depends, reason",
            field=f"{where}.{unknown[0]}",
        )
    ops = data.get("ops")
    if not isinstance(ops, list) or not ops:
        raise InputError(f"{where}.ops must be a non-empty list of opcodes", field=f"{where}.ops")
    if len(ops) > MAX_OPS_PER_JOB:
        raise InputError(
            f"{where}.ops has {len(ops)} opcodes; at most {MAX_OPS_PER_JOB}", field=f"{where}.ops"
        )
    decoded = tuple(decode_opcode(op, where=f"{where}.ops[{i}]") for i, op in enumerate(ops))
    request = JobRequest(
        ops=decoded,
        priority=parse_priority(data.get("priority", 0)),
        depends=_decode_depends(data.get("depends"), f"{where}.depends"),
        reason=check_reason(data.get("reason")),
    )
    # Last, so that a field's own check (with its own limit) speaks first: no string
    # anywhere holds NUL or more than MAX_TEXT characters.
    _each_string(data, where, _bounded)
    return request


def _is_job(item: Any) -> bool:
    return isinstance(item, list) or (isinstance(item, dict) and "ops" in item)


def decode_submission(data: Any) -> list[JobRequest]:
    """``{"jobs": [job, …]}``, a list of jobs, or a single job; returns the batch in order.

    A list counts as a list of jobs when every item is a job (an opcode list or an
    object with ``ops``); otherwise it is one job's opcode list.
    """
    if isinstance(data, list) and data and all(_is_job(item) for item in data):
        data = {"jobs": data}
    if isinstance(data, dict) and "jobs" in data:
        jobs = data["jobs"]
        if set(data) != {"jobs"}:
            raise InputError("a batch submission has only 'jobs'", field="jobs")
        if not isinstance(jobs, list) or not jobs:
            raise InputError("jobs must be a non-empty list", field="jobs")
        if len(jobs) > MAX_JOBS_PER_SUBMIT:
            raise InputError(f"at most {MAX_JOBS_PER_SUBMIT} jobs per submission", field="jobs")
        return [decode_job_request(job, where=f"jobs[{i}]") for i, job in enumerate(jobs)]
    return [decode_job_request(data)]
