"""JSON shapes of jobs and log entries as the API returns them (documented in docs/api.md)."""

from __future__ import annotations

from typing import Any

from starlette import responses

from extjobs.errors import (
    ExtJobsError,
    InputError,
    NotFoundError,
    QueueFullError,
    StateError,
    StoreError,
)
from extjobs.model import codec
from extjobs.model.jobs import Job, LogEntry


class JSONResponse(responses.JSONResponse):
    """starlette's JSON answer (UTF-8, compact), encoded as the store's documents are
    (:func:`extjobs.model.codec.json_bytes`)."""

    def render(self, content: Any) -> bytes:
        return codec.json_bytes(content)


def log_view(entry: LogEntry) -> dict[str, Any]:
    out: dict[str, Any] = {
        "serial": entry.serial,
        "timestamp": entry.timestamp,
        "type": entry.kind,
        "message": entry.message,
    }
    if entry.data:
        out["data"] = entry.data
    return out


def job_view(job: Job, *, detail: bool = True) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": job.id,
        "status": job.status.value,
        "priority": job.priority,
        "summary": job.summaries(),
        "received": job.received,
        "started": job.started,
        "ended": job.ended,
        "archived": job.archived,
        "waiting_for": job.waiting_for,
        "depends": [[d.job_id, [s.value for s in d.statuses]] for d in job.depends],
        "submitter": job.submitter,
        "reason": job.reason,
    }
    if detail:
        out["ops"] = [
            {
                "index": op.index,
                "input": op.input,
                "status": op.status.value,
                "result": op.result,
                "error": op.error,
                "started": op.started,
                "ended": op.ended,
                "duration": None
                if op.started is None or op.ended is None
                else round(op.ended - op.started, 6),
            }
            for op in job.ops
        ]
    return out


def http_status(exc: ExtJobsError) -> int:
    """The HTTP status an error of the engine is answered with (both APIs)."""
    if isinstance(exc, QueueFullError | StoreError):
        return 503
    if isinstance(exc, InputError):
        return 400
    if isinstance(exc, NotFoundError):
        return 404
    if isinstance(exc, StateError):
        return 409
    return 500
