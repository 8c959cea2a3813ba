"""``GET /v1/jobs``: the job search (filters, cursor paging), shared by the API and the
dashboard. The filters and their errors are documented in docs/api.md.

Query parameters: ``status`` (comma-separated, any of), ``opcode``, ``instance``,
``node``, ``user``, ``since`` (``2h``, ``30m``, ``1d`` or a Unix time), ``limit``
(1…1000, default 100), ``cursor`` (the ``next`` of the previous page), ``archived``
(``1``: include archived jobs). The answer is ``{"jobs": [...], "next": CURSOR|null}``,
newest job first; ``next`` is null on the last page.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping

import attrs
from starlette.requests import Request
from starlette.responses import Response

from extjobs.api.views import JSONResponse, job_view
from extjobs.engine.standby import QueueView
from extjobs.errors import InputError
from extjobs.model.cluster import check_name
from extjobs.model.jobquery import DEFAULT_LIMIT, MAX_LIMIT, JobQuery, parse_since
from extjobs.model.jobs import Job
from extjobs.model.opcodes import OPCODES
from extjobs.model.states import JobStatus

_DIGITS = re.compile(r"[0-9]{1,18}")
_KNOWN = frozenset(
    {"status", "opcode", "instance", "node", "user", "since", "limit", "cursor", "archived"}
)


def _shown(raw: str) -> str:
    return repr(raw) if len(raw) <= 40 else repr(raw[:40]) + "..."


def parse_statuses(raw: str) -> tuple[JobStatus, ...]:
    statuses = []
    for name in filter(None, (part.strip() for part in raw.split(","))):
        try:
            statuses.append(JobStatus(name))
        except ValueError:
            raise InputError(
                f"unknown status {_shown(name)}; use {', '.join(s.value for s in JobStatus)}",
                field="status",
            ) from None
    return tuple(statuses)


def parse_job_query(params: Mapping[str, str], now: float) -> JobQuery:
    """The :class:`JobQuery` of a request's query parameters; raises InputError naming
    the parameter that is wrong (an unknown one included)."""
    unknown = sorted(set(params) - _KNOWN)
    if unknown:
        raise InputError(
            f"unknown query parameter {_shown(unknown[0])}; use {', '.join(sorted(_KNOWN))}",
            field=unknown[0],
        )
    opcode = params.get("opcode") or None
    if opcode is not None and opcode not in OPCODES:
        raise InputError(
            f"unknown opcode {_shown(opcode)}; known: {', '.join(sorted(OPCODES))}",
            field="opcode",
        )
    names: dict[str, str | None] = {}
    for key, kind in (("instance", "instance name"), ("node", "node name")):
        value = params.get(key) or None
        if value is not None:
            check_name(kind, value, key)
        names[key] = value
    # An empty user is nobody's (no submitter is empty), as it always was.
    user = params.get("user")
    if user is not None and (len(user) > 200 or any(ord(c) < 32 for c in user)):
        raise InputError("user must be a printable name of at most 200 characters", field="user")
    limit = DEFAULT_LIMIT
    if "limit" in params:
        if not _DIGITS.fullmatch(params["limit"]) or not 1 <= int(params["limit"]) <= MAX_LIMIT:
            raise InputError(
                f"limit must be a whole number from 1 to {MAX_LIMIT}, not "
                f"{_shown(params['limit'])}",
                field="limit",
            )
        limit = int(params["limit"])
    before = None
    if params.get("cursor"):
        if not _DIGITS.fullmatch(params["cursor"]):
            raise InputError(
                f"cursor {_shown(params['cursor'])} is not one this API gave out (use the "
                "'next' of the previous page)",
                field="cursor",
            )
        before = int(params["cursor"])
    since = parse_since(params["since"], now) if params.get("since") else None
    return JobQuery(
        statuses=parse_statuses(params.get("status", "")),
        opcode=opcode,
        instance=names["instance"],
        node=names["node"],
        user=user,
        since=since,
        before=before,
        limit=limit,
        archived=params.get("archived", "0") in ("1", "true", "yes"),
    )


def search_page(view: QueueView, query: JobQuery) -> tuple[list[Job], int | None]:
    """One page of jobs and the cursor of the next (None: this is the last page)."""
    jobs = view.search_jobs(attrs.evolve(query, limit=query.limit + 1))
    if len(jobs) > query.limit:
        return jobs[: query.limit], jobs[query.limit - 1].id
    return jobs, None


async def list_jobs(view: QueueView, request: Request) -> Response:
    query = parse_job_query(request.query_params, time.time())
    jobs, cursor = search_page(view, query)
    return JSONResponse(
        {
            "jobs": [job_view(j, detail=False) for j in jobs],
            "next": None if cursor is None else str(cursor),
        }
    )
