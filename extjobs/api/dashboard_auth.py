"""Who may see the dashboard: a browser presents an API token once, in a login form, and
gets a session cookie; the API itself keeps taking only ``Authorization: Bearer``.

The cookie (``extjobs_ui``) is ``NAME.EXPIRY.MAC``: the token holder's name, when the
session ends (Unix seconds), and an HMAC-SHA256 of both keyed with that holder's token.
The daemon keeps no session table, so a page left open while the daemon restarts goes
on working; taking the token out of the token file ends its sessions. The cookie is
``HttpOnly`` (page scripts never see it), ``SameSite=Strict`` and, on the TLS listener,
``Secure``.

The dashboard only reads, so the one form that changes anything is the login (and the
logout). Both carry a CSRF token that must equal the ``extjobs_csrf`` cookie set with
the form (double submit), and are refused when the browser names another origin.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from http.cookies import SimpleCookie
from urllib.parse import urlencode, urlsplit

from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from extjobs.api.auth import SUBMITTER, Token

SESSION_COOKIE = "extjobs_ui"
CSRF_COOKIE = "extjobs_csrf"
#: How long a dashboard session lasts.
SESSION_SECONDS = 12 * 3600
PREFIX = "/ui"
#: Paths served without a session: the login form and what it needs.
OPEN_PATHS = frozenset({f"{PREFIX}/login", f"{PREFIX}/static/dashboard.css"})


def _mac(token: str, name: str, expiry: int) -> str:
    message = f"extjobs-ui|{name}|{expiry}".encode()
    return hmac.new(token.encode(), message, hashlib.sha256).hexdigest()


class Sessions:
    """Makes and checks session cookies for the holders of ``tokens`` (``None``: an
    open dashboard, on a loopback listener of a daemon without tokens)."""

    def __init__(self, tokens: dict[str, Token] | None, *, secure: bool) -> None:
        self.tokens = tokens
        self.secure = secure
        self._by_name = {t.name: token for token, t in (tokens or {}).items()}

    @property
    def open(self) -> bool:
        return self.tokens is None

    def holder(self, token: str) -> Token | None:
        """The holder of ``token`` (compared in constant time against each)."""
        found = None
        for known, holder in (self.tokens or {}).items():
            if hmac.compare_digest(known.encode(), token.strip().encode()):
                found = holder
        return found

    def cookie_for(self, holder: Token, now: float | None = None) -> str:
        expiry = int((now or time.time()) + SESSION_SECONDS)
        return f"{holder.name}.{expiry}.{_mac(self._by_name[holder.name], holder.name, expiry)}"

    def check(self, cookie: str | None, now: float | None = None) -> str | None:
        """The holder's name of a valid, unexpired session cookie, else None."""
        if not cookie:
            return None
        parts = cookie.rsplit(".", 2)
        if len(parts) != 3 or not parts[1].isdigit():
            return None
        name, expiry, mac = parts[0], int(parts[1]), parts[2]
        token = self._by_name.get(name)
        if token is None or expiry < (now or time.time()):
            return None
        return name if hmac.compare_digest(_mac(token, name, expiry), mac) else None

    def set_cookie(self, response: Response, name: str, value: str, max_age: int) -> None:
        response.set_cookie(
            name,
            value,
            max_age=max_age,
            path=PREFIX,
            httponly=True,
            samesite="strict",
            secure=self.secure,
        )

    def new_csrf(self) -> str:
        return secrets.token_urlsafe(24)


def same_origin(request: Request) -> bool:
    """False when the browser says the request comes from another origin."""
    origin = request.headers.get("origin") or request.headers.get("referer")
    if not origin or origin == "null":
        return origin is None
    return urlsplit(origin).netloc == request.headers.get("host", "")


def safe_next(target: str | None) -> str:
    """Where to go after the login: a dashboard path, never another site."""
    if target and target.startswith(f"{PREFIX}/") and not target.startswith("//"):
        parts = urlsplit(target)
        if not parts.scheme and not parts.netloc:
            return target
    return f"{PREFIX}/jobs"


class DashboardGate:
    """ASGI: ``/ui…`` goes to the dashboard, with a session (or to the login form);
    everything else to ``api`` (which checks bearer tokens itself). ``api`` None: a
    listener serving only the dashboard."""

    def __init__(self, dashboard: ASGIApp, api: ASGIApp | None, sessions: Sessions) -> None:
        self.dashboard = dashboard
        self.api = api
        self.sessions = sessions

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if scope["type"] != "http" or not (path == PREFIX or path.startswith(PREFIX + "/")):
            if self.api is not None:
                await self.api(scope, receive, send)
                return
            if scope["type"] != "http":
                return
            response: Response = RedirectResponse(f"{PREFIX}/jobs", status_code=303)
            await response(scope, receive, send)
            return
        if self.sessions.open or path in OPEN_PATHS:
            await self.dashboard(scope, receive, send)
            return
        cookies = SimpleCookie()
        cookies.load(Request(scope).headers.get("cookie", ""))
        morsel = cookies.get(SESSION_COOKIE)
        holder = self.sessions.check(morsel.value if morsel else None)
        if holder is not None:
            scope.setdefault("state", {})[SUBMITTER] = f"token:{holder}"
            await self.dashboard(scope, receive, send)
            return
        request = Request(scope)
        if request.method == "GET" and "/events" not in path:
            target = path + (f"?{request.url.query}" if request.url.query else "")
            response = RedirectResponse(f"{PREFIX}/login?{_query(next=target)}", status_code=303)
        else:
            response = PlainTextResponse("log in to the dashboard first", status_code=401)
        await response(scope, receive, send)


def _query(**params: str) -> str:
    return urlencode(params)
