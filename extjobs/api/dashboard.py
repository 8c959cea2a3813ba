"""The live web dashboard: read-only pages under ``/ui/`` served by the daemon.

Theory of operation: each page is rendered on the server (:mod:`.dashboard_pages`) from
the same views the JSON API answers with. Its live part names an event stream
(``/ui/events/…``, server-sent events); the small script in ``static/dashboard.js``
opens it and swaps in each fragment the server sends. A job's stream follows the job
with the queue's long-poll (``wait_for_change``: a fragment per new log line); the
lists are rendered again every :data:`LIST_PERIOD` seconds and sent only when the
HTML changed. ``EventSource`` reconnects by itself when the daemon restarts, and the
session cookie (:mod:`.dashboard_auth`) outlives the restart.

Where a disk is attached comes from the journal's ledger (:mod:`extjobs.lus.ledger`),
replayed from the store through ``journal`` (a callable the daemon passes in); provider
validity per node group from the newest successful ``OP_EXTSTORAGE_DIAGNOSE`` job.
"""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from importlib import resources
from urllib.parse import parse_qs

import anyio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import (
    HTMLResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Route

from extjobs.api import dashboard_pages as pages
from extjobs.api.auth import SUBMITTER
from extjobs.api.dashboard_auth import (
    CSRF_COOKIE,
    SESSION_COOKIE,
    SESSION_SECONDS,
    Sessions,
    safe_next,
    same_origin,
)
from extjobs.api.jobsearch import parse_job_query, search_page
from extjobs.api.views import job_view
from extjobs.engine.standby import QueueView
from extjobs.errors import ExtJobsError, InputError, NotFoundError
from extjobs.lus.instance import instance_summary
from extjobs.lus.ledger import LEDGER_KINDS, build_ledger
from extjobs.lus.node import node_summary
from extjobs.model import codec
from extjobs.model.jobquery import JobQuery
from extjobs.model.journal import JournalRecord
from extjobs.model.opcodes import OPCODES
from extjobs.model.states import JobStatus
from extjobs.model.steps import StepKind

log = logging.getLogger("extjobs.dashboard")

#: Seconds between renderings of a list page's live part (sent only when it changed).
LIST_PERIOD = 1.0
#: Seconds between keep-alive comments on a quiet stream (proxies close idle ones).
KEEPALIVE = 15.0
#: What the browser waits before it reconnects a broken stream (milliseconds).
RETRY_MS = 1000
MAX_FORM = 4096

#: Reads the journal records of these kinds from the store (``Store.load_journal_kinds``).
Journal = Callable[[tuple[StepKind, ...]], list[JournalRecord]]

STATIC = {"dashboard.js": "text/javascript", "dashboard.css": "text/css"}


def _static(name: str) -> bytes:
    return resources.files("extjobs.api").joinpath("static", name).read_bytes()


def sse(event: str, data: str) -> str:
    """One server-sent event; every line of ``data`` gets its own ``data:`` field."""
    lines = "".join(f"data: {line}\n" for line in data.split("\n"))
    return f"event: {event}\n{lines}\n"


def build_dashboard(
    view: QueueView, sessions: Sessions, *, journal: Journal | None = None
) -> Starlette:
    """The dashboard's ASGI app (behind a :class:`~.dashboard_auth.DashboardGate`)."""

    def user_of(request: Request) -> str | None:
        return None if sessions.open else request.scope.get("state", {}).get(SUBMITTER)

    def respond(
        request: Request,
        title: str,
        body: str,
        *,
        nav: str = "",
        status: int = 200,
        csrf: str | None = None,
    ) -> HTMLResponse:
        csrf = csrf or request.cookies.get(CSRF_COOKIE) or sessions.new_csrf()
        response = HTMLResponse(
            pages.page(title, body, nav=nav, user=user_of(request), csrf=csrf),
            status_code=status,
            headers={
                "Cache-Control": "no-store",
                "Content-Security-Policy": "default-src 'self'; frame-ancestors 'none'",
                "X-Content-Type-Options": "nosniff",
                "Referrer-Policy": "same-origin",
            },
        )
        if CSRF_COOKIE not in request.cookies:
            sessions.set_cookie(response, CSRF_COOKIE, csrf, 3600 * 24)
        return response

    def not_found(request: Request, what: str) -> HTMLResponse:
        return respond(request, "Not found", pages.not_found(what), status=404)

    # -- what the pages show ----------------------------------------------------------

    def attached() -> dict[str, list[str]]:
        """Per volume, the nodes the journal says it may be attached on now."""
        if journal is None:
            return {}
        ledger = build_ledger(journal(LEDGER_KINDS))
        return {name: sorted(st.attached) for name, st in ledger.items() if st.exists}

    def jobs_live(params: Mapping[str, str]) -> str:
        jobs, cursor = search_page(view, parse_job_query(params, time.time()))
        return pages.jobs_fragment(jobs, params, cursor)

    def job_live(job_id: int, shown: list[int] | None = None) -> str:
        """The live part of a job's page; ``shown`` gets the last log serial in it."""
        job = view.get(job_id)
        entries = view.log_since(job_id, 0)
        if shown is not None:
            shown[:] = [entries[-1].serial if entries else 0]
        return pages.job_fragment(job_view(job), job, entries)

    def instances_live() -> str:
        cfg = view.config
        seen = view.observed()
        shown = [
            {**instance_summary(i, cfg), "observed": seen.get(name)}
            for name, i in sorted(cfg.instances.items())
        ]
        return pages.instances_fragment(shown, attached())

    def instance_live(name: str) -> str:
        cfg = view.config
        instance = cfg.instances.get(name)
        if instance is None:
            raise NotFoundError(f"instance {name!r} does not exist", instance=name)
        recent = view.search_jobs(JobQuery(instance=name, limit=10))
        shown = {**instance_summary(instance, cfg), "observed": view.observed().get(name)}
        return pages.instance_fragment(shown, attached(), recent)

    def nodes_live() -> str:
        cfg = view.config
        nodes = [node_summary(n, cfg) for _, n in sorted(cfg.nodes.items())]
        groups = {name: codec.unstructure(g) for name, g in cfg.groups.items()}
        connections = view.runner_statistics().get("connections", {})
        found = view.search_jobs(
            JobQuery(opcode="OP_EXTSTORAGE_DIAGNOSE", statuses=(JobStatus.SUCCESS,), limit=1)
        )
        diagnose = found[0].ops[0].result if found else None
        return pages.nodes_fragment(
            nodes,
            groups,
            connections,
            diagnose if isinstance(diagnose, dict) else None,
            found[0] if found else None,
            cfg.cluster.pools if cfg.cluster is not None else {},
            watched=(view.watcher_status().get("last_round") or {}).get("nodes") or {},
        )

    # -- pages ----------------------------------------------------------------------

    async def home(request: Request) -> Response:
        return RedirectResponse(f"{pages.PREFIX}/jobs", status_code=303)

    async def jobs(request: Request) -> Response:
        params = dict(request.query_params)
        try:
            fragment = jobs_live(params)
        except InputError as exc:
            fragment = f'<p class="error">{pages.e(exc.message)}</p>'
        filters = pages.job_filters(params, sorted(OPCODES), [s.value for s in JobStatus])
        events = f"{pages.PREFIX}/events/jobs" + (
            f"?{request.url.query}" if request.url.query else ""
        )
        body = f"<h1>Jobs</h1>{filters}{pages.live(events, fragment)}"
        return respond(request, "Jobs", body, nav="jobs")

    def path_job_id(request: Request) -> int | None:
        raw = request.path_params["job_id"]
        return int(raw) if raw.isascii() and raw.isdigit() and len(raw) < 19 else None

    async def job(request: Request) -> Response:
        job_id = path_job_id(request)
        if job_id is None:
            return not_found(request, f"job {request.path_params['job_id'][:40]!r} does not exist")
        try:
            fragment = job_live(job_id)
            title = ", ".join(view.get(job_id).summaries())
        except NotFoundError as exc:
            return not_found(request, exc.message)
        body = f'<h1>Job {job_id}</h1><p class="summary">{pages.e(title)}</p>' + pages.live(
            f"{pages.PREFIX}/events/jobs/{job_id}", fragment
        )
        return respond(request, f"Job {job_id}", body, nav="jobs")

    async def instances(request: Request) -> Response:
        body = "<h1>Instances</h1>" + pages.live(
            f"{pages.PREFIX}/events/instances", instances_live()
        )
        return respond(request, "Instances", body, nav="instances")

    async def instance(request: Request) -> Response:
        name = request.path_params["name"]
        try:
            fragment = instance_live(name)
        except NotFoundError as exc:
            return not_found(request, exc.message)
        body = f"<h1>Instance {pages.e(name)}</h1>" + pages.live(
            f"{pages.PREFIX}/events/instances/{pages.e(name)}", fragment
        )
        return respond(request, f"Instance {name}", body, nav="instances")

    async def nodes(request: Request) -> Response:
        body = "<h1>Nodes and groups</h1>" + pages.live(
            f"{pages.PREFIX}/events/nodes", nodes_live()
        )
        return respond(request, "Nodes", body, nav="nodes")

    async def static(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in STATIC:
            return not_found(request, f"no such file: {name[:40]}")
        return Response(
            _static(name), media_type=STATIC[name], headers={"Cache-Control": "no-cache"}
        )

    # -- logging in -----------------------------------------------------------------

    async def login_form(request: Request) -> Response:
        target = safe_next(request.query_params.get("next"))
        csrf = request.cookies.get(CSRF_COOKIE) or sessions.new_csrf()
        return respond(request, "Log in", pages.login_form(csrf, target, None), csrf=csrf)

    async def form_of(request: Request) -> dict[str, str]:
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_FORM:
                raise InputError("form too large", field="body")
        parsed = parse_qs(body.decode("utf-8", "replace"), max_num_fields=8)
        return {k: v[0] for k, v in parsed.items()}

    def forged(request: Request, form: Mapping[str, str]) -> bool:
        cookie = request.cookies.get(CSRF_COOKIE, "")
        given = form.get("csrf", "")
        return not (
            same_origin(request)
            and cookie
            and given
            and hmac.compare_digest(cookie.encode(), given.encode())
        )

    async def login(request: Request) -> Response:
        try:
            form = await form_of(request)
        except InputError as exc:
            return respond(request, "Log in", pages.not_found(exc.message), status=400)
        target = safe_next(form.get("next"))
        if forged(request, form):
            # respond() sets the CSRF cookie when the browser has none (an expired form).
            csrf = request.cookies.get(CSRF_COOKIE) or sessions.new_csrf()
            return respond(
                request,
                "Log in",
                pages.login_form(
                    csrf, target, "the form expired or came from another site; try again"
                ),
                status=403,
                csrf=csrf,
            )
        holder = None if sessions.open else sessions.holder(form.get("token", ""))
        if holder is None and not sessions.open:
            csrf = request.cookies[CSRF_COOKIE]
            log.warning("dashboard login refused from %s", request.client)
            return respond(
                request, "Log in", pages.login_form(csrf, target, "unknown token"), status=401
            )
        done = RedirectResponse(target, status_code=303)
        if holder is not None:
            sessions.set_cookie(done, SESSION_COOKIE, sessions.cookie_for(holder), SESSION_SECONDS)
        return done

    async def logout(request: Request) -> Response:
        try:
            form = await form_of(request)
        except InputError:
            form = {}
        if forged(request, form):
            return respond(request, "Log out", pages.not_found("log out from the page"), status=403)
        response = RedirectResponse(f"{pages.PREFIX}/login", status_code=303)
        response.delete_cookie(SESSION_COOKIE, path=pages.PREFIX)
        return response

    # -- live streams ----------------------------------------------------------------

    def stream(render: Callable[[], str], wait: Callable[[], Awaitable[None]]) -> StreamingResponse:
        async def events() -> AsyncIterator[str]:
            yield f"retry: {RETRY_MS}\n\n"
            last = None
            quiet = 0.0
            while True:
                started = time.monotonic()
                try:
                    fragment = render()
                except NotFoundError as exc:
                    yield sse("gone", exc.message)
                    return
                except ExtJobsError as exc:
                    fragment = f'<p class="error">{pages.e(exc.message)}</p>'
                if fragment != last:
                    yield sse("html", fragment)
                    last, quiet = fragment, 0.0
                elif quiet >= KEEPALIVE:
                    yield ": keep-alive\n\n"
                    quiet = 0.0
                await wait()
                quiet += time.monotonic() - started

        return StreamingResponse(
            events(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    async def every_period() -> None:
        await anyio.sleep(LIST_PERIOD)

    async def jobs_events(request: Request) -> Response:
        params = dict(request.query_params)
        return stream(lambda: jobs_live(params), every_period)

    async def job_events(request: Request) -> Response:
        job_id = path_job_id(request)
        if job_id is None:
            return not_found(request, "no such job")

        # The serial of the last log line sent: the long poll waits for the next one.
        shown = [0]

        async def wait() -> None:
            if view.get(job_id).status.finalized:
                await anyio.sleep(KEEPALIVE)
                return
            await view.wait_for_change(job_id, shown[0], KEEPALIVE)

        return stream(lambda: job_live(job_id, shown), wait)

    async def instances_events(request: Request) -> Response:
        return stream(instances_live, every_period)

    async def instance_events(request: Request) -> Response:
        name = request.path_params["name"]
        return stream(lambda: instance_live(name), every_period)

    async def nodes_events(request: Request) -> Response:
        return stream(nodes_live, every_period)

    async def missing(request: Request, exc: Exception) -> Response:
        return not_found(request, f"no such page: {request.url.path[:80]}")

    async def broken(request: Request, exc: Exception) -> Response:
        log.error("dashboard error serving %s", request.url.path, exc_info=exc)
        return respond(
            request, "Error", pages.not_found("internal error; see the daemon log"), status=500
        )

    async def bad_method(request: Request, exc: Exception) -> Response:
        return respond(
            request, "Not allowed", pages.not_found("the dashboard only shows"), status=405
        )

    p = pages.PREFIX
    routes = [
        Route(p, home, methods=["GET"]),
        Route(f"{p}/", home, methods=["GET"]),
        Route(f"{p}/login", login_form, methods=["GET"]),
        Route(f"{p}/login", login, methods=["POST"]),
        Route(f"{p}/logout", logout, methods=["POST"]),
        Route(f"{p}/static/{{name}}", static, methods=["GET"]),
        Route(f"{p}/jobs", jobs, methods=["GET"]),
        Route(f"{p}/jobs/{{job_id}}", job, methods=["GET"]),
        Route(f"{p}/instances", instances, methods=["GET"]),
        Route(f"{p}/instances/{{name}}", instance, methods=["GET"]),
        Route(f"{p}/nodes", nodes, methods=["GET"]),
        Route(f"{p}/events/jobs", jobs_events, methods=["GET"]),
        Route(f"{p}/events/jobs/{{job_id}}", job_events, methods=["GET"]),
        Route(f"{p}/events/instances", instances_events, methods=["GET"]),
        Route(f"{p}/events/instances/{{name}}", instance_events, methods=["GET"]),
        Route(f"{p}/events/nodes", nodes_events, methods=["GET"]),
    ]
    return Starlette(
        routes=routes, exception_handlers={404: missing, 405: bad_method, Exception: broken}
    )
