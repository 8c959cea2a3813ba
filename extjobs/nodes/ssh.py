"""The asyncssh implementation of :class:`~extjobs.nodes.runner.NodeRunner`.

Theory of operation
-------------------
Every node (keyed by its :class:`Endpoint`) has a small pool of SSH connections. A
command leases one *channel slot* on a connection: the first connection with fewer than
``max_sessions`` channels open wins. Only when every connection is full is a new one
opened, up to ``max_connections``; beyond that callers wait until a slot frees. At most
one connection per node is being set up at any time, and callers that arrive meanwhile
wait for its outcome, so 32 concurrent first calls open one connection, not 32, and a
dead node fails them all after one connect timeout instead of one after another.

Pool state changes only in plain ``def`` methods (decide synchronously, then await the
I/O); waiters sleep on an :class:`anyio.Event` that is set whenever a slot frees, a
connection is lost, or a connect attempt ends.

Host keys are strictly pinned: the ``known_hosts`` of each connection is exactly the
endpoint's pinned key, so a node offering anything else is refused with
:class:`HostKeyError` naming the offered key's fingerprint.

A command runs as one exec channel (see :mod:`extjobs.nodes.command`); its output goes
straight from asyncssh's callbacks into :class:`CappedBuffer` objects. On timeout or
cancellation, the command whose session the first output line announced is killed (its
session, its process group and their descendants, ``setsid`` children included: see
:mod:`extjobs.nodes.killtree`) by a second exec -- on the same connection, using the
headroom between ``max_sessions`` and sshd's ``MaxSessions``, or on a fresh connection
if that one is gone -- bounded by ``kill_timeout`` under a shielded cancel scope. A
pooled connection found dead when a channel is opened on it is dropped and the channel
retried once on a fresh connection (the command had not started, so this is safe), and
a channel refused on a live connection is asked for again a few times, backing off; a
connection lost while a command runs is reported as :class:`NodeUnreachableError`,
never retried.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, Self

import anyio
import asyncssh

from extjobs.errors import CommandTimeoutError, NodeError, NodeUnreachableError
from extjobs.model.config import SSHOptions
from extjobs.model.remote import CommandResult, Endpoint, RemoteCommand
from extjobs.nodes.command import kill_line, parse_pgid, shell_line
from extjobs.nodes.hostkeys import connect_reason, host_key_changed, offered_host_key, pinned_key
from extjobs.nodes.leftovers import kill_if_ours_command
from extjobs.nodes.observer import RunnerObserver
from extjobs.nodes.output import CappedBuffer
from extjobs.nodes.sftp import TreePlan, copy_tree, plan_tree, read_file
from extjobs.nodes.streams import ForwardedStream

logger = logging.getLogger(__name__)

# The login shell's own output before the marker line (a chatty rc file) is skipped;
# past this many bytes without a marker the stream is taken as output as it is.
_MARKER_SCAN_LIMIT = 65536

#: Seconds to wait before asking again for a channel a live connection refused
#: (about 1.3 s in all; see :meth:`SSHRunner._open_channel`).
_REFUSED_BACKOFF = (0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64)


class _Client(asyncssh.SSHClient):
    """Connection callbacks: records the offered host key and the loss of the connection."""

    def __init__(self) -> None:
        self.offered_key: asyncssh.SSHKey | None = None
        self.lost = False
        self.on_lost: list[Callable[[], None]] = []

    def validate_host_public_key(
        self, host: str, addr: str, port: int, key: asyncssh.SSHKey
    ) -> bool:
        # Only called for a key that is not the pinned one: remember it for the error.
        self.offered_key = key
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        for callback in self.on_lost:
            callback()


class _Connection:
    """One pooled SSH connection and the number of channels leased on it."""

    def __init__(self, conn: asyncssh.SSHClientConnection, client: _Client) -> None:
        self.conn = conn
        self.client = client
        self.channels = 0

    @property
    def alive(self) -> bool:
        return not self.client.lost and not self.conn.is_closed()


class _Attempt:
    """A connect in progress; waiters share its outcome."""

    def __init__(self) -> None:
        self.done = anyio.Event()
        self.error: NodeError | None = None


class _Pool:
    """The connections of one endpoint. Mutated only synchronously."""

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint
        self.connections: list[_Connection] = []
        self.attempt: _Attempt | None = None
        self.opened = 0
        self._changed: anyio.Event | None = None

    def wake(self) -> None:
        """Wake every waiter; safe to call from asyncssh callbacks (creates no event)."""
        if self._changed is not None:
            self._changed.set()
            self._changed = None

    async def wait_changed(self) -> None:
        if self._changed is None:
            self._changed = anyio.Event()
        await self._changed.wait()

    def prune(self) -> None:
        self.connections = [c for c in self.connections if c.alive or c.channels > 0]

    def lease_nowait(self, max_sessions: int) -> _Connection | None:
        for connection in self.connections:
            if connection.alive and connection.channels < max_sessions:
                connection.channels += 1
                return connection
        return None

    def release(self, connection: _Connection) -> None:
        connection.channels -= 1
        self.prune()
        self.wake()


class _Session(asyncssh.SSHClientSession[bytes]):
    """Receives one command's output and exit status, feeding capped buffers."""

    def __init__(self, output_cap: int, on_started: Callable[[int], None] | None = None) -> None:
        self._on_started = on_started
        self.stdout = CappedBuffer.split(output_cap)
        self.stderr = CappedBuffer.split(output_cap)
        self.pgid: int | None = None
        self.exit_status: int | None = None
        self.exit_signal: str | None = None
        self.lost: Exception | None = None
        #: What ``on_started`` raised: the caller could not record the running command
        #: (its journal refused the process group), so it must not run on.
        self.refused: Exception | None = None
        self.closed = anyio.Event()
        self.marker_done = anyio.Event()
        self._scanning = True
        self._pending = bytearray()

    def data_received(self, data: bytes, datatype: asyncssh.DataType) -> None:
        if datatype == asyncssh.EXTENDED_DATA_STDERR:
            self.stderr.feed(data)
        elif self._scanning:
            self._scan(data)
        else:
            self.stdout.feed(data)

    def _scan(self, data: bytes) -> None:
        self._pending += data
        start = 0
        while (end := self._pending.find(b"\n", start)) >= 0:
            pgid = parse_pgid(bytes(self._pending[start : end + 1]))
            start = end + 1
            if pgid is not None:
                self.pgid = pgid
                if self._on_started is not None:
                    try:
                        self._on_started(pgid)
                    except Exception as exc:  # noqa: BLE001 - handed to run(), which kills
                        self.refused = exc
                        self.closed.set()
                self._finish_scan(bytes(self._pending[start:]))
                return
        if len(self._pending) > _MARKER_SCAN_LIMIT:
            self._finish_scan(bytes(self._pending))

    def _finish_scan(self, rest: bytes) -> None:
        self._scanning = False
        self._pending = bytearray()
        self.stdout.feed(rest)
        self.marker_done.set()

    def exit_status_received(self, status: int) -> None:
        self.exit_status = status

    def exit_signal_received(self, signal: str, core_dumped: bool, msg: str, lang: str) -> None:
        self.exit_signal = signal

    def connection_lost(self, exc: Exception | None) -> None:
        if self._scanning:
            self._finish_scan(bytes(self._pending))
        self.lost = exc
        self.closed.set()


class SSHRunner:
    """A :class:`~extjobs.nodes.runner.NodeRunner` over asyncssh with pooled connections.

    ``output_cap`` bytes of stdout and of stderr are kept per command (half head, half
    tail). Use as ``async with SSHRunner(options) as runner`` or call :meth:`aclose`.
    ``observer`` hears of every connect's and command's outcome (see
    :mod:`extjobs.nodes.observer`).
    """

    def __init__(
        self,
        options: SSHOptions,
        output_cap: int = 65536,
        *,
        observer: RunnerObserver | None = None,
    ) -> None:
        if options.max_sessions < 1 or options.max_connections < 1:
            raise ValueError("max_sessions and max_connections must be at least 1")
        self._options = options
        self._output_cap = output_cap
        self._pools: dict[Endpoint, _Pool] = {}
        self._commands_run = 0
        self._client_keys: list[asyncssh.SSHKey] | None = None
        self._closed = False
        self._observer = observer

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # -- running commands -------------------------------------------------------------

    async def run(
        self,
        endpoint: Endpoint,
        command: RemoteCommand,
        *,
        on_started: Callable[[int], None] | None = None,
    ) -> CommandResult:
        """See :meth:`NodeRunner.run`. Cancellation kills the remote group, then propagates.

        Raises :class:`ValueError` (before any I/O) for a command that no exec request can
        express exactly, see :func:`~extjobs.nodes.command.shell_line`.
        """
        line = shell_line(command)
        started = anyio.current_time()
        session = _Session(self._output_cap, on_started)
        holder: list[_Connection] = []
        try:
            with anyio.move_on_after(command.timeout) as deadline:
                try:
                    channel = await self._open_channel(endpoint, session, line, holder)
                    if command.stdin:
                        channel.write(command.stdin)
                    channel.write_eof()
                    await session.closed.wait()
                    if session.refused is not None:
                        # Nobody could kill this command later (its process group is not
                        # on record): it dies now, and the caller hears why.
                        await self._kill_group(endpoint, holder, session)
                        raise session.refused
                except anyio.get_cancelled_exc_class():
                    # Our deadline or the caller's cancellation: either way the remote
                    # group must die before the cancellation propagates.
                    await self._kill_group(endpoint, holder, session)
                    raise
            if deadline.cancelled_caught:
                raise CommandTimeoutError(
                    f"{command.argv[0]} on node {endpoint.name} timed out after "
                    f"{command.timeout:g}s and was killed",
                    node=endpoint.name,
                    argv=list(command.argv),
                    timeout=command.timeout,
                    stdout_tail=session.stdout.text()[-2000:],
                    stderr_tail=session.stderr.text()[-2000:],
                )
        finally:
            if holder:
                self._pool(endpoint).release(holder[0])
        self._commands_run += 1
        answered = session.lost is None and (
            session.exit_status is not None or session.exit_signal is not None
        )
        if self._observer is not None:
            self._observer.command_outcome(endpoint.name, answered)
        if not answered:
            raise self._unreachable(
                endpoint,
                f"connection lost while {command.argv[0]} was running: "
                f"{session.lost or 'channel closed without an exit status'}",
            )
        return CommandResult(
            exit_status=session.exit_status,
            stdout=session.stdout.text(),
            stderr=session.stderr.text(),
            stdout_dropped=session.stdout.dropped,
            stderr_dropped=session.stderr.dropped,
            duration=anyio.current_time() - started,
            signal=session.exit_signal,
        )

    async def _open_channel(
        self, endpoint: Endpoint, session: _Session, line: str, holder: list[_Connection]
    ) -> asyncssh.SSHClientChannel[bytes]:
        """Lease a slot (stored in ``holder``) and open the exec channel on it.

        A pooled connection that turns out to be dead is replaced once. A channel the
        node refuses on a live connection is asked for again a few times, backing off:
        sshd frees a finished session's slot only once it has read the client's close,
        and it may read the next open first (``no more sessions`` although the client
        has fewer than ``MaxSessions`` open). Nothing ran yet, so retrying is safe.
        """
        reconnected = False
        refusals = 0
        while True:
            connection, fresh = await self._lease(endpoint)
            holder.append(connection)
            try:
                channel, _ = await connection.conn.create_session(
                    lambda: session, line, encoding=None
                )
            except (asyncssh.Error, OSError) as exc:
                holder.clear()
                self._pool(endpoint).release(connection)
                if connection.alive:
                    # The node refused the channel; the connection itself is fine.
                    if refusals < len(_REFUSED_BACKOFF):
                        await anyio.sleep(_REFUSED_BACKOFF[refusals])
                        refusals += 1
                        continue
                    raise NodeError(
                        f"node {endpoint.name} refused to open a channel "
                        f"{refusals + 1} times: {exc}",
                        node=endpoint.name,
                        reason=str(exc),
                    ) from exc
                if not fresh and not reconnected:
                    logger.debug("node %s: pooled connection is dead, reconnecting", endpoint.name)
                    reconnected = True
                    continue
                raise self._unreachable(endpoint, f"cannot open a channel: {exc}") from exc
            return channel

    async def _kill_group(
        self, endpoint: Endpoint, holder: list[_Connection], session: _Session
    ) -> None:
        """Kill the command on the node (its session, group and descendants), bounded
        by ``kill_timeout``.

        Never raises; failures are logged (the node may be gone).
        """
        with anyio.move_on_after(self._options.kill_timeout, shield=True) as scope:
            if not holder:
                return
            # The marker is the first thing the remote shell prints; after a slow rc file
            # it may still be on its way.
            with anyio.move_on_after(self._options.kill_timeout / 2):
                await session.marker_done.wait()
            if session.pgid is None:
                if not session.closed.is_set():
                    logger.warning(
                        "node %s: no process-group id received, cannot kill the command",
                        endpoint.name,
                    )
                return
            command = kill_line(session.pgid)
            connection = holder[0]
            try:
                if not connection.alive:
                    raise asyncssh.ConnectionLost("pooled connection lost")
                await connection.conn.run(command, check=False)
            except (asyncssh.Error, OSError):
                try:
                    conn, _ = await self._connect(endpoint)
                except NodeError as exc:
                    logger.warning(
                        "node %s: cannot kill process group %s: %s",
                        endpoint.name,
                        session.pgid,
                        exc,
                    )
                    return
                try:
                    await conn.run(command, check=False)
                except (asyncssh.Error, OSError) as exc:
                    logger.warning(
                        "node %s: killing process group %s failed: %s",
                        endpoint.name,
                        session.pgid,
                        exc,
                    )
                finally:
                    conn.abort()
            # Let the killed command's channel close, so its slot is really free.
            await session.closed.wait()
        if scope.cancelled_caught:
            logger.warning(
                "node %s: killing process group %s did not finish within %gs",
                endpoint.name,
                session.pgid,
                self._options.kill_timeout,
            )

    async def kill_leftover(self, endpoint: Endpoint, pgid: int, program: str) -> bool:
        """See :meth:`NodeRunner.kill_leftover`."""
        result = await self.run(
            endpoint, kill_if_ours_command(pgid, program, self._options.kill_timeout + 5)
        )
        return result.stdout.strip() == "killed"

    # -- host keys and files ------------------------------------------------------------

    async def fetch_host_key(self, host: str, port: int) -> str:
        """See :meth:`NodeRunner.fetch_host_key`; raises :class:`NodeUnreachableError`."""
        return await offered_host_key(host, port, self._options.connect_timeout)

    async def put_tree(
        self, endpoint: Endpoint, local_dir: Path, remote_dir: str, *, timeout: float = 300.0
    ) -> None:
        """See :meth:`NodeRunner.put_tree`."""

        async def read(path: str) -> bytes:
            return await anyio.to_thread.run_sync(read_file, path, abandon_on_cancel=True)

        try:
            with anyio.fail_after(timeout):
                plan = await anyio.to_thread.run_sync(
                    plan_tree, Path(local_dir), abandon_on_cancel=True
                )
                await self._put_plan(endpoint, plan, local_dir, remote_dir, read)
        except TimeoutError:
            raise CommandTimeoutError(
                f"copying {local_dir} to {endpoint.name}:{remote_dir} took longer than "
                f"{timeout:g}s and was abandoned",
                node=endpoint.name,
                path=remote_dir,
                timeout=timeout,
            ) from None

    async def _put_plan(
        self,
        endpoint: Endpoint,
        plan: TreePlan,
        local_dir: Path,
        remote_dir: str,
        read: Callable[[str], Awaitable[bytes]],
    ) -> None:
        connection, _ = await self._lease(endpoint)
        try:
            async with connection.conn.start_sftp_client() as sftp:
                await copy_tree(sftp, plan, remote_dir, read)
        except asyncssh.SFTPError as exc:
            raise NodeError(
                f"copying {local_dir} to {endpoint.name}:{remote_dir} failed: {exc.reason}",
                node=endpoint.name,
                path=remote_dir,
                reason=exc.reason,
            ) from exc
        except (asyncssh.Error, ConnectionError) as exc:
            raise self._unreachable(endpoint, f"lost during a file copy: {exc}") from exc
        finally:
            self._pool(endpoint).release(connection)

    @contextlib.asynccontextmanager
    async def open_unix_stream(
        self, endpoint: Endpoint, path: str
    ) -> AsyncIterator[ForwardedStream]:
        """See :meth:`NodeRunner.open_unix_stream`; the stream holds one channel slot."""
        for attempt in range(2):
            connection, fresh = await self._lease(endpoint)
            try:
                reader, writer = await connection.conn.open_unix_connection(path)
            except asyncssh.ChannelOpenError as exc:
                self._pool(endpoint).release(connection)
                raise NodeError(
                    f"node {endpoint.name} cannot connect to the Unix socket {path}: {exc.reason}",
                    node=endpoint.name,
                    path=path,
                    reason=exc.reason,
                ) from exc
            except (asyncssh.Error, OSError) as exc:
                self._pool(endpoint).release(connection)
                if not fresh and attempt == 0:
                    connection.client.lost = True
                    connection.conn.abort()
                    continue
                raise self._unreachable(endpoint, f"cannot open a channel: {exc}") from exc
            stream = ForwardedStream(endpoint, path, reader, writer)
            try:
                yield stream
            finally:
                writer.close()
                self._pool(endpoint).release(connection)
            return

    # -- the pool -----------------------------------------------------------------------

    def _pool(self, endpoint: Endpoint) -> _Pool:
        pool = self._pools.get(endpoint)
        if pool is None:
            pool = self._pools[endpoint] = _Pool(endpoint)
        return pool

    async def _lease(self, endpoint: Endpoint) -> tuple[_Connection, bool]:
        """A connection with one channel slot reserved, and whether it was just opened."""
        if self._closed:
            raise RuntimeError("this runner is closed")
        pool = self._pool(endpoint)
        while True:
            pool.prune()
            connection = pool.lease_nowait(self._options.max_sessions)
            if connection is not None:
                return connection, False
            if pool.attempt is not None:
                attempt = pool.attempt
                await attempt.done.wait()
                if attempt.error is not None:
                    # Each waiter raises its own copy, caused by the shared error.
                    raise attempt.error.restated()
                continue
            if len(pool.connections) >= self._options.max_connections:
                await pool.wait_changed()
                continue
            return await self._grow(pool), True

    async def _grow(self, pool: _Pool) -> _Connection:
        """Open one more connection for ``pool``; the caller gets its first slot."""
        attempt = pool.attempt = _Attempt()
        try:
            conn, client = await self._connect(pool.endpoint)
        except NodeError as exc:
            attempt.error = exc
            if self._observer is not None:
                self._observer.connect_outcome(pool.endpoint.name, exc)
            raise
        finally:
            pool.attempt = None
            attempt.done.set()
        if self._observer is not None:
            self._observer.connect_outcome(pool.endpoint.name, None)
        connection = _Connection(conn, client)
        connection.channels = 1
        client.on_lost.append(pool.wake)
        pool.connections.append(connection)
        pool.opened += 1
        if self._closed:  # closed while connecting
            conn.abort()
        return connection

    async def _connect(self, endpoint: Endpoint) -> tuple[asyncssh.SSHClientConnection, _Client]:
        """Open and authenticate one connection; errors translated to the NodeError tree."""
        pinned = pinned_key(endpoint)
        client = _Client()
        timeout = self._options.connect_timeout
        options = asyncssh.SSHClientConnectionOptions(
            config=None,
            username=endpoint.user,
            known_hosts=([pinned], [], []),
            connect_timeout=timeout,
            keepalive_interval=self._options.keepalive_interval,
            keepalive_count_max=self._options.keepalive_count_max,
            encryption_algs=list(self._options.ciphers),
            **self._key_options(endpoint),
        )
        try:
            with anyio.fail_after(timeout + 1):
                conn, _ = await asyncssh.create_connection(
                    lambda: client, endpoint.host, endpoint.port, options=options
                )
        except asyncssh.HostKeyNotVerifiable as exc:
            raise host_key_changed(endpoint, pinned, client.offered_key) from exc
        except asyncssh.PermissionDenied as exc:
            raise NodeError(
                f"node {endpoint.name} refused authentication as {endpoint.user}: {exc.reason}",
                node=endpoint.name,
                host=endpoint.host,
                port=endpoint.port,
                reason=exc.reason,
            ) from exc
        except (TimeoutError, OSError, asyncssh.Error) as exc:
            raise self._unreachable(endpoint, connect_reason(exc, timeout)) from exc
        return conn, client

    def _key_options(self, endpoint: Endpoint) -> dict[str, Any]:
        path = self._options.identity_file
        if path is None:
            return {}
        if self._client_keys is None:
            try:
                self._client_keys = [asyncssh.read_private_key(path)]
            except (OSError, asyncssh.KeyImportError) as exc:
                raise NodeError(
                    f"cannot read the SSH identity file {path}: {exc}",
                    node=endpoint.name,
                    path=path,
                ) from exc
        return {"client_keys": self._client_keys, "agent_path": None}

    @staticmethod
    def _unreachable(endpoint: Endpoint, reason: str) -> NodeUnreachableError:
        return NodeUnreachableError(
            f"node {endpoint.name} ({endpoint.host}:{endpoint.port}) is unreachable: {reason}",
            node=endpoint.name,
            host=endpoint.host,
            port=endpoint.port,
            reason=reason,
        )

    # -- monitoring and shutdown ----------------------------------------------------------

    def statistics(self) -> dict[str, Any]:
        """Counters: ``connections`` (open, per node), ``channels_in_use`` (per node),
        ``connections_opened`` (since start, per node) and ``commands_run`` (total);
        and ``ciphers``, the cipher each node agreed to (of its open connections)."""
        connections: dict[str, int] = {}
        channels: dict[str, int] = {}
        opened: dict[str, int] = {}
        ciphers: dict[str, str] = {}
        for endpoint, pool in self._pools.items():
            name = endpoint.name
            alive = [c for c in pool.connections if c.alive]
            if alive:
                ciphers[name] = str(alive[0].conn.get_extra_info("send_cipher"))
            connections[name] = connections.get(name, 0) + len(alive)
            channels[name] = channels.get(name, 0) + sum(c.channels for c in pool.connections)
            opened[name] = opened.get(name, 0) + pool.opened
        return {
            "connections": connections,
            "channels_in_use": channels,
            "connections_opened": opened,
            "commands_run": self._commands_run,
            "ciphers": ciphers,
        }

    async def aclose(self) -> None:
        """Close every pooled connection (bounded by ``kill_timeout``). Idempotent."""
        self._closed = True
        conns = [c.conn for pool in self._pools.values() for c in pool.connections]
        self._pools.clear()
        for conn in conns:
            conn.close()
        with anyio.move_on_after(self._options.kill_timeout, shield=True):
            for conn in conns:
                await conn.wait_closed()


__all__ = ["SSHRunner"]
