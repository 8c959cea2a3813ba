"""``GET /metrics``: the daemon's metrics in Prometheus's text format.

The route is mounted on the API application (so the Unix socket serves it, and the TCP
listener behind its bearer token: any read token may scrape), and :func:`build_metrics_app`
serves it alone for the optional plain-HTTP ``[metrics] listen`` address. The exposition
is ``prometheus_client``'s own, negotiated from the ``Accept`` header (the classic text
format, or OpenMetrics when the scraper asks for it); what it exposes is the daemon's
registry (see :mod:`extjobs.engine.metrics`).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

PATH = "/metrics"


def metrics_route(registry: CollectorRegistry) -> Route:
    """The ``GET /metrics`` route exposing ``registry``."""

    async def metrics(request: Request) -> Response:
        encoder, content_type = choose_encoder(request.headers.get("accept", ""))
        # Collecting reads the job book and the runner's pools: on the event loop, so
        # that nothing changes under it (it takes milliseconds for thousands of jobs).
        return Response(encoder(registry), media_type=content_type)

    return Route(PATH, metrics, methods=["GET"])


def build_metrics_app(registry: CollectorRegistry) -> Starlette:
    """The application of the ``[metrics] listen`` address: ``/metrics`` and nothing else."""

    async def not_found(request: Request, exc: Exception) -> Response:
        return JSONResponse(
            {
                "error": {
                    "kind": "not_found",
                    "message": f"only GET {PATH} is served here, not {request.url.path}",
                }
            },
            status_code=404,
        )

    async def bad_method(request: Request, exc: Exception) -> Response:
        return JSONResponse(
            {"error": {"kind": "method", "message": f"{request.method} is not allowed"}},
            status_code=405,
        )

    return Starlette(
        routes=[metrics_route(registry)],
        exception_handlers={404: not_found, 405: bad_method},
    )


__all__ = ["PATH", "build_metrics_app", "metrics_route"]
