"""Embedded asyncssh nodes (``python -m extjobs.nodes.embedded``) as subprocesses, started
by the test kit (:mod:`extjobs.testing.processes`) like the demo's and the benchmarks'."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from extjobs.testing.processes import read_ready_port, spawn_embedded_node
from tests.harness.node import HarnessNode, start_nodes

_READY_TIMEOUT = 30.0


class EmbeddedNode(HarnessNode):
    """An embedded SSH node; its root is the node's working directory and ``HOME``."""

    kind = "embedded"

    @property
    def host_key_file(self) -> Path:
        return self.root / "etc" / "ssh_host_ed25519_key"

    def _launch(self) -> None:
        self.process = spawn_embedded_node(
            self.root,
            self.authorized_keys,
            host=self.host,
            port=self.port,
            log=self.root / "node.log",
        )
        port = read_ready_port(self.process, _READY_TIMEOUT)
        if port is None:
            self.kill()
            raise RuntimeError(
                f"embedded node {self.name} did not start; see {self.root / 'node.log'}"
            )
        self.port = port


@contextlib.contextmanager
def start_embedded_nodes(
    n: int, base_dir: Path, authorized_keys: Path
) -> Iterator[list[EmbeddedNode]]:
    """Start ``n`` embedded nodes under ``base_dir`` (one root each); stop them on exit."""
    with start_nodes("embedded", n, base_dir, authorized_keys) as nodes:
        yield [node for node in nodes if isinstance(node, EmbeddedNode)]
