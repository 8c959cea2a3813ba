"""A small synchronous client of the HTTP API over the daemon's Unix socket.

Every request is bounded: the daemon must answer within ``timeout`` seconds (a long
poll within its own wait plus ``timeout``), so a daemon that accepts connections but
never answers — stopped with SIGSTOP, or stuck — is reported as such, not waited for.

It speaks HTTP/1.1 with the standard library's :mod:`http.client` over one kept-alive
connection: a command starts in a fraction of the time an import of a general HTTP
client library takes, and a command that makes several requests (a ``watch``) makes
one connection. A connection the daemon closed while it was idle is noticed before it
is used again (it reads as end of file) and replaced; a request is never sent twice.
"""

from __future__ import annotations

import http.client
import json
import select
import socket as socketlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Self, TypeVar
from urllib.parse import quote, urlencode

from extjobs.errors import ExtJobsError

T = TypeVar("T")


class _UnixConnection(http.client.HTTPConnection):
    """HTTP/1.1 over a Unix stream socket (``host`` only names the daemon in headers)."""

    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("extjobs", timeout=timeout)
        self.path = path

    def connect(self) -> None:
        sock = socketlib.socket(socketlib.AF_UNIX, socketlib.SOCK_STREAM)
        try:
            sock.settimeout(self.timeout)
            sock.connect(self.path)
        except BaseException:
            sock.close()
            raise
        self.sock = sock

    def idle_closed(self) -> bool:
        """Whether the kept-alive connection was closed by the daemon (or holds bytes
        nobody asked for): then it must not carry another request."""
        if self.sock is None:
            return False
        readable, _, _ = select.select([self.sock], [], [], 0)
        return bool(readable)


def _decoded(status: int, raw: bytes) -> Any:
    """The JSON of an answer; raises :class:`ApiError` for an error status."""
    try:
        answer = json.loads(raw)
    except ValueError:
        answer = {"error": {"kind": "http", "message": raw.decode(errors="replace")[:500]}}
    if status >= 400:
        err = answer.get("error", {}) if isinstance(answer, dict) else {}
        raise ApiError(
            str(err.get("message", f"HTTP {status}")),
            status=status,
            **{k: v for k, v in err.items() if k not in ("message",)},
        )
    return answer


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
        self._conn: _UnixConnection | None = None

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(self, method: str, path: str, *, patience: float = 0.0, **kwargs: Any) -> Any:
        """Send one request; the decoded answer. ``patience``: seconds the daemon may
        take on purpose (a long poll, a backup) on top of :attr:`timeout`.

        Raises :class:`DaemonUnavailableError` when the daemon cannot be reached or does
        not answer in time, :class:`ApiError` when it answers with an error."""
        params = kwargs.pop("params", None)
        body: bytes | None = None
        if "json" in kwargs:
            body = json.dumps(kwargs.pop("json")).encode()
        if kwargs:
            raise TypeError(f"unexpected arguments: {', '.join(sorted(kwargs))}")
        response = self._send(method, path, params, body, patience)
        raw = self._guard(method, path, self.timeout + patience, response.read)
        status = response.status
        if response.will_close:
            self.close()
        return _decoded(status, raw)

    def _send(
        self, method: str, path: str, params: Any, body: bytes | None, patience: float
    ) -> http.client.HTTPResponse:
        """Send a request and read the head of its answer (the daemon has ``timeout``
        plus ``patience`` seconds for it); the caller reads the body."""
        target = path + ("?" + urlencode(params) if params else "")
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = "application/json"

        def send() -> http.client.HTTPResponse:
            conn = self._connection()
            conn.request(method, target, body=body, headers=headers)
            assert conn.sock is not None
            conn.sock.settimeout(self.timeout + patience)
            return conn.getresponse()

        return self._guard(method, path, self.timeout + patience, send)

    def _guard(self, method: str, path: str, limit: float, step: Callable[[], T]) -> T:
        """Run one step of an exchange with the daemon (the socket's timeout set to
        ``limit``); its failures as :class:`DaemonUnavailableError`, the connection
        closed then."""
        try:
            if self._conn is not None and self._conn.sock is not None:
                self._conn.sock.settimeout(limit)
            return step()
        except TimeoutError as exc:
            self.close()
            raise DaemonUnavailableError(
                f"the extjobs daemon at {self.socket} did not answer {method} {path} within "
                f"{limit:g}s ({type(exc).__name__}); is it stopped or stuck? "
                "(--timeout or EXTJOBS_TIMEOUT sets how long to wait)",
                socket=str(self.socket),
                timeout=limit,
            ) from None
        except (OSError, http.client.HTTPException) as exc:
            self.close()
            raise DaemonUnavailableError(
                f"cannot reach the extjobs daemon at {self.socket}: {exc}",
                socket=str(self.socket),
            ) from None

    def _connection(self) -> _UnixConnection:
        """The kept-alive connection, or a new one when there is none or the daemon
        closed it while it was idle."""
        if self._conn is not None and self._conn.idle_closed():
            self.close()
        if self._conn is None:
            self._conn = _UnixConnection(str(self.socket), self.timeout)
        return self._conn

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
        """Yield (job, new log entries) until the job has ended: one streamed request
        (``GET /v1/jobs/ID/watch``) whose lines come as the job changes, at least
        every :data:`POLL` seconds, so a daemon that stops answering is noticed within
        ``POLL`` + ``timeout`` (the first line comes at once: within ``timeout``)."""
        path = f"/v1/jobs/{job_id}/watch"
        response = self._send("GET", path, {"since": 0, "heartbeat": POLL}, None, 0.0)
        if response.status >= 400:
            raw = self._guard("GET", path, self.timeout, response.read)
            if response.will_close:
                self.close()
            _decoded(response.status, raw)
        finished = False
        try:
            while True:
                line = self._guard("GET", path, self.timeout + POLL, response.readline)
                if not line:
                    raise DaemonUnavailableError(
                        f"the extjobs daemon at {self.socket} ended the watch of job "
                        f"{job_id} before the job ended",
                        socket=str(self.socket),
                    )
                answer = json.loads(line)
                yield answer["job"], answer["log"]
                if (
                    answer["job"]["status"] in ("success", "error", "canceled")
                    and not (answer["log"])
                ):
                    # The end of the stream: the connection can carry the next request.
                    self._guard("GET", path, self.timeout, response.read)
                    finished = True
                    return
        finally:
            if not finished or response.will_close:
                self.close()

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
