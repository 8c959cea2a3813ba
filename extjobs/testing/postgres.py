"""A throwaway PostgreSQL server (tests, benchmarks), and a database per use.

The server is the machine's installed PostgreSQL binaries (``initdb``, ``pg_ctl``) run
on a data directory in a temporary directory of its own, listening on a free loopback
port and on a Unix socket in that directory — never the machine's own service on 5432.
PostgreSQL refuses to run as root: as root the harness runs it as the ``postgres``
system user (``runuser -u postgres --``, no login shell), otherwise as the current user.

Durability settings are relaxed for the tests' speed unless ``durable`` is asked for
(benchmarks): ``fsync=off``, ``full_page_writes=off`` — a server process killed loses
nothing committed, an OS crash could, which no test makes. ``synchronous_commit`` stays
on, so a committed write survives :meth:`stop` in every mode, ``immediate`` included.

Logins: the superuser ``postgres`` over the Unix socket only (trust), for the harness's
own administration; :data:`ROLE` with password :data:`PASSWORD` over TCP
(``scram-sha-256``), as a master would log in. Each test gets a database of its own
(:meth:`PostgresServer.create_database`), owned by :data:`ROLE`, so tests cannot see
each other's rows.
"""

from __future__ import annotations

import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import psycopg


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


ROLE = "extjobs"
PASSWORD = "harness-secret-7f3e"
SYSTEM_USER = "postgres"

_SETTINGS = """
# Set by extjobs/testing/postgres.py
listen_addresses = '127.0.0.1'
port = {port}
unix_socket_directories = '{socket_dir}'
fsync = {fsync}
full_page_writes = {fsync}
synchronous_commit = on
shared_buffers = 32MB
max_connections = 100
log_min_messages = warning
"""


def find_bindir() -> Path | None:
    """The newest ``/usr/lib/postgresql/<version>/bin`` holding ``initdb`` and ``pg_ctl``,
    else the directory of ``initdb`` on ``PATH``; None when PostgreSQL is not installed."""
    found = [
        p.parent
        for p in Path("/usr/lib/postgresql").glob("*/bin/initdb")
        if (p.parent / "pg_ctl").exists() and p.parts[-3].isdigit()
    ]
    if found:
        return max(found, key=lambda p: int(p.parts[-2]))
    on_path = shutil.which("initdb")
    return Path(on_path).resolve().parent if on_path else None


class PostgresServer:
    """One server in its own temporary directory. :meth:`start` makes it on first use."""

    def __init__(self, bindir: Path, *, durable: bool = False) -> None:
        self.bindir = bindir
        self.durable = durable
        self.as_root = os.geteuid() == 0
        self.root = Path(tempfile.mkdtemp(prefix="extjobs-pg-"))
        self.data = self.root / "data"
        self.socket_dir = self.root / "sock"
        self.logfile = self.root / "server.log"
        self.port = free_port()
        self._names = itertools.count(1)
        self.socket_dir.mkdir()
        if self.as_root:
            entry = pwd.getpwnam(SYSTEM_USER)
            for path in (self.root, self.socket_dir):
                os.chown(path, entry.pw_uid, entry.pw_gid)

    # -- processes -----------------------------------------------------------------------

    def _run(self, tool: str, *args: str) -> None:
        argv = [str(self.bindir / tool), *args]
        if self.as_root:
            argv = ["runuser", "-u", SYSTEM_USER, "--", *argv]
        done = subprocess.run(argv, capture_output=True, text=True, check=False, cwd=self.root)
        if done.returncode != 0:
            log = self.logfile.read_text() if self.logfile.exists() else ""
            raise RuntimeError(
                f"{tool} {' '.join(args)} failed ({done.returncode}): "
                f"{done.stderr.strip()}\n{log[-2000:]}"
            )

    def _init(self) -> None:
        self._run(
            "initdb",
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
        )
        with (self.data / "postgresql.conf").open("a") as conf:
            fsync = "on" if self.durable else "off"
            conf.write(_SETTINGS.format(port=self.port, socket_dir=self.socket_dir, fsync=fsync))

    def start(self) -> None:
        """Start the server (initialising its data directory the first time) and wait
        until it accepts connections."""
        first = not self.data.exists()
        if first:
            self._init()
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.logfile), "-w", "start")
        if first:
            with self.admin() as conn:
                conn.execute(f"CREATE ROLE {ROLE} LOGIN PASSWORD '{PASSWORD}'")

    def stop(self, mode: str = "fast") -> None:
        """Stop the server: ``fast`` (clients disconnected, clean shutdown), ``smart``,
        or ``immediate`` (every server process killed, recovery at the next start)."""
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")

    def restart(self, mode: str = "fast") -> None:
        self.stop(mode)
        self.start()

    def destroy(self) -> None:
        """Stop the server if it runs and remove its directory."""
        if (self.data / "postmaster.pid").exists():
            self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)

    # -- databases -----------------------------------------------------------------------

    def admin(self, dbname: str = "postgres") -> psycopg.Connection[tuple[object, ...]]:
        """A superuser connection over the Unix socket, in autocommit."""
        return psycopg.connect(
            host=str(self.socket_dir),
            port=self.port,
            user="postgres",
            dbname=dbname,
            autocommit=True,
        )

    def url(self, dbname: str, *, user: str = ROLE, password: str | None = PASSWORD) -> str:
        """The URL a master uses to reach ``dbname`` over TCP."""
        auth = user if password is None else f"{user}:{password}"
        return f"postgresql://{auth}@127.0.0.1:{self.port}/{dbname}"

    def create_database(self) -> str:
        """A new empty database owned by :data:`ROLE`; its URL."""
        name = f"t{next(self._names)}"
        with self.admin() as conn:
            conn.execute(f"CREATE DATABASE {name} OWNER {ROLE} TEMPLATE template0")
        return self.url(name)
