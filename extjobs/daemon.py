"""The master daemon: the composition root.

One root task group owns the API server, the queue dispatcher and (through it) every
job worker. SIGTERM/SIGINT stop the API, then cancel the dispatcher; running jobs are
interrupted and recovered from the journal at the next start.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import signal
import socket
import struct
from collections.abc import Callable, Coroutine, Iterator, Sequence
from pathlib import Path
from typing import Any

import anyio
import uvicorn
from anyio.abc import TaskStatus
from prometheus_client import disable_created_metrics
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from extjobs.api.auth import TokenAuth, WithSubmitter, load_tokens, unix_submitter
from extjobs.api.dashboard import build_dashboard
from extjobs.api.dashboard_auth import DashboardGate, Sessions
from extjobs.api.metrics import build_metrics_app
from extjobs.api.rapi import build_rapi_app
from extjobs.api.rapi_users import BasicAuth
from extjobs.api.server import build_app
from extjobs.engine.configmgr import ConfigManager
from extjobs.engine.leadership import Leadership
from extjobs.engine.metrics import Metrics
from extjobs.engine.queue import JobQueue
from extjobs.engine.standby import Master, QueueView, StandbyQueue, serve_master
from extjobs.engine.writer import GroupWriter
from extjobs.errors import ConfigError, InputError
from extjobs.model.config import Config
from extjobs.nodes.ssh import SSHRunner
from extjobs.store import open_store
from extjobs.store.base import Store, quarantine_where
from extjobs.store.files import (
    backup_sqlite,
    check_private_dir,
    lock_state_dir,
    restore_store,
    secure_store_files,
)
from extjobs.store.shared import SharedStore
from extjobs.store.sqlite import SqliteStore

log = logging.getLogger("extjobs.daemon")


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: the daemon owns signals."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def peer_uid(sock: socket.socket | None) -> int | None:
    """The uid of the process at the other end of a Unix socket (``SO_PEERCRED``: the
    credentials it had when it connected), or None where the kernel does not say."""
    if sock is None or sock.family != socket.AF_UNIX or not hasattr(socket, "SO_PEERCRED"):
        return None
    try:
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    except OSError:
        return None
    _pid, uid, _gid = struct.unpack("3i", creds)
    return int(uid)


class _HeldWrites:
    """A transport that holds what is written until the end of the loop's turn, then
    sends it in one write (or sooner, see :class:`_HttpProtocol`); the rest is the
    transport's own."""

    def __init__(self, transport: asyncio.Transport) -> None:
        self._transport = transport
        self._held: list[bytes] = []

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not self._held:
            asyncio.get_running_loop().call_soon(self.flush)
        self._held.append(bytes(data))

    def flush(self) -> None:
        if self._held:
            data = b"".join(self._held)
            self._held.clear()
            if not self._transport.is_closing():
                self._transport.write(data)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class _HttpProtocol(HttpToolsProtocol):
    """uvicorn's HTTP/1.1 over httptools (llhttp, in C: h11's pure-Python parser was a
    measurable share of the daemon's CPU per request, docs/benchmarks.md), with each
    answer sent in one write.

    uvicorn writes an answer's status line and headers, then its body, in two calls;
    each write to the socket wakes the client, twice per answer, and on a busy machine
    the daemon may be rescheduled at each. Writes are held and sent together when the
    answer is complete (a streamed answer's parts at the end of each turn of the loop).
    """

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(_HeldWrites(transport))  # type: ignore[arg-type]

    def on_response_complete(self) -> None:
        self.transport.flush()  # type: ignore[attr-defined]
        super().on_response_complete()


class _PeerCredProtocol(_HttpProtocol):
    """HTTP/1.1 on the Unix socket, each connection's requests carrying its peer's user.

    uvicorn gives the application no access to the socket, so the connection's app is
    wrapped here, once, when the kernel's credentials of the peer are at hand; the
    submit endpoint records them as the job's ``unix:USER`` submitter.
    """

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        uid = peer_uid(transport.get_extra_info("socket"))
        if uid is not None:
            self.app = WithSubmitter(self.app, unix_submitter(uid))


def prepare_state_dir(path: Path) -> None:
    """Create the state directory (mode 0700), or check that the existing one is this
    user's and writable by nobody else (:class:`ConfigError` naming it and its owner),
    then make it 0700."""
    if not path.is_dir():
        try:
            path.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(
                f"cannot create the state directory {path}: {exc.strerror}", path=str(path)
            ) from exc
    check_private_dir(path, "state directory")
    os.chmod(path, 0o700)


def bind_unix_socket(path: Path) -> socket.socket:
    """Bind the API socket with mode 0600 in a directory only this user can write
    (:class:`ConfigError` naming the directory and its owner otherwise)."""
    parent = path.parent
    parent.mkdir(parents=True, exist_ok=True)
    check_private_dir(parent, "socket directory")
    if path.exists() or path.is_symlink():
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(str(path))
        except OSError:
            path.unlink()
        else:
            raise ConfigError(f"another daemon is serving {path}", path=str(path))
        finally:
            probe.close()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)
    try:
        sock.bind(str(path))
    finally:
        os.umask(old)
    os.chmod(path, 0o600)
    sock.listen(128)
    sock.setblocking(False)
    return sock


def bind_metrics(listen: str) -> socket.socket:
    """Listen on the ``[metrics] listen`` address; :class:`ConfigError` naming it when
    the address cannot be had (in use, not local, not permitted)."""
    host, _, port = listen.rpartition(":")
    try:
        sock = socket.create_server((host.strip("[]"), int(port)), reuse_port=False)
    except OSError as exc:
        raise ConfigError(
            f"[metrics] listen {listen}: cannot listen there: {exc.strerror or exc}",
            field="metrics.listen",
        ) from exc
    sock.setblocking(False)
    return sock


def _uvicorn_config(app: Any, **extra: Any) -> uvicorn.Config:
    extra.setdefault("http", _HttpProtocol)
    return uvicorn.Config(
        app,
        lifespan="off",
        log_level="warning",
        access_log=False,
        # No proxy stands in front of the daemon: uvicorn's X-Forwarded-* middleware
        # would only add a layer to every request.
        proxy_headers=False,
        timeout_graceful_shutdown=2,
        **extra,
    )


async def serve_daemon(
    config: Config,
    *,
    restore: Path | None = None,
    quarantine: Sequence[str] = (),
    task_status: TaskStatus[QueueView] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Run the daemon until cancelled or signalled; reports the API's view when ready.

    The state directory is locked before the store is opened or the socket bound (a
    second daemon on it raises :class:`~extjobs.errors.StateError` having touched
    nothing), and stays locked until this returns. With ``restore``, the backup file
    replaces the store first (:func:`~extjobs.store.files.restore_store`). Each of
    ``quarantine`` (``TABLE:KEY``) is a row moved aside into the store's ``quarantine``
    table before anything reads the store (see :class:`~extjobs.errors.UnreadableRowError`).
    """
    prepare_state_dir(config.state_dir)
    lock = lock_state_dir(config.state_dir)
    try:
        loose = secure_store_files(config.db_path)
        if loose:
            log.warning(
                "store files were readable or writable by others; now mode 0600: %s",
                ", ".join(str(p) for p in loose),
            )
        if restore is not None:
            if config.store.is_postgres:
                raise ConfigError(
                    "--restore puts back the embedded SQLite store; with store.url set, "
                    "restore the PostgreSQL database with its own tools (docs/ha.md)",
                    field="store.url",
                )
            aside = restore_store(config.db_path, restore)
            log.warning(
                "restored the store %s from %s%s; run 'extjobs verify' now",
                config.db_path,
                restore,
                f" (the replaced store is kept as {aside})" if aside else "",
            )
        # A store that cannot be opened (bad store.url, a database that refuses the login
        # or does not answer) stops the start with its reason.
        store = open_store(config)
        try:
            set_aside(store, quarantine)
            await _serve_store(config, store, task_status)
        finally:
            store.close()
    finally:
        lock.release()


def set_aside(store: Store, rows: Sequence[str]) -> None:
    """Move each ``TABLE:KEY`` row into the quarantine; raises InputError for a row that
    does not exist (nothing is moved then)."""
    parsed = []
    for item in rows:
        table, _, key = item.partition(":")
        quarantine_where(table, key)  # the form is checked before anything moves
        parsed.append((table, key))
    for table, key in parsed:
        if not store.quarantine(table, key):
            raise InputError(f"quarantine: the store has no {table} row {key}", field="quarantine")
        log.warning(
            "set the %s row %s aside into the quarantine table; run 'extjobs verify' now",
            table,
            key,
        )


def _compose(
    config: Config, store: Store, runner: SSHRunner, metrics: Metrics
) -> tuple[QueueView, Callable[..., Coroutine[Any, Any, None]], Callable[[], None]]:
    """The API's view, the coroutine that runs the jobs, and what closes the rest.

    One master (SQLite): the queue itself, writing synchronously. Several (a shared
    store): this master's election, its standby view, and while it leads a queue with a
    store handle fenced at its epoch (see :mod:`extjobs.store.shared`) and a group
    writer (:mod:`extjobs.engine.writer`) on a handle of its own."""
    if not isinstance(store, SharedStore):
        queue = JobQueue(store, ConfigManager(store), runner, config, metrics=metrics)
        metrics.watch(lambda: queue)
        return queue, queue.serve, lambda: None
    name = config.store.master_name or socket.gethostname()
    address = str(config.socket_path)
    if config.tcp is not None:
        host, port = config.tcp.host_port
        address = f"{host}:{port}"
    # The election's own handle: its calls run in a worker thread (see Leadership).
    election = open_store(config)
    assert isinstance(election, SharedStore)
    leadership = Leadership(election, name, address, ttl=config.store.lease)
    master = Master(StandbyQueue(store), name, store)
    leader_store = open_store(config)
    assert isinstance(leader_store, SharedStore)

    def open_queue(epoch: int) -> JobQueue:
        leader_store.set_fence(epoch)
        # The group writer's own connection, fenced too, for this term only: a write of
        # a former term still in a thread can never commit under a later epoch.
        writer_store = open_store(config)
        assert isinstance(writer_store, SharedStore)
        writer_store.set_fence(epoch)
        writer = GroupWriter(writer_store)
        configmgr = ConfigManager(leader_store, writer)
        return JobQueue(
            leader_store,
            configmgr,
            runner,
            config,
            leadership=leadership,
            writer=writer,
            metrics=metrics,
        )

    metrics.watch(
        lambda: master.current if isinstance(master.current, JobQueue) else None, leadership
    )

    def close() -> None:
        leader_store.close()
        election.close()

    serve = functools.partial(serve_master, master, leadership, open_queue)
    return master, serve, close


async def _serve_store(config: Config, store: Store, task_status: TaskStatus[QueueView]) -> None:
    # One registry per daemon: daemons sharing a process never share a number. The
    # ``*_created`` series (the time each counter appeared) would double every scrape.
    disable_created_metrics()  # type: ignore[no-untyped-call]  # (untyped in the library)
    metrics = Metrics()
    # Before anything else is opened: a busy address stops the start with its reason.
    scrape = bind_metrics(config.metrics.listen) if config.metrics.listen else None
    runner = SSHRunner(config.ssh, output_cap=config.storage.output_cap, observer=metrics)
    queue, serve_jobs, close = _compose(config, store, runner, metrics)
    backup = None
    if isinstance(store, SqliteStore):
        backup = functools.partial(backup_sqlite, config.db_path)
    app = build_app(queue, backup=backup, metrics=metrics.registry)
    tokens = load_tokens(config.tcp.token_file) if config.tcp is not None else None
    dashboard = functools.partial(build_dashboard, queue, journal=store.load_journal_kinds)
    servers = [
        (
            _Server(_uvicorn_config(app, http=_PeerCredProtocol)),
            bind_unix_socket(config.socket_path),
        )
    ]
    if config.tcp is not None and tokens is not None:
        sessions = Sessions(tokens, secure=True)
        tcp = socket.create_server(config.tcp.host_port, reuse_port=False)
        tcp.setblocking(False)
        servers.append(
            (
                _Server(
                    _uvicorn_config(
                        # /ui/ is the dashboard (a session cookie); the rest the API.
                        DashboardGate(dashboard(sessions), TokenAuth(app, tokens), sessions),
                        ssl_certfile=str(config.tcp.tls_cert),
                        ssl_keyfile=str(config.tcp.tls_key),
                    )
                ),
                tcp,
            )
        )
    if config.dashboard is not None:
        # Plain HTTP on loopback: the session cookie cannot be Secure there.
        local = Sessions(tokens, secure=False)
        plain = socket.create_server(config.dashboard.host_port, reuse_port=False)
        plain.setblocking(False)
        servers.append(
            (_Server(_uvicorn_config(DashboardGate(dashboard(local), None, local))), plain)
        )
        log.info(
            "dashboard on http://%s/ui/ (%s)",
            config.dashboard.listen,
            "token required" if tokens else "no token: anyone who can connect sees it",
        )
    rapi_auth = None
    if config.rapi is not None:
        rapi_auth = BasicAuth(
            build_rapi_app(queue, config),
            Path(config.rapi.users_file),
            require_authentication=config.rapi.require_authentication,
        )
        listener = socket.create_server(config.rapi.host_port, reuse_port=False)
        listener.setblocking(False)
        rapi_config = _uvicorn_config(
            rapi_auth, ssl_certfile=config.rapi.tls_cert, ssl_keyfile=config.rapi.tls_key
        )
        servers.append((_Server(rapi_config), listener))
    if scrape is not None:
        # Plain HTTP, no token: meant for a scraper on this host (docs/monitoring.md).
        servers.append((_Server(_uvicorn_config(build_metrics_app(metrics.registry))), scrape))
    try:
        async with anyio.create_task_group() as tg:
            await tg.start(serve_jobs)

            async def serve_api(server: _Server, sock: socket.socket) -> None:
                await server.serve(sockets=[sock])
                for other, _ in servers:
                    other.should_exit = True
                tg.cancel_scope.cancel()

            async def serve_signals() -> None:
                with anyio.open_signal_receiver(
                    signal.SIGTERM, signal.SIGINT, signal.SIGHUP
                ) as signals:
                    async for signum in signals:
                        if signum == signal.SIGHUP:
                            # Re-read what may be changed without a restart.
                            if rapi_auth is not None:
                                rapi_auth.reload()
                            continue
                        log.info("received %s, shutting down", signal.Signals(signum).name)
                        for server, _ in servers:
                            server.should_exit = True
                        return

            for server, sock in servers:
                tg.start_soon(serve_api, server, sock)
            tg.start_soon(serve_signals)
            log.info("extjobs daemon listening on %s", config.socket_path)
            if config.rapi is not None:
                log.info("remote API (Ganeti RAPI 2) listening on %s", config.rapi.listen)
            if config.metrics.listen is not None:
                log.info("metrics (plain HTTP) on http://%s/metrics", config.metrics.listen)
            task_status.started(queue)
    finally:
        with anyio.move_on_after(5, shield=True):
            await runner.aclose()
        close()
        with contextlib.suppress(FileNotFoundError):
            config.socket_path.unlink()
