"""Users of the Ganeti-compatible remote API and HTTP Basic authentication.

The users file has Ganeti's format: one ``NAME PASSWORD [OPTIONS]`` per line, ``#``
starts a comment line. ``PASSWORD`` is ``{HA1}`` followed by the hex MD5 of
``NAME:Ganeti Remote API:PASSWORD`` (recommended), ``{cleartext}`` followed by the
password, or a clear-text password that does not start with ``{``; scheme prefixes are
case-insensitive. ``OPTIONS`` is a comma-separated list of ``read`` and ``write``
(``write`` includes ``read``; a user without options may read).

Differences from Ganeti: every request needs a valid user (Ganeti serves most reads
anonymously), and the file is re-read on SIGHUP rather than watched with inotify.
Passwords are compared in constant time; a failed login is logged and answered after a
short delay, so guessing costs time.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
import stat
from http import HTTPStatus
from pathlib import Path

import anyio
import attrs
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from extjobs.api.views import JSONResponse
from extjobs.errors import ConfigError

log = logging.getLogger("extjobs.api.rapi")

REALM = "Ganeti Remote API"
OPTIONS = ("read", "write")
#: Seconds a failed login waits before it is answered.
FAILED_LOGIN_DELAY = 0.5


@attrs.frozen
class RapiUser:
    name: str
    #: ``("ha1", hex digest)`` or ``("cleartext", password)``.
    scheme: str
    secret: str = attrs.field(repr=False)
    options: frozenset[str] = frozenset()

    @property
    def can_write(self) -> bool:
        return "write" in self.options

    def check_password(self, password: str) -> bool:
        """Whether ``password`` is this user's, compared in constant time."""
        if self.scheme == "ha1":
            given = hashlib.md5(
                f"{self.name}:{REALM}:{password}".encode(), usedforsecurity=False
            ).hexdigest()
            return hmac.compare_digest(given.encode(), self.secret.lower().encode())
        return hmac.compare_digest(password.encode(), self.secret.encode())


def parse_users(text: str, where: str = "users file") -> dict[str, RapiUser]:
    """The users of a users file's ``text``; raises :class:`ConfigError` naming the line."""
    users: dict[str, RapiUser] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()

        def bad(why: str, number: int = number) -> ConfigError:
            return ConfigError(f"{where} line {number}: {why}", line=number)

        if len(parts) not in (2, 3):
            raise bad("expected 'NAME PASSWORD [read|write]'")
        name, password = parts[0], parts[1]
        options = (
            frozenset(filter(None, parts[2].lower().split(","))) if len(parts) == 3 else frozenset()
        )
        unknown = sorted(options - set(OPTIONS))
        if unknown:
            raise bad(f"unknown option(s) {', '.join(unknown)}; use read, write")
        if name in users:
            raise bad(f"user {name!r} is listed twice")
        if password.startswith("{"):
            scheme, brace, secret = password[1:].partition("}")
            scheme = scheme.lower()
            if not brace or scheme not in ("ha1", "cleartext"):
                raise bad("a password starting with '{' needs the prefix {HA1} or {cleartext}")
            if scheme == "ha1" and (
                len(secret) != 32 or any(c not in "0123456789abcdef" for c in secret.lower())
            ):
                raise bad(
                    "{HA1} must be followed by 32 hex digits (the MD5 of NAME:realm:password)"
                )
        else:
            scheme, secret = "cleartext", password
        if not secret:
            raise bad("empty password")
        users[name] = RapiUser(name, scheme, secret, options)
    return users


def load_users(path: Path) -> dict[str, RapiUser]:
    """Read a users file; refuse one that group or others can access, or a bad line."""
    try:
        st = path.stat()
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read RAPI users file {path}: {exc}", path=str(path)) from None
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(
            f"RAPI users file {path} must not be accessible by group or others (chmod 600)",
            path=str(path),
        )
    return parse_users(text, f"RAPI users file {path}")


def ganeti_error(status: int, message: str) -> JSONResponse:
    """An error as Ganeti's RAPI sends it: ``{"code", "message", "explain"}``, where
    ``message`` says what is wrong and ``explain`` is the status's generic text."""
    return JSONResponse(
        {"code": status, "message": message, "explain": HTTPStatus(status).description},
        status_code=status,
    )


def needs_write(method: str, path: str) -> bool:
    """Mutations and long-polling a job need ``write``; other reads need any user."""
    return method not in ("GET", "HEAD") or path.rstrip("/").endswith("/wait")


class BasicAuth:
    """ASGI middleware: HTTP Basic authentication against a reloadable users file.

    The authenticated user's name is put in ``scope["state"]["rapi_user"]``.
    """

    def __init__(self, app: ASGIApp, path: Path, *, require_authentication: bool = True) -> None:
        self.app = app
        self.path = path
        self.users = load_users(path)
        #: False: a request without credentials may read (Ganeti's default); a request
        #: that sends credentials must still send valid ones.
        self.require_authentication = require_authentication

    def reload(self) -> bool:
        """Re-read the users file; on error keep the users in force and log why."""
        try:
            users = load_users(self.path)
        except ConfigError as exc:
            log.error("RAPI users not reloaded, the previous ones stay in force: %s", exc)
            return False
        self.users = users
        log.info("RAPI users reloaded from %s (%d users)", self.path, len(users))
        return True

    def _user(self, header: str) -> tuple[str | None, RapiUser | None]:
        scheme, _, encoded = header.partition(" ")
        if scheme.lower() != "basic" or not encoded:
            return None, None
        try:
            decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None, None
        name, colon, password = decoded.partition(":")
        if not colon:
            return None, None
        user = self.users.get(name)
        if user is None:
            # Spend the time a known user would, so timing does not reveal names.
            RapiUser(name, "cleartext", "-" * 16).check_password(password)
            return name, None
        return name, user if user.check_password(password) else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        header = request.headers.get("authorization", "")
        name, user = self._user(header)
        if (
            user is None
            and not header
            and not self.require_authentication
            and not needs_write(request.method, request.url.path)
        ):
            await self.app(scope, receive, send)
            return
        if user is None:
            if header:
                log.warning(
                    "RAPI login failed for user %r from %s",
                    (name or "?")[:64],
                    request.client.host if request.client else "?",
                )
                await anyio.sleep(FAILED_LOGIN_DELAY)
            response = ganeti_error(401, "a valid RAPI user and password are required")
            response.headers["WWW-Authenticate"] = f'Basic realm="{REALM}"'
        elif needs_write(request.method, request.url.path) and not user.can_write:
            response = ganeti_error(
                403, f"user {user.name} may not {request.method} {request.url.path}: it needs write"
            )
        else:
            scope.setdefault("state", {})["rapi_user"] = user.name
            await self.app(scope, receive, send)
            return
        await response(scope, receive, send)
