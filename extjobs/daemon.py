"""The master daemon: the composition root.

One root task group owns the API server, the queue dispatcher and (through it) every
job worker. SIGTERM/SIGINT stop the API, then cancel the dispatcher; running jobs are
interrupted and recovered from the journal at the next start.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import uvicorn
from anyio.abc import TaskStatus

from extjobs.api.auth import TokenAuth, load_tokens
from extjobs.api.server import build_app
from extjobs.engine.configmgr import ConfigManager
from extjobs.engine.queue import JobQueue
from extjobs.errors import ConfigError
from extjobs.model.config import Config
from extjobs.nodes.ssh import SSHRunner
from extjobs.store import open_store

log = logging.getLogger("extjobs.daemon")


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: the daemon owns signals."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def prepare_state_dir(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, 0o700)


def bind_unix_socket(path: Path) -> socket.socket:
    """Bind the API socket with mode 0600 in a directory only this user can write."""
    parent = path.parent
    parent.mkdir(parents=True, exist_ok=True)
    st = parent.stat()
    if st.st_uid != os.getuid() or st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise ConfigError(
            f"socket directory {parent} must be owned by uid {os.getuid()} and not writable "
            "by group or others",
            path=str(parent),
        )
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


def _uvicorn_config(app: Any, **extra: Any) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        lifespan="off",
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=2,
        **extra,
    )


async def serve_daemon(
    config: Config, *, task_status: TaskStatus[JobQueue] = anyio.TASK_STATUS_IGNORED
) -> None:
    """Run the daemon until cancelled or signalled; reports the queue when ready."""
    prepare_state_dir(config.state_dir)
    # Before anything else: a store that cannot be opened (bad store.url, a database
    # that refuses the login or does not answer) stops the start with its reason.
    store = open_store(config)
    runner = SSHRunner(config.ssh, output_cap=config.storage.output_cap)
    queue = JobQueue(store, ConfigManager(store), runner, config)
    app = build_app(queue)
    servers = [(_Server(_uvicorn_config(app)), bind_unix_socket(config.socket_path))]
    if config.tcp is not None:
        tokens = load_tokens(config.tcp.token_file)
        tcp = socket.create_server(config.tcp.host_port, reuse_port=False)
        tcp.setblocking(False)
        servers.append(
            (
                _Server(
                    _uvicorn_config(
                        TokenAuth(app, tokens),
                        ssl_certfile=str(config.tcp.tls_cert),
                        ssl_keyfile=str(config.tcp.tls_key),
                    )
                ),
                tcp,
            )
        )
    try:
        async with anyio.create_task_group() as tg:
            await tg.start(queue.serve)

            async def serve_api(server: _Server, sock: socket.socket) -> None:
                await server.serve(sockets=[sock])
                for other, _ in servers:
                    other.should_exit = True
                tg.cancel_scope.cancel()

            async def serve_signals() -> None:
                with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                    async for signum in signals:
                        log.info("received %s, shutting down", signal.Signals(signum).name)
                        for server, _ in servers:
                            server.should_exit = True
                        return

            for server, sock in servers:
                tg.start_soon(serve_api, server, sock)
            tg.start_soon(serve_signals)
            log.info("extjobs daemon listening on %s", config.socket_path)
            task_status.started(queue)
    finally:
        with anyio.move_on_after(5, shield=True):
            await runner.aclose()
        store.close()
        with contextlib.suppress(FileNotFoundError):
            config.socket_path.unlink()
