"""Embedded SSH node processes and a daemon process, started as operators start them.

Synchronous on purpose: the test harness, the benchmarks and the demo drive these from
plain functions (and :func:`~extjobs.testing.cluster.open_test_cluster` from a worker
thread).

* :class:`EmbeddedNodeProcess` — ``python -m extjobs.nodes.embedded`` with its own
  root; :meth:`~EmbeddedNodeProcess.spawn` and :meth:`~EmbeddedNodeProcess.wait_ready`
  are separate so that many nodes start in parallel (:func:`start_embedded_nodes`).
  The port is kept across restarts. The node runs commands with ``/bin/sh`` and
  ``HOME`` set to its root: no login shell start-up file of the machine's users runs.
* :class:`EmbeddedNodeGroup` — many embedded nodes served by one process
  (``python -m extjobs.nodes.embedded --nodes N``), each with its own port, host key
  and root: a thousand nodes for a scale benchmark in the memory of one process.
  Its members (:class:`ServedNode`) have the read-only side of an
  :class:`EmbeddedNodeProcess` (name, root, host, port, host key, search path,
  endpoint, ``process``), so that code written for one works with the other.
* :class:`DaemonProcess` — ``python -m extjobs daemon`` with its own configuration,
  state directory and Unix socket; ready once the API answers.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO

import attrs

from extjobs.api.client import Client
from extjobs.errors import ExtJobsError
from extjobs.model.remote import Endpoint
from extjobs.nodes.keys import generate_client_key

#: Where a node's providers live, relative to its root (the first search path entry).
SEARCH_PATH = Path("srv") / "extjobs" / "extstorage"


@attrs.frozen
class ClientKey:
    """The master's SSH key and the authorized_keys file every test node accepts."""

    private_key: Path
    public_line: str
    authorized_keys: Path


def make_client_key(directory: Path) -> ClientKey:
    """A new ed25519 key in ``directory`` (``id_ed25519``, mode 0600) and an
    ``authorized_keys`` file holding its public line."""
    private = Path(directory) / "id_ed25519"
    public = generate_client_key(private)
    authorized = Path(directory) / "authorized_keys"
    authorized.write_text(public + "\n")
    return ClientKey(private, public, authorized)


def spawn_embedded_node(
    root: Path,
    authorized_keys: Path,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    log: Path | None = None,
) -> subprocess.Popen[bytes]:
    """Start ``python -m extjobs.nodes.embedded`` serving ``root`` on ``host:port`` (0:
    any free port); its stderr goes to ``log`` (``None``: inherited). Read the port
    with :func:`read_ready_port`."""
    stderr: IO[bytes] | None = log.open("ab") if log is not None else None
    try:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "extjobs.nodes.embedded",
                "--root",
                str(root),
                "--host",
                host,
                "--port",
                str(port),
                "--authorized-keys",
                str(authorized_keys),
            ],
            stdout=subprocess.PIPE,
            stderr=stderr,
            stdin=subprocess.DEVNULL,
        )
    finally:
        if stderr is not None:
            stderr.close()


def read_ready_port(process: subprocess.Popen[bytes], timeout: float) -> int | None:
    """The port an embedded node announced (``listening <port>``), or ``None`` when it
    said something else, exited, or said nothing within ``timeout`` seconds."""
    assert process.stdout is not None
    line = b""
    with selectors.DefaultSelector() as sel:
        sel.register(process.stdout, selectors.EVENT_READ)
        if sel.select(max(0.0, timeout)):
            line = process.stdout.readline()
    words = line.split()
    if len(words) != 2 or words[0] != b"listening" or not words[1].isdigit():
        return None
    return int(words[1])


class EmbeddedNodeProcess:
    """One embedded SSH node on loopback; its root is its working directory and ``HOME``.

    ``log``: where the node's stderr goes (``None``: inherited from this process).
    """

    def __init__(
        self,
        name: str,
        root: Path,
        authorized_keys: Path,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        log: Path | None = None,
    ) -> None:
        self.name = name
        self.root = Path(root)
        self.authorized_keys = Path(authorized_keys)
        self.host = host
        self.port = port
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None
        self.root.mkdir(parents=True, exist_ok=True)

    @property
    def host_key_file(self) -> Path:
        return self.root / "etc" / "ssh_host_ed25519_key"

    @property
    def host_key(self) -> str:
        """The node's public host key, ``ssh-ed25519 AAAA…`` (no comment)."""
        words = self.host_key_file.with_name("ssh_host_ed25519_key.pub").read_text().split()
        return " ".join(words[:2])

    @property
    def search_path(self) -> Path:
        return self.root / SEARCH_PATH

    def endpoint(self, user: str) -> Endpoint:
        return Endpoint(self.name, self.host, self.port, user, self.host_key)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def spawn(self) -> None:
        """Start the process; :meth:`wait_ready` must follow."""
        self.process = spawn_embedded_node(
            self.root, self.authorized_keys, host=self.host, port=self.port, log=self.log
        )

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Wait for ``listening <port>``; raises RuntimeError (the process killed) if the
        node does not say it within ``timeout`` seconds."""
        assert self.process is not None
        port = read_ready_port(self.process, timeout)
        if port is None:
            self.kill()
            where = f"; see {self.log}" if self.log is not None else ""
            raise RuntimeError(f"embedded node {self.name} did not start{where}")
        self.port = port

    def start(self, timeout: float = 30.0) -> None:
        self.spawn()
        self.wait_ready(timeout)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM (the node kills what it started), SIGKILL after ``timeout`` seconds."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._closed()

    def kill(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        self._closed()

    def _closed(self) -> None:
        assert self.process is not None
        if self.process.stdout is not None:
            self.process.stdout.close()
        self.process = None

    def __repr__(self) -> str:
        return f"<EmbeddedNodeProcess {self.name} {self.host}:{self.port} {self.root}>"


@contextlib.contextmanager
def start_embedded_nodes(
    names: Sequence[str],
    base: Path,
    authorized_keys: Path,
    *,
    logs: bool = True,
    prepare: Callable[[str, Path], None] | None = None,
    timeout: float = 30.0,
) -> Iterator[list[EmbeddedNodeProcess]]:
    """Nodes called ``names`` with roots ``base/<name>``, started in parallel; stopped on
    exit. ``prepare(name, root)`` runs before a node starts (to install providers);
    ``logs``: each node's stderr goes to ``<root>/node.log`` (else it is inherited)."""
    nodes = [
        EmbeddedNodeProcess(
            name,
            Path(base) / name,
            authorized_keys,
            log=Path(base) / name / "node.log" if logs else None,
        )
        for name in names
    ]
    try:
        for node in nodes:
            if prepare is not None:
                prepare(node.name, node.root)
            node.spawn()
        for node in nodes:
            node.wait_ready(timeout + len(nodes))
        yield nodes
    finally:
        for node in nodes:
            if node.process is not None and node.process.poll() is None:
                node.process.terminate()
        for node in nodes:
            node.stop()


class ServedNode:
    """One node of an :class:`EmbeddedNodeGroup`: ``process`` is the group's."""

    def __init__(
        self, name: str, root: Path, host: str, port: int, process: subprocess.Popen[bytes]
    ) -> None:
        self.name = name
        self.root = root
        self.host = host
        self.port = port
        self.process = process

    host_key_file = EmbeddedNodeProcess.host_key_file
    host_key = EmbeddedNodeProcess.host_key
    search_path = EmbeddedNodeProcess.search_path
    endpoint = EmbeddedNodeProcess.endpoint

    def __repr__(self) -> str:
        return f"<ServedNode {self.name} {self.host}:{self.port} {self.root}>"


class EmbeddedNodeGroup:
    """``count`` embedded nodes named ``<prefix>1…`` with roots ``base/<name>``, all
    served by one process; :meth:`start` returns them once every one listens."""

    def __init__(
        self,
        base: Path,
        count: int,
        authorized_keys: Path,
        *,
        prefix: str = "node",
        host: str = "127.0.0.1",
        log: Path | None = None,
    ) -> None:
        self.base = Path(base)
        self.count = count
        self.authorized_keys = Path(authorized_keys)
        self.prefix = prefix
        self.host = host
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None
        self.nodes: list[ServedNode] = []

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self, timeout: float = 120.0) -> list[ServedNode]:
        """Start the process and wait for every node's ``listening NAME PORT`` and
        ``ready``; raises RuntimeError (the process killed) otherwise."""
        self.base.mkdir(parents=True, exist_ok=True)
        stderr: IO[bytes] | None = self.log.open("ab") if self.log is not None else None
        try:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "extjobs.nodes.embedded",
                    "--root",
                    str(self.base),
                    "--host",
                    self.host,
                    "--nodes",
                    str(self.count),
                    "--prefix",
                    self.prefix,
                    "--authorized-keys",
                    str(self.authorized_keys),
                ],
                stdout=subprocess.PIPE,
                stderr=stderr,
                stdin=subprocess.DEVNULL,
            )
        finally:
            if stderr is not None:
                stderr.close()
        assert self.process.stdout is not None
        deadline = time.monotonic() + timeout
        fd = self.process.stdout.fileno()
        lines: list[bytes] = []
        pending = b""
        with selectors.DefaultSelector() as sel:
            sel.register(fd, selectors.EVENT_READ)
            # Unbuffered reads: a buffered readline could hold lines the selector no
            # longer reports as readable.
            while (not lines or lines[-1] != b"ready") and sel.select(
                max(0.0, deadline - time.monotonic())
            ):
                chunk = os.read(fd, 65536)
                if not chunk:
                    break
                *complete, pending = (pending + chunk).split(b"\n")
                lines += [line.strip() for line in complete]
        nodes = self._announced(lines)
        if nodes is not None:
            self.nodes = nodes
            return nodes
        self.stop()
        where = f"; see {self.log}" if self.log is not None else ""
        raise RuntimeError(f"embedded node group under {self.base} did not start{where}")

    def _announced(self, lines: list[bytes]) -> list[ServedNode] | None:
        """The nodes of ``listening NAME PORT`` lines ending in ``ready``, or None when
        the process said anything else or not all of it."""
        if not lines or lines[-1] != b"ready" or len(lines) != self.count + 1:
            return None
        assert self.process is not None
        nodes = []
        for line in lines[:-1]:
            words = line.split()
            if len(words) != 3 or words[0] != b"listening" or not words[2].isdigit():
                return None
            name = words[1].decode()
            nodes.append(ServedNode(name, self.base / name, self.host, int(words[2]), self.process))
        return nodes

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM (every node kills what it started), SIGKILL after ``timeout``."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()
        self.process = None

    def __enter__(self) -> list[ServedNode]:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def write_daemon_config(
    path: Path,
    *,
    state_dir: Path,
    socket: Path,
    identity_file: Path,
    daemon: str = "",
    ssh: str = "connect_timeout = 5.0\n",
    extra: str = "",
) -> None:
    """The daemon's TOML file: ``daemon`` and ``ssh`` are further lines of those
    sections, ``extra`` further sections. The watcher is off (``interval = 0``) unless
    ``extra`` has a ``[watcher]`` section: it would repair what a test breaks on purpose."""
    if "[watcher]" not in extra:
        extra += "\n[watcher]\ninterval = 0\n"
    path.write_text(
        f'[daemon]\nstate_dir = "{state_dir}"\nsocket = "{socket}"\n{daemon}\n'
        f'[ssh]\nidentity_file = "{identity_file}"\n{ssh}\n{extra}'
    )


class DaemonProcess:
    """``python -m extjobs daemon --config CONFIG`` as a subprocess.

    ``log``: where its output goes (``None``: inherited). ``env`` is added to this
    process's environment when it starts (fault injection); ``python_args`` come before
    ``-m extjobs`` (a profiler).
    """

    def __init__(
        self,
        config: Path,
        socket: Path,
        *,
        log: Path | None = None,
        log_level: str = "info",
        cwd: Path | None = None,
        python_args: Sequence[str] = (),
    ) -> None:
        self.config = config
        self.socket = socket
        self.log = log
        self.log_level = log_level
        self.cwd = cwd
        self.python_args = tuple(python_args)
        self.env: dict[str, str] = {}
        #: Further options of ``extjobs daemon`` for the next start (``--restore FILE``).
        self.args: list[str] = []
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def _output(self) -> str:
        if self.log is None or not self.log.exists():
            return ""
        return ":\n" + self.log.read_text()[-3000:]

    def start(self, timeout: float = 30.0) -> None:
        """Start it and wait until its API answers; raises RuntimeError when it exits or
        does not answer within ``timeout`` seconds."""
        with contextlib.suppress(FileNotFoundError):
            self.socket.unlink()
        self.socket.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        out: IO[bytes] | None = self.log.open("ab") if self.log is not None else None
        try:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    *self.python_args,
                    "-m",
                    "extjobs",
                    "daemon",
                    "--config",
                    str(self.config),
                    "--log-level",
                    self.log_level,
                    *self.args,
                ],
                stdout=out,
                stderr=subprocess.STDOUT if out is not None else None,
                stdin=subprocess.DEVNULL,
                cwd=self.cwd,
                env={**os.environ, **self.env},
            )
        finally:
            if out is not None:
                out.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.socket.exists():
                with Client(self.socket) as client, contextlib.suppress(ExtJobsError):
                    client.info()
                    return
            if self.process.poll() is not None:
                raise RuntimeError(f"daemon exited at start-up{self._output()}")
            time.sleep(0.05)
        raise RuntimeError(f"daemon did not start{self._output()}")

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM, SIGKILL after ``timeout`` seconds."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


def daemon_env(socket: Path, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of an ``extjobs`` CLI talking to the daemon on ``socket``."""
    return {**os.environ, "EXTJOBS_SOCKET": str(socket), **(extra or {})}
