"""What every harness node offers, whatever serves SSH on it.

A node is a server process on a loopback port with its own root (state) directory. The
port is chosen on the first start and kept, so a restarted node is reachable at the
same endpoint. Every node started is stopped at interpreter exit at the latest.
"""

from __future__ import annotations

import atexit
import contextlib
import signal
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import ClassVar

from extjobs.model.remote import Endpoint
from tests.harness.procs import is_alive, process_tree, signal_all

NODE_KINDS = ("embedded", "openssh")

_running: set[HarnessNode] = set()


class HarnessNode:
    """One SSH node for tests. Subclasses implement :meth:`_launch`."""

    kind: ClassVar[str] = ""
    __test__ = False

    def __init__(self, name: str, root: Path, authorized_keys: Path, host: str = "127.0.0.1"):
        self.name = name
        self.root = Path(root)
        self.authorized_keys = Path(authorized_keys)
        self.host = host
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None
        self.root.mkdir(parents=True, exist_ok=True)

    # -- to implement -----------------------------------------------------------------

    @property
    def host_key_file(self) -> Path:
        """The private host key; deleting it and restarting gives the node a new key."""
        raise NotImplementedError

    def _launch(self) -> None:
        """Start the server on ``self.port`` (0: pick one), set ``process`` and ``port``."""
        raise NotImplementedError

    # -- common -----------------------------------------------------------------------

    @property
    def host_key(self) -> str:
        """The node's public host key, OpenSSH format."""
        return self.host_key_file.with_name(self.host_key_file.name + ".pub").read_text().strip()

    def endpoint(self, user: str = "root", host_key: str | None = "pinned") -> Endpoint:
        """The endpoint to reach this node; ``host_key`` defaults to its current key."""
        key = self.host_key if host_key == "pinned" else host_key
        return Endpoint(name=self.name, host=self.host, port=self.port, user=user, host_key=key)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> None:
        if self.running:
            raise RuntimeError(f"node {self.name} is already running")
        self._launch()
        _running.add(self)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the server gracefully; whatever it started is killed too."""
        if self.process is None:
            return
        tree = process_tree(self.process.pid)
        signal_all(tree, signal.SIGCONT)
        self._terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout)
        self._finish(tree)

    def kill(self) -> None:
        """SIGKILL the server and everything it started (a crashed node)."""
        if self.process is None:
            return
        tree = process_tree(self.process.pid)
        signal_all(tree, signal.SIGKILL)
        self._finish(tree)

    def freeze(self) -> None:
        """SIGSTOP the server and its children: the port accepts, nothing answers."""
        if self.process is not None:
            signal_all(process_tree(self.process.pid), signal.SIGSTOP)

    def thaw(self) -> None:
        if self.process is not None:
            signal_all(process_tree(self.process.pid), signal.SIGCONT)

    def restart(self) -> None:
        """Stop, then start again on the same port (a key deleted meanwhile is renewed)."""
        self.stop()
        self.start()

    def delete_host_key(self) -> None:
        self.host_key_file.unlink()
        self.host_key_file.with_name(self.host_key_file.name + ".pub").unlink(missing_ok=True)

    def _terminate(self) -> None:
        assert self.process is not None
        self.process.terminate()

    def _finish(self, tree: list[int]) -> None:
        assert self.process is not None
        signal_all([pid for pid in tree if is_alive(pid)], signal.SIGKILL)
        self.process.wait()
        for stream in (self.process.stdout, self.process.stderr):
            if stream is not None:
                stream.close()
        self.process = None
        _running.discard(self)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} {self.host}:{self.port} {self.root}>"


@contextlib.contextmanager
def start_nodes(
    kind: str, n: int, base_dir: Path, authorized_keys: Path
) -> Iterator[list[HarnessNode]]:
    """Start ``n`` nodes of ``kind`` (``"embedded"`` or ``"openssh"``); stop them on exit."""
    from tests.harness.embedded import EmbeddedNode
    from tests.harness.openssh import OpenSSHNode, require_sshd

    factories: dict[str, Callable[[str, Path, Path], HarnessNode]] = {
        "embedded": EmbeddedNode,
        "openssh": OpenSSHNode,
    }
    if kind not in factories:
        raise ValueError(f"unknown node kind {kind!r}; expected one of {NODE_KINDS}")
    if kind == "openssh":
        require_sshd()
    nodes: list[HarnessNode] = []
    try:
        for i in range(n):
            node = factories[kind](f"node{i + 1}", Path(base_dir) / f"node{i + 1}", authorized_keys)
            nodes.append(node)
            node.start()
        yield nodes
    finally:
        for node in nodes:
            node.stop()


@atexit.register
def _stop_all() -> None:
    for node in list(_running):
        with contextlib.suppress(Exception):
            node.kill()
