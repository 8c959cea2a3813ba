"""Embedded asyncssh nodes (``python -m extjobs.nodes.embedded``) as subprocesses."""

from __future__ import annotations

import contextlib
import selectors
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from tests.harness.node import HarnessNode, start_nodes

_READY_TIMEOUT = 30.0


class EmbeddedNode(HarnessNode):
    """An embedded SSH node; its root is the node's working directory and ``HOME``."""

    kind = "embedded"

    @property
    def host_key_file(self) -> Path:
        return self.root / "etc" / "ssh_host_ed25519_key"

    def _launch(self) -> None:
        log = (self.root / "node.log").open("ab")
        try:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "extjobs.nodes.embedded",
                    "--root",
                    str(self.root),
                    "--host",
                    self.host,
                    "--port",
                    str(self.port),
                    "--authorized-keys",
                    str(self.authorized_keys),
                ],
                stdout=subprocess.PIPE,
                stderr=log,
                stdin=subprocess.DEVNULL,
            )
        finally:
            log.close()
        line = self._read_line(_READY_TIMEOUT)
        if not line.startswith(b"listening "):
            self.kill()
            raise RuntimeError(
                f"embedded node {self.name} did not start (said {line!r}); "
                f"see {self.root / 'node.log'}"
            )
        self.port = int(line.split()[1])

    def _read_line(self, timeout: float) -> bytes:
        assert self.process is not None
        assert self.process.stdout is not None
        deadline = time.monotonic() + timeout
        with selectors.DefaultSelector() as sel:
            sel.register(self.process.stdout, selectors.EVENT_READ)
            while not sel.select(max(0.0, deadline - time.monotonic())):
                if time.monotonic() >= deadline:
                    return b""
        return self.process.stdout.readline()


@contextlib.contextmanager
def start_embedded_nodes(
    n: int, base_dir: Path, authorized_keys: Path
) -> Iterator[list[EmbeddedNode]]:
    """Start ``n`` embedded nodes under ``base_dir`` (one root each); stop them on exit."""
    with start_nodes("embedded", n, base_dir, authorized_keys) as nodes:
        yield [node for node in nodes if isinstance(node, EmbeddedNode)]
