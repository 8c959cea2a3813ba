"""Who is asking: bearer tokens with names and roles for the TCP listener, and the
local user of the Unix socket (authenticated by the file system, mode 0600).

Reads need ``read``; mutations and watching (long-poll ``wait``, streamed ``watch``)
need ``write``.

Each API puts its caller in ``scope["state"]["submitter"]`` (:data:`SUBMITTER`), which
the submit endpoint records with the job; it is never taken from a request body:

- TCP: ``token:NAME``, NAME from the token file line (``NAME:TOKEN ROLE``), or derived
  from the token for a line in the older ``TOKEN ROLE`` form (:func:`derived_name`).
- Unix socket: ``unix:USER``, the user name of the peer's uid as the kernel reports it
  (``SO_PEERCRED``), or ``unix:UID`` for a uid without a passwd entry.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import pwd
import re
import stat
from pathlib import Path

import attrs
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from extjobs.api.views import JSONResponse
from extjobs.errors import ConfigError

ROLES = ("read", "write")
MIN_TOKEN = 16
#: The scope state key holding who is asking (``token:NAME``, ``unix:USER``).
SUBMITTER = "submitter"
#: A token's name, as written before the ``:`` of ``NAME:TOKEN``.
_TOKEN_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.@-]{0,63}")


@attrs.frozen
class Token:
    """One line of the token file: who holds the token, and what it may do."""

    name: str
    role: str


def derived_name(token: str) -> str:
    """The name of a token given without one: ``token-`` and 8 hex digits of its
    SHA-256, stable across restarts and revealing nothing usable of the token."""
    return "token-" + hashlib.sha256(token.encode()).hexdigest()[:8]


def parse_token_field(field: str) -> tuple[str, str] | None:
    """``(name, token)`` of a token file's first field, or None when it is too short.

    ``NAME:TOKEN`` names the token when NAME is a name and TOKEN has at least
    :data:`MIN_TOKEN` characters; any other field of that length is a bare token (the
    older format, which :func:`derived_name` names), colons included.
    """
    name, sep, rest = field.partition(":")
    if sep and _TOKEN_NAME.fullmatch(name) and len(rest) >= MIN_TOKEN:
        return name, rest
    if len(field) >= MIN_TOKEN:
        return derived_name(field), field
    return None


def load_tokens(path: Path) -> dict[str, Token]:
    """Parse ``[NAME:]TOKEN ROLE`` lines into ``{token: Token}``; refuse a file others
    can read, a bad line, or two lines with the same token or name."""
    try:
        st = path.stat()
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read token file {path}: {exc}", path=str(path)) from None
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(
            f"token file {path} must not be accessible by group or others (chmod 600)",
            path=str(path),
        )
    tokens: dict[str, Token] = {}
    names: set[str] = set()
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        parsed = parse_token_field(parts[0]) if len(parts) == 2 else None
        if parsed is None or parts[1] not in ROLES:
            raise ConfigError(
                f"token file {path} line {number}: expected '[NAME:]TOKEN read|write' with a "
                f"token of at least {MIN_TOKEN} characters",
                path=str(path),
                line=number,
            )
        name, token = parsed
        if token in tokens or name in names:
            what = "token" if token in tokens else f"name {name!r}"
            raise ConfigError(
                f"token file {path} line {number}: this {what} is on an earlier line",
                path=str(path),
                line=number,
            )
        tokens[token] = Token(name, parts[1])
        names.add(name)
    if not tokens:
        raise ConfigError(f"token file {path} holds no token", path=str(path))
    return tokens


def required_role(method: str, path: str) -> str:
    if method in ("GET", "HEAD") and not path.endswith(("/wait", "/watch")):
        return "read"
    return "write"


@functools.lru_cache(maxsize=256)
def unix_submitter(uid: int) -> str:
    """``unix:USER`` for the local user ``uid`` (``unix:UID`` without a passwd entry)."""
    try:
        return f"unix:{pwd.getpwuid(uid).pw_name}"
    except KeyError:
        return f"unix:{uid}"


class WithSubmitter:
    """ASGI middleware recording a fixed caller (one connection's peer) in the scope."""

    def __init__(self, app: ASGIApp, submitter: str) -> None:
        self.app = app
        self.submitter = submitter

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            scope.setdefault("state", {})[SUBMITTER] = self.submitter
        await self.app(scope, receive, send)


class TokenAuth:
    """ASGI middleware checking ``Authorization: Bearer TOKEN`` against the roles; the
    token's holder becomes the scope's ``token:NAME`` submitter."""

    def __init__(self, app: ASGIApp, tokens: dict[str, Token]) -> None:
        self.app = app
        self.tokens = tokens

    def _holder(self, header: str) -> Token | None:
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer" or not given:
            return None
        found = None
        # Every token is compared, so the time taken says nothing about which matched.
        for known, holder in self.tokens.items():
            if hmac.compare_digest(known.encode(), given.strip().encode()):
                found = holder
        return found

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        holder = self._holder(request.headers.get("authorization", ""))
        needed = required_role(request.method, request.url.path)
        if holder is None:
            response = JSONResponse(
                {"error": {"kind": "unauthorized", "message": "a valid bearer token is required"}},
                status_code=401,
                headers={"WWW-Authenticate": "Bearer"},
            )
        elif needed == "write" and holder.role != "write":
            response = JSONResponse(
                {
                    "error": {
                        "kind": "forbidden",
                        "message": f"{request.method} {request.url.path} needs a write token",
                    }
                },
                status_code=403,
            )
        else:
            scope.setdefault("state", {})[SUBMITTER] = f"token:{holder.name}"
            await self.app(scope, receive, send)
            return
        await response(scope, receive, send)
