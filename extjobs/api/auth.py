"""Bearer tokens with read and write roles for the TCP listener (the Unix socket,
mode 0600, is authenticated by the file system and needs no token).

Reads need ``read``; mutations and watching (long-poll ``wait``) need ``write``.
"""

from __future__ import annotations

import hmac
import stat
from pathlib import Path

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from extjobs.errors import ConfigError

ROLES = ("read", "write")


def load_tokens(path: Path) -> dict[str, str]:
    """Parse ``TOKEN ROLE`` lines; refuse a file others can read or a bad line."""
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
    tokens: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        if len(parts) != 2 or parts[1] not in ROLES or len(parts[0]) < 16:
            raise ConfigError(
                f"token file {path} line {number}: expected 'TOKEN read|write' with a token "
                "of at least 16 characters",
                path=str(path),
                line=number,
            )
        tokens[parts[0]] = parts[1]
    if not tokens:
        raise ConfigError(f"token file {path} holds no token", path=str(path))
    return tokens


def required_role(method: str, path: str) -> str:
    if method in ("GET", "HEAD") and not path.endswith("/wait"):
        return "read"
    return "write"


class TokenAuth:
    """ASGI middleware checking ``Authorization: Bearer TOKEN`` against the roles."""

    def __init__(self, app: ASGIApp, tokens: dict[str, str]) -> None:
        self.app = app
        self.tokens = tokens

    def _role(self, header: str) -> str | None:
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            return None
        for known, role in self.tokens.items():
            if hmac.compare_digest(known.encode(), token.strip().encode()):
                return role
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        role = self._role(request.headers.get("authorization", ""))
        needed = required_role(request.method, request.url.path)
        if role is None:
            response = JSONResponse(
                {"error": {"kind": "unauthorized", "message": "a valid bearer token is required"}},
                status_code=401,
                headers={"WWW-Authenticate": "Bearer"},
            )
        elif needed == "write" and role != "write":
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
            await self.app(scope, receive, send)
            return
        await response(scope, receive, send)
