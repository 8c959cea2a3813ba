"""The embedded SSH node: a real asyncssh SSH server that runs commands on this machine.

It serves the demo and the fast tests. Each node lives in its own root directory and
behaves, towards an SSH client, like a node running OpenSSH:

* every exec request runs as ``/bin/sh -c COMMAND`` in a new session (so the shell is
  the leader of a fresh process group), with the node root as working directory and an
  environment of ``PATH`` (the default system path), ``HOME=<root>`` and
  ``EXTJOBS_NODE_ROOT=<root>``; stdin, stdout and stderr are wired to the channel, and
  the exit status or the killing signal is reported. Like sshd, the channel stays open
  until the process has exited *and* its stdout and stderr reached end of file (a
  background child holding them keeps it open), and closing the channel does not kill
  the process;
* authentication is by public key only, against an ``authorized_keys`` file that is
  re-read for every connection;
* the host key is generated once and kept in ``<root>/etc/ssh_host_ed25519_key``: a
  restarted node keeps its key, deleting the file gives it a new one;
* SFTP works on the real file system, and direct stream-local forwarding to Unix
  sockets is allowed (QMP sockets are reached that way).

Run one with ``python -m extjobs.nodes.embedded --root DIR --port P --authorized-keys
FILE``: it prints ``listening <port>`` once ready and serves until SIGTERM or SIGINT.
On shutdown every connection is closed and every process group still running is killed.

Many nodes in one process (:func:`serve_embedded_nodes`; ``--nodes N``): node ``i`` is
called ``<prefix><i>``, lives in ``DIR/<prefix><i>`` with a host key of its own and
listens on a port of its own; the process prints ``listening <name> <port>`` per node,
then ``ready``. Every node is the same server as above, only the event loop is shared:
one Python process per node does not fit a thousand nodes in a test machine's memory,
one process for all of them does (tens of KiB per idle node).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from pathlib import Path

import anyio
import anyio.abc
import asyncssh

from extjobs.model.remote import DEFAULT_PATH
from extjobs.nodes.pipes import Child, read_chunks, spawn, wait_exit, write_all

logger = logging.getLogger(__name__)

HOST_KEY_PATH = Path("etc") / "ssh_host_ed25519_key"
_CHUNK = 65536


def load_or_create_host_key(root: Path) -> asyncssh.SSHKey:
    """The node's host key, generated (ed25519) and stored on first use."""
    path = Path(root) / HOST_KEY_PATH
    if path.exists():
        return asyncssh.read_private_key(str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    key = asyncssh.generate_private_key("ssh-ed25519")
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key.export_private_key("openssh"))
    os.replace(tmp, path)
    path.with_name(path.name + ".pub").write_bytes(key.export_public_key("openssh"))
    return key


class _NodeState:
    """What one running node owns: its connections and the process groups it started."""

    def __init__(self, root: Path, authorized_keys: Path) -> None:
        self.root = root
        self.authorized_keys = authorized_keys
        self.connections: set[asyncssh.SSHServerConnection] = set()
        self.groups: set[int] = set()
        self.env = {
            "PATH": DEFAULT_PATH,
            "HOME": str(root),
            "EXTJOBS_NODE_ROOT": str(root),
        }

    def kill_groups(self) -> None:
        for pgid in list(self.groups):
            try:
                os.killpg(pgid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            except PermissionError as exc:
                logger.warning("cannot kill process group %s: %s", pgid, exc)
        self.groups.clear()


class _NodeServer(asyncssh.SSHServer):
    def __init__(self, state: _NodeState) -> None:
        self._state = state
        self._conn: asyncssh.SSHServerConnection | None = None

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self._conn = conn
        self._state.connections.add(conn)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._conn is not None:
            self._state.connections.discard(self._conn)

    def begin_auth(self, username: str) -> bool:
        # Re-read for every connection, as sshd does.
        assert self._conn is not None
        try:
            self._conn.set_authorized_keys(str(self._state.authorized_keys))
        except (OSError, ValueError) as exc:  # missing, unreadable, or no valid entry
            logger.warning("no client key accepted from %s: %s", self._state.authorized_keys, exc)
            self._conn.set_authorized_keys([])
        return True

    def public_key_auth_supported(self) -> bool:
        # Offered even when the file lists no key, so that clients get a clean refusal.
        return True

    def password_auth_supported(self) -> bool:
        return False

    def kbdint_auth_supported(self) -> bool:
        return False

    def unix_connection_requested(self, dest_path: str) -> bool:
        return True


async def _pump_out(child: Child, fd: int, sink: asyncssh.SSHWriter[bytes]) -> None:
    """Copy a child's output to the channel until EOF, with back-pressure."""
    try:
        async for chunk in read_chunks(fd):
            sink.write(chunk)
            await sink.drain()
    except (OSError, asyncssh.Error):
        # The client went away: close our end, so the child gets SIGPIPE like under sshd.
        pass
    finally:
        child.close_fd(fd)


async def _pump_in(source: asyncssh.SSHReader[bytes], child: Child, fd: int) -> None:
    try:
        while chunk := await source.read(_CHUNK):
            await write_all(fd, chunk)
    except (OSError, asyncssh.Error):
        pass
    finally:
        child.close_fd(fd)


async def _run_exec(state: _NodeState, process: asyncssh.SSHServerProcess[bytes]) -> None:
    command = process.command
    if command is None:
        process.stderr.write(b"this node only runs commands; interactive shells are refused\n")
        process.exit(1)
        return
    child = spawn(["/bin/sh", "-c", command], env=state.env, cwd=state.root, stdin=True)
    state.groups.add(child.pid)
    assert child.stdin is not None
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(_pump_in, process.stdin, child, child.stdin)
            async with anyio.create_task_group() as out:
                out.start_soon(_pump_out, child, child.stdout, process.stdout)
                out.start_soon(_pump_out, child, child.stderr, process.stderr)
            returncode = await wait_exit(child.process)
            tg.cancel_scope.cancel()
    finally:
        state.groups.discard(child.pid)
        child.close()
    try:
        if returncode >= 0:
            process.exit(returncode)
        else:
            process.exit_with_signal(signal.Signals(-returncode).name.removeprefix("SIG"))
    except (OSError, asyncssh.Error):
        pass


def _prepare(root: Path, authorized_keys: Path) -> tuple[_NodeState, asyncssh.SSHKey]:
    root = root.resolve()
    root.mkdir(parents=True, exist_ok=True)
    return _NodeState(root, authorized_keys.resolve()), load_or_create_host_key(root)


async def serve_embedded_node(
    root: Path | str,
    host: str,
    port: int,
    authorized_keys: Path | str,
    *,
    task_status: anyio.abc.TaskStatus[int] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Serve one embedded node until cancelled; reports the bound port via ``task_status``.

    ``port`` 0 picks a free port. On cancellation, connections are closed and running
    process groups killed before returning.
    """
    state, host_key = await anyio.to_thread.run_sync(_prepare, Path(root), Path(authorized_keys))

    async def handle(process: asyncssh.SSHServerProcess[bytes]) -> None:
        await _run_exec(state, process)

    acceptor = await asyncssh.create_server(
        lambda: _NodeServer(state),
        host,
        port,
        server_host_keys=[host_key],
        process_factory=handle,
        encoding=None,
        sftp_factory=True,
        allow_scp=False,
        line_editor=False,
        config=None,
    )
    try:
        task_status.started(acceptor.get_port())
        await anyio.sleep_forever()
    finally:
        acceptor.close()
        for conn in list(state.connections):
            conn.close()
        state.kill_groups()
        with anyio.move_on_after(5, shield=True):
            await acceptor.wait_closed()
            for conn in list(state.connections):
                await conn.wait_closed()


async def serve_embedded_nodes(
    roots: list[Path],
    host: str,
    authorized_keys: Path | str,
    *,
    task_status: anyio.abc.TaskStatus[list[int]] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Serve one embedded node per root (each its own port, host key and directory) in
    this event loop until cancelled; reports their ports, in order, once all listen."""
    async with anyio.create_task_group() as tg:
        ports = [
            await tg.start(serve_embedded_node, root, host, 0, authorized_keys) for root in roots
        ]
        task_status.started(ports)


async def _main(args: argparse.Namespace) -> None:
    async with anyio.create_task_group() as tg:
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            if args.nodes:
                names = [f"{args.prefix}{i + 1}" for i in range(args.nodes)]
                ports = await tg.start(
                    serve_embedded_nodes,
                    [args.root / name for name in names],
                    args.host,
                    args.authorized_keys,
                )
                lines = [f"listening {n} {p}" for n, p in zip(names, ports, strict=True)]
                print("\n".join([*lines, "ready"]), flush=True)
            else:
                port = await tg.start(
                    serve_embedded_node, args.root, args.host, args.port, args.authorized_keys
                )
                print(f"listening {port}", flush=True)
            async for _ in signals:
                tg.cancel_scope.cancel()
                break


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m extjobs.nodes.embedded", description="Run one embedded SSH node."
    )
    parser.add_argument("--root", required=True, type=Path, help="the node's root directory")
    parser.add_argument("--port", type=int, default=0, help="TCP port (0: pick a free one)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--authorized-keys", required=True, type=Path, help="authorized_keys file")
    parser.add_argument(
        "--nodes",
        type=int,
        default=0,
        help="serve this many nodes, each in ROOT/<prefix><i> on a port of its own",
    )
    parser.add_argument("--prefix", default="node", help="name prefix of the nodes of --nodes")
    args = parser.parse_args(argv)
    if args.nodes and args.port:
        parser.error("--port names one node's port; with --nodes every node picks its own")
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    # asyncio's loop, not uvloop: stream-local forwarding to QMP sockets stalls on
    # uvloop, and the node's own CPU per command (~1 ms) is no lower on it.
    anyio.run(_main, args, backend="asyncio")


if __name__ == "__main__":
    main()
