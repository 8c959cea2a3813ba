"""The HTTP JSON API (``/v1/…``) served by the daemon.

This layer validates and decodes requests and encodes answers; every decision is the
engine's. Errors have one shape: ``{"error": {"kind", "message", "field"?, …}}`` with
400 (bad input), 404 (unknown object), 409 (wrong state), 413 (body too large),
503 (queue full, or the store refuses writes: disk full, I/O error) and 500 only for a
bug.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import attrs
from prometheus_client import CollectorRegistry
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

import extjobs
from extjobs.api import jobsearch
from extjobs.api.auth import SUBMITTER
from extjobs.api.listings import Listings
from extjobs.api.metrics import metrics_route
from extjobs.api.views import JSONResponse, http_status, job_view, log_view
from extjobs.engine.standby import Master, QueueView
from extjobs.errors import (
    ExtJobsError,
    InputError,
    NotFoundError,
    StateError,
)
from extjobs.model import codec
from extjobs.model.requests import decode_submission

log = logging.getLogger("extjobs.api")

MAX_BODY = 1 << 20
MAX_WAIT = 60.0
MAX_JOB_ID = 1 << 63

Handler = Callable[[Request], Awaitable[Response]]
#: Copies the store to a new file and describes the copy (``{"path", "bytes", …}``).
Backup = Callable[[Path], dict[str, Any]]


def _line(data: Any) -> bytes:
    """One line of a streamed answer (``application/x-ndjson``)."""
    return json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"


def error_response(status: int, kind: str, message: str, **fields: Any) -> JSONResponse:
    return JSONResponse({"error": {"kind": kind, "message": message, **fields}}, status_code=status)


def _endpoint(fn: Handler) -> Handler:
    async def wrapped(request: Request) -> Response:
        try:
            return await fn(request)
        except ExtJobsError as exc:
            return JSONResponse({"error": exc.to_dict()}, status_code=http_status(exc))
        except Exception:
            log.exception("internal error serving %s %s", request.method, request.url.path)
            return error_response(500, "internal", "internal error; see the daemon log")

    return wrapped


async def _json_body(request: Request) -> Any:
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > MAX_BODY:
        raise _TooLarge(f"request body exceeds {MAX_BODY} bytes", field="body")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY:
            raise _TooLarge(f"request body exceeds {MAX_BODY} bytes", field="body")
    try:
        return json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"request body is not valid JSON: {exc}", field="body") from None
    except RecursionError:
        # json's decoder recurses once per nested array or object.
        raise InputError("request body nests arrays or objects too deeply", field="body") from None


class _TooLarge(InputError):
    kind = "too_large"


def _shown(raw: str) -> str:
    """``raw`` for an error message: quoted, and cut short when it is long."""
    return repr(raw) if len(raw) <= 40 else repr(raw[:40]) + f"... ({len(raw)} characters)"


#: A serial or id as clients write it: ASCII digits only (``int()`` would also take
#: blanks, ``_`` and other scripts' digits).
_DIGITS = re.compile(r"[0-9]+")


def _int_param(request: Request, name: str, default: int | None = None) -> int:
    """A whole-number query parameter in ``0 .. 2**63-1`` (what a store can hold)."""
    raw = request.query_params.get(name)
    if raw is None:
        if default is None:
            raise InputError(f"query parameter {name} is required", field=name)
        return default
    if not _DIGITS.fullmatch(raw):
        raise InputError(
            f"query parameter {name} must be a whole number >= 0, not {_shown(raw)}", field=name
        )
    if len(raw.lstrip("0")) > len(str(MAX_JOB_ID)) or int(raw) >= MAX_JOB_ID:
        raise InputError(f"query parameter {name} must be below 2**63", field=name)
    return int(raw)


def _float_param(request: Request, name: str, default: float) -> float:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise InputError(
            f"query parameter {name} must be a number, not {raw!r}", field=name
        ) from None
    if not 0 <= value <= 3600:
        raise InputError(f"query parameter {name} must be between 0 and 3600", field=name)
    return value


def _job_id(request: Request) -> int:
    """The job id of the path: 400 unless ASCII digits, 404 beyond what a store holds."""
    raw = request.path_params["job_id"]
    if not _DIGITS.fullmatch(raw):
        raise InputError(f"job id must be a whole number, not {_shown(raw)}", field="job_id")
    # Beyond a signed 64-bit integer no store has such a job (SQLite would overflow);
    # the length test first keeps int() away from thousands of digits.
    if len(raw.lstrip("0")) > len(str(MAX_JOB_ID)) or not 0 < int(raw) < MAX_JOB_ID:
        shown = raw if len(raw) <= 40 else f"{raw[:40]}... ({len(raw)} digits)"
        raise NotFoundError(f"job {shown} does not exist", job=raw[:40])
    return int(raw)


def submitted_by(submitter: str | None, user: str) -> bool:
    """Whether a job's ``submitter`` matches ``user``: the whole ``SOURCE:NAME``
    (``unix:alice``), or just NAME (``alice``, whichever API it came through)."""
    if submitter is None or not user:
        return False
    return user == submitter or (":" not in user and submitter.partition(":")[2] == user)


def build_app(
    target: QueueView,
    *,
    backup: Backup | None = None,
    metrics: CollectorRegistry | None = None,
) -> Starlette:
    """The ASGI application of one master: its queue, or a :class:`Master` that switches
    between the leader's queue and a standby's view of the shared store; ``backup``
    (blocking, run in a worker thread) serves ``POST /v1/backup`` where the store can be
    copied online; ``metrics`` is served as ``GET /metrics`` (:mod:`extjobs.api.metrics`)."""
    master = target if isinstance(target, Master) else Master(target)
    queue: QueueView = master
    listings = Listings()

    @_endpoint
    async def masters(request: Request) -> Response:
        lease, seen = master.masters()
        return JSONResponse(
            {
                "this": master.name,
                "leads": master.leads,
                "lease": None
                if lease is None
                else {
                    "holder": lease.holder,
                    "epoch": lease.epoch,
                    "remaining": round(lease.remaining, 3),
                },
                "masters": [
                    {"name": m.name, "address": m.address, "seen_ago": round(m.seen_ago, 3)}
                    for m in seen
                ],
            }
        )

    @_endpoint
    async def backup_store(request: Request) -> Response:
        body = await _json_body(request)
        if not isinstance(body, dict) or set(body) != {"path"}:
            raise InputError('the body must be {"path": "/absolute/new/file"}', field="body")
        raw = body["path"]
        if not isinstance(raw, str) or not raw or "\0" in raw:
            raise InputError("path must be a non-empty string without NUL", field="path")
        if backup is None:
            raise StateError("this daemon's store has no online backup", field="path")
        answer = await anyio.to_thread.run_sync(backup, Path(raw))
        return JSONResponse(answer, status_code=201)

    @_endpoint
    async def info(request: Request) -> Response:
        cfg = queue.config
        return JSONResponse(
            {
                "version": extjobs.__version__,
                "cluster": cfg.cluster.name if cfg.cluster else None,
                "statistics": {**queue.statistics(), "runner": queue.runner_statistics()},
            }
        )

    @_endpoint
    async def submit(request: Request) -> Response:
        try:
            batch = decode_submission(await _json_body(request))
        except _TooLarge:
            return error_response(413, "too_large", f"request body exceeds {MAX_BODY} bytes")
        # Who is asking comes from the connection (token, socket peer), never the body.
        submitter = request.scope.get("state", {}).get(SUBMITTER)
        if submitter is not None:
            batch = [attrs.evolve(job, submitter=submitter) for job in batch]
        # ``?wait=S``: submit and answer once every job of the batch has ended (or after
        # S seconds), with the jobs: one round trip for a caller that wants the result.
        wait = (
            min(_float_param(request, "wait", 0.0), MAX_WAIT)
            if "wait" in request.query_params
            else None
        )
        ids = queue.submit(batch)
        # Answered once the jobs are in the store: an id given out is never lost.
        await queue.flush()
        if wait is None:
            return JSONResponse({"job_ids": ids}, status_code=201)
        jobs = []
        with anyio.move_on_after(wait):
            for job_id in ids:
                # A serial beyond any entry: the wait ends only when the job has ended.
                job, _ = await queue.wait_for_change(job_id, MAX_JOB_ID, MAX_WAIT)
                jobs.append(job)
        jobs += [queue.get(job_id) for job_id in ids[len(jobs) :]]
        return JSONResponse({"job_ids": ids, "jobs": [job_view(j) for j in jobs]}, status_code=201)

    @_endpoint
    async def list_jobs(request: Request) -> Response:
        return await jobsearch.list_jobs(queue, request)

    @_endpoint
    async def get_job(request: Request) -> Response:
        job_id = _job_id(request)
        job = queue.get(job_id)
        out = job_view(job)
        out["log"] = [log_view(e) for e in queue.log_since(job_id, 0)]
        return JSONResponse(out)

    @_endpoint
    async def wait_job(request: Request) -> Response:
        job_id = _job_id(request)
        since = _int_param(request, "since", 0)
        timeout = min(_float_param(request, "timeout", 30.0), MAX_WAIT)
        job, entries = await queue.wait_for_change(job_id, since, timeout)
        return JSONResponse({"job": job_view(job), "log": [log_view(e) for e in entries]})

    @_endpoint
    async def watch_job(request: Request) -> Response:
        """One streamed answer per watcher: a line of JSON (``{"job", "log"}``) each time
        the job has new log entries, at least every ``heartbeat`` seconds, and last once
        it has ended; what a series of long polls gives, on one request."""
        job_id = _job_id(request)
        since = _int_param(request, "since", 0)
        heartbeat = min(_float_param(request, "heartbeat", 30.0), MAX_WAIT)
        # The first line is what is there now: an unknown job is a 404, not a stream.
        first = await queue.wait_for_change(job_id, since, 0.0)

        async def lines() -> AsyncIterator[bytes]:
            nonlocal since
            job, entries = first
            while True:
                if entries:
                    since = entries[-1].serial
                yield _line({"job": job_view(job), "log": [log_view(e) for e in entries]})
                if job.status.finalized and not entries:
                    return
                job, entries = await queue.wait_for_change(job_id, since, heartbeat)

        return StreamingResponse(lines(), media_type="application/x-ndjson")

    @_endpoint
    async def cancel_job(request: Request) -> Response:
        job = queue.cancel(_job_id(request))
        await queue.flush()
        return JSONResponse(job_view(job, detail=False))

    @_endpoint
    async def archive_job(request: Request) -> Response:
        job = queue.archive(_job_id(request))
        await queue.flush()
        return JSONResponse(job_view(job, detail=False))

    @_endpoint
    async def cluster(request: Request) -> Response:
        cfg = queue.config
        return JSONResponse(
            {
                "cluster": codec.unstructure(cfg.cluster),
                "groups": {n: codec.unstructure(g) for n, g in sorted(cfg.groups.items())},
                "nodes": len(cfg.nodes),
                "instances": len(cfg.instances),
                "serial": cfg.serial,
            }
        )

    @_endpoint
    async def nodes(request: Request) -> Response:
        return Response(listings.nodes(queue.config), media_type="application/json")

    async def _observe(request: Request) -> bool | None:
        """With ``?refresh=1``: wait (``timeout``, default 10 s) for a fresh observation
        of the watcher; whether it came (None: not asked)."""
        if request.query_params.get("refresh", "0") not in ("1", "true", "yes"):
            return None
        timeout = min(_float_param(request, "timeout", 10.0), MAX_WAIT)
        return await queue.wait_observation(timeout)

    def _with_observed(data: dict[str, Any], observed: dict[str, Any]) -> dict[str, Any]:
        data["observed"] = observed.get(data["name"])
        return data

    @_endpoint
    async def instances(request: Request) -> Response:
        fresh = await _observe(request)
        body = listings.instances(queue.config, queue.observations(), extra={"refreshed": fresh})
        return Response(body, media_type="application/json")

    @_endpoint
    async def instance(request: Request) -> Response:
        from extjobs.lus.instance import instance_summary

        fresh = await _observe(request)
        cfg = queue.config
        data = instance_summary(cfg.instance(request.path_params["name"]), cfg)
        data = _with_observed(data, queue.observed())
        data["refreshed"] = fresh
        return JSONResponse(data)

    @_endpoint
    async def watcher(request: Request) -> Response:
        return JSONResponse(queue.watcher_status())

    async def not_found(request: Request, exc: Exception) -> Response:
        return error_response(
            404, "not_found", f"no such endpoint: {request.method} {request.url.path}"
        )

    async def bad_method(request: Request, exc: Exception) -> Response:
        return error_response(
            405, "method", f"{request.method} is not allowed on {request.url.path}"
        )

    routes = [
        Route("/v1/info", info, methods=["GET"]),
        Route("/v1/masters", masters, methods=["GET"]),
        Route("/v1/jobs", submit, methods=["POST"]),
        Route("/v1/jobs", list_jobs, methods=["GET"]),
        Route("/v1/jobs/{job_id}", get_job, methods=["GET"]),
        Route("/v1/jobs/{job_id}/wait", wait_job, methods=["GET"]),
        Route("/v1/jobs/{job_id}/watch", watch_job, methods=["GET"]),
        Route("/v1/jobs/{job_id}/cancel", cancel_job, methods=["POST"]),
        Route("/v1/jobs/{job_id}/archive", archive_job, methods=["POST"]),
        Route("/v1/backup", backup_store, methods=["POST"]),
        Route("/v1/cluster", cluster, methods=["GET"]),
        Route("/v1/nodes", nodes, methods=["GET"]),
        Route("/v1/instances", instances, methods=["GET"]),
        Route("/v1/instances/{name}", instance, methods=["GET"]),
        Route("/v1/watcher", watcher, methods=["GET"]),
    ]
    if metrics is not None:
        routes.append(metrics_route(metrics))
    return Starlette(routes=routes, exception_handlers={404: not_found, 405: bad_method})
