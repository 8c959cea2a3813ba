"""A whole cluster for integration tests: SSH nodes + a real daemon process + a client.

The daemon runs as a subprocess (``python -m extjobs daemon``), exactly as operators
run it, so a test can SIGKILL it and start it again on the same state directory.
Commands go through the HTTP API (``client``) or the real CLI (``cli``).
"""

from __future__ import annotations

import contextlib
import getpass
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from extjobs.api.client import Client
from extjobs.testing.processes import DaemonProcess, write_daemon_config
from tests.harness.keys import make_client_key
from tests.harness.node import HarnessNode, start_nodes
from tests.harness.openssh import login

REPO = Path(__file__).resolve().parents[2]
PROVIDERS = REPO / "providers"


class Daemon(DaemonProcess):
    """The kit's daemon process with the harness's defaults (log file, info level)."""

    __test__ = False

    def __init__(self, config: Path, socket: Path, log: Path) -> None:
        super().__init__(config, socket, log=log, log_level="info", cwd=REPO)

    def start(self, timeout: float = 20.0) -> None:
        super().start(timeout)

    def stop(self, timeout: float = 15.0) -> None:
        super().stop(timeout)


class TestCluster:
    __test__ = False

    def __init__(self, base: Path, nodes: list[HarnessNode], daemon: Daemon, kind: str) -> None:
        self.base = base
        self.nodes = nodes
        self.daemon = daemon
        self.kind = kind
        self.client = Client(daemon.socket)

    @property
    def user(self) -> str:
        return login() if self.kind == "openssh" else getpass.getuser()

    def node(self, name: str) -> HarnessNode:
        return next(n for n in self.nodes if n.name == name)

    def search_path(self, node: HarnessNode) -> Path:
        return node.root / "srv" / "extjobs" / "extstorage"

    def install_provider(
        self, node: HarnessNode, provider: str, source: Path | None = None
    ) -> Path:
        dest = self.search_path(node) / provider
        if dest.exists():
            shutil.rmtree(dest)
        shutil.copytree(source or PROVIDERS / provider, dest)
        (dest / "node-id").write_text(node.name + "\n")
        return dest

    def cli(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "EXTJOBS_SOCKET": str(self.daemon.socket), "COLUMNS": "200"}
        return subprocess.run(
            [sys.executable, "-m", "extjobs", *args],
            env=env,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    def run_job(self, ops: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
        """Submit one job and wait for it to end; return the full job."""
        job_id = self.client.submit({"ops": ops, **extra})[0]
        return self.wait(job_id)

    def wait(self, job_id: int, timeout: float = 90.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        for job, _entries in self.client.follow(job_id):
            if job["status"] in ("success", "error", "canceled"):
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} still {job['status']}")
        return self.client.job(job_id)

    def init(self, providers: tuple[str, ...] = ("sharedfile",)) -> None:
        job = self.run_job([{"OP_ID": "OP_CLUSTER_INIT", "cluster_name": "test"}])
        assert job["status"] == "success", job
        for node in self.nodes:
            for provider in providers:
                self.install_provider(node, provider)
            self.add_node(node)

    def add_node(self, node: HarnessNode, **extra: Any) -> dict[str, Any]:
        op = {
            "OP_ID": "OP_NODE_ADD",
            "node_name": node.name,
            "address": node.host,
            "port": node.port,
            "user": self.user,
            "accept_new_host_key": True,
            "search_path": [str(self.search_path(node))],
            **extra,
        }
        job = self.run_job([op])
        assert job["status"] == "success", json.dumps(job, indent=1)[-3000:]
        return job

    def restart_daemon(self, *, kill: bool = True) -> None:
        self.client.close()
        if kill:
            self.daemon.kill()
        else:
            self.daemon.stop()
        self.daemon.start()
        self.client = Client(self.daemon.socket)


@contextlib.contextmanager
def start_cluster(
    kind: str,
    n: int,
    base: Path,
    *,
    config_extra: str = "",
    daemon_extra: str = "",
    sections: str = "",
) -> Iterator[TestCluster]:
    """``n`` nodes of ``kind`` plus a daemon; everything is stopped on exit. ``sections``:
    further sections of the daemon's configuration file (``[store]``)."""
    key, public = make_client_key(base / "master")
    authorized = base / "master" / "authorized_keys"
    authorized.write_text(public + "\n")
    run = base / "run"
    run.mkdir(mode=0o700)
    config = base / "extjobs.toml"
    socket = run / "api.sock"
    write_daemon_config(
        config,
        state_dir=base / "state",
        socket=socket,
        identity_file=key,
        daemon=daemon_extra,
        ssh="connect_timeout = 3.0\nkeepalive_interval = 2.0\nkeepalive_count_max = 2\n"
        + config_extra,
        extra=sections,
    )
    with start_nodes(kind, n, base / "nodes", authorized) as nodes:
        daemon = Daemon(config, socket, base / "daemon.log")
        daemon.start()
        cluster = TestCluster(base, nodes, daemon, kind)
        try:
            yield cluster
        finally:
            cluster.client.close()
            daemon.stop()
