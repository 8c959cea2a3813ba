"""A small synchronous client of the HTTP API over the daemon's Unix socket.

Every request is bounded: the daemon must answer within ``timeout`` seconds (a long
poll within its own wait plus ``timeout``), so a daemon that accepts connections but
never answers — stopped with SIGSTOP, or stuck — is reported as such, not waited for.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, Self
from urllib.parse import quote

import httpx

from extjobs.errors import ExtJobsError


class ApiError(ExtJobsError):
    """The daemon answered with an error (``status`` is the HTTP status)."""

    kind = "api"


class DaemonUnavailableError(ExtJobsError):
    kind = "unavailable"


#: Seconds the daemon has to answer a request (beyond a long poll's own wait).
DEFAULT_TIMEOUT = 20.0
#: Seconds one long poll of :meth:`Client.follow` lets the daemon wait for news.
POLL = 30.0


class Client:
    """``timeout``: seconds the daemon has to answer (see the module docstring)."""

    def __init__(self, socket: Path, *, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.socket = socket
        self.timeout = timeout
        self._http = httpx.Client(
            transport=httpx.HTTPTransport(uds=str(socket)),
            base_url="http://extjobs",
            timeout=httpx.Timeout(timeout),
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(self, method: str, path: str, *, patience: float = 0.0, **kwargs: Any) -> Any:
        """Send one request; the decoded answer. ``patience``: seconds the daemon may
        take on purpose (a long poll, a backup) on top of :attr:`timeout`.

        Raises :class:`DaemonUnavailableError` when the daemon cannot be reached or does
        not answer in time, :class:`ApiError` when it answers with an error."""
        limit = self.timeout + patience
        try:
            response = self._http.request(
                method, path, timeout=httpx.Timeout(self.timeout, read=limit), **kwargs
            )
        except httpx.TimeoutException as exc:
            raise DaemonUnavailableError(
                f"the extjobs daemon at {self.socket} did not answer {method} {path} within "
                f"{limit:g}s ({type(exc).__name__}); is it stopped or stuck? "
                "(--timeout or EXTJOBS_TIMEOUT sets how long to wait)",
                socket=str(self.socket),
                timeout=limit,
            ) from None
        except httpx.TransportError as exc:
            raise DaemonUnavailableError(
                f"cannot reach the extjobs daemon at {self.socket}: {exc}",
                socket=str(self.socket),
            ) from None
        try:
            body = response.json()
        except ValueError:
            body = {"error": {"kind": "http", "message": response.text[:500]}}
        if response.status_code >= 400:
            err = body.get("error", {}) if isinstance(body, dict) else {}
            raise ApiError(
                str(err.get("message", f"HTTP {response.status_code}")),
                status=response.status_code,
                **{k: v for k, v in err.items() if k not in ("message",)},
            )
        return body

    # -- endpoints ---------------------------------------------------------------------

    def info(self) -> dict[str, Any]:
        return dict(self.request("GET", "/v1/info"))

    def submit(self, body: Any) -> list[int]:
        return list(self.request("POST", "/v1/jobs", json=body)["job_ids"])

    def submit_ops(self, ops: list[dict[str, Any]], *, priority: int = 0) -> int:
        return self.submit({"ops": ops, "priority": priority})[0]

    def jobs(
        self,
        *,
        statuses: list[str] | None = None,
        archived: bool = False,
        user: str | None = None,
    ) -> list[Any]:
        """Every job matching, oldest first (all pages of :meth:`search_jobs`)."""
        found: list[Any] = []
        cursor = None
        while True:
            page = self.search_jobs(
                statuses=statuses, archived=archived, user=user, limit=1000, cursor=cursor
            )
            found.extend(page["jobs"])
            cursor = page["next"]
            if cursor is None:
                return found[::-1]

    def search_jobs(
        self,
        *,
        statuses: list[str] | None = None,
        archived: bool = False,
        cursor: str | None = None,
        **filters: Any,
    ) -> dict[str, Any]:
        """One page of a job search, newest first: ``{"jobs", "next"}``; ``filters``:
        opcode, instance, node, user, since, limit (see docs/api.md)."""
        params = {"status": ",".join(statuses or []), "archived": "1" if archived else "0"}
        params.update({k: str(v) for k, v in filters.items() if v is not None})
        if cursor is not None:
            params["cursor"] = cursor
        return dict(self.request("GET", "/v1/jobs", params=params))

    def job(self, job_id: int) -> dict[str, Any]:
        return dict(self.request("GET", f"/v1/jobs/{job_id}"))

    def wait(self, job_id: int, since: int, timeout: float = POLL) -> dict[str, Any]:
        """The job and its log entries after ``since``, once there are any or the job
        has ended; after ``timeout`` seconds with an empty log otherwise."""
        return dict(
            self.request(
                "GET",
                f"/v1/jobs/{job_id}/wait",
                params={"since": since, "timeout": timeout},
                patience=timeout,
            )
        )

    def follow(self, job_id: int) -> Iterator[tuple[dict[str, Any], list[dict[str, Any]]]]:
        """Yield (job, new log entries) until the job has ended."""
        since = 0
        # The first poll asks for what is there at once (every job has log entries), so
        # a daemon that does not answer is found within timeout, not POLL + timeout.
        poll = 0.0
        while True:
            answer = self.wait(job_id, since, poll)
            poll = POLL
            entries = answer["log"]
            if entries:
                since = entries[-1]["serial"]
            yield answer["job"], entries
            if answer["job"]["status"] in ("success", "error", "canceled") and not entries:
                return

    def cancel(self, job_id: int) -> dict[str, Any]:
        return dict(self.request("POST", f"/v1/jobs/{job_id}/cancel"))

    def archive(self, job_id: int) -> dict[str, Any]:
        return dict(self.request("POST", f"/v1/jobs/{job_id}/archive"))

    def backup(self, path: str, *, timeout: float = 600.0) -> dict[str, Any]:
        """Ask the daemon to copy its store to ``path`` (absolute, new) while it runs."""
        return dict(self.request("POST", "/v1/backup", json={"path": path}, patience=timeout))

    def cluster(self) -> dict[str, Any]:
        return dict(self.request("GET", "/v1/cluster"))

    def masters(self) -> dict[str, Any]:
        return dict(self.request("GET", "/v1/masters"))

    def nodes(self) -> list[Any]:
        return list(self.request("GET", "/v1/nodes")["nodes"])

    def instances(self, *, refresh: float | None = None) -> list[Any]:
        """Every instance; with ``refresh``, after waiting up to that many seconds for a
        fresh observation of the watcher."""
        return list(self.request("GET", "/v1/instances", **_refresh(refresh))["instances"])

    def instance(self, name: str, *, refresh: float | None = None) -> dict[str, Any]:
        return dict(
            self.request("GET", f"/v1/instances/{quote(name, safe='')}", **_refresh(refresh))
        )

    def watcher(self) -> dict[str, Any]:
        return dict(self.request("GET", "/v1/watcher"))


def _refresh(refresh: float | None) -> dict[str, Any]:
    if refresh is None:
        return {}
    return {"params": {"refresh": "1", "timeout": str(refresh)}, "patience": refresh}
