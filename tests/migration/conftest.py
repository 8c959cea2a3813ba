"""Clusters for the migration and failover tests, and the faults they inject.

Each module gets one cluster per node kind (three nodes, the strict provider on each,
a fence script); cases work on their own instances and volume directories and leave
every node reachable and every instance consistent, so they can share it.

Faults: a provider script replaced on one node (the provider directory is per node),
a node's hypervisor run directory made unusable (the fake guest cannot start there),
a node's SSH server stopped, a port already taken (kvm).
"""

from __future__ import annotations

import contextlib
import shutil
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tests.instances.conftest import Cluster, open_cluster

STRICT = Path(__file__).resolve().parents[1] / "data" / "providers" / "strict"

#: A fence command for tests: "powers off" node $EXTJOBS_NODE by killing its guests and
#: revokes its hold on the storage (as a SAN fence would) by deleting the strict
#: provider's markers of that node. Arguments: LOG RUN_DIR VOLS_ROOT.
FENCE_SCRIPT = r"""#!/bin/sh
set -u
log=$1 run=$2 vols=$3
node=${EXTJOBS_NODE:?}
printf '%s %s\n' "$node" "${EXTJOBS_NODE_HOST:-}" >>"$log"
for pidfile in "$run/$node"/*.pid; do
  [ -e "$pidfile" ] || continue
  pid=$(cat "$pidfile")
  kill -s KILL -- "-$pid" 2>/dev/null
  kill -s KILL "$pid" 2>/dev/null
  rm -f -- "$pidfile"
done
find "$vols" -path "*.attached/$node" -delete 2>/dev/null
find "$vols" -path "*.open/$node.*" -delete 2>/dev/null
exit 0
"""


class MoveCluster(Cluster):
    """A test cluster with helpers for moving instances and injecting faults."""

    @property
    def fence_log(self) -> Path:
        return self.tc.base / "fenced.log"

    def fence_command(self) -> str:
        script = self.tc.base / "fence.sh"
        if not script.exists():
            script.write_text(FENCE_SCRIPT)
            script.chmod(0o755)
        return f"{script} {self.fence_log} {self.run_dir} {self.tc.base / 'vols'}"

    def fenced(self) -> list[str]:
        if not self.fence_log.exists():
            return []
        return [line.split()[0] for line in self.fence_log.read_text().splitlines()]

    def add(self, name: str, node: str, vols: Path, *extra: str, disks: int = 2) -> None:
        """Add an instance on ``node`` with ``disks`` strict disks in ``vols``."""
        specs = []
        for index in range(disks):
            specs += ["--disk", f"{index}:size={8 >> index}M,provider=strict,dir={vols}"]
        self.ok("instance", "add", name, "-n", node, *specs, *extra)

    def last(self, op_id: str = "OP_INSTANCE_MIGRATE") -> dict[str, Any]:
        """The newest job whose first opcode is ``op_id``."""
        for job in reversed(self.tc.client.jobs()):
            if job["summary"][:1] and job["summary"][0].partition("(")[0] == op_id:
                return self.tc.client.job(job["id"])
        raise AssertionError(f"no {op_id} job")

    def error(self, job: dict[str, Any]) -> str:
        return " ".join(op["error"]["message"] for op in job["ops"] if op.get("error"))

    def provider_dir(self, node: str, provider: str = "strict") -> Path:
        return self.tc.search_path(self.tc.node(node)) / provider

    @contextlib.contextmanager
    def replaced(self, node: str, script: str, body: str) -> Iterator[None]:
        """Provider ``script`` of strict on ``node`` replaced by ``body`` (which may call
        the original as ``"${0%/*}/<script>.real"``), restored afterwards."""
        path = self.provider_dir(node) / script
        real = path.with_name(f"{script}.real")
        path.rename(real)
        path.write_text("#!/bin/sh\n" + body)
        path.chmod(0o755)
        try:
            yield
        finally:
            path.unlink()
            real.rename(path)

    @contextlib.contextmanager
    def run_dir_blocked(self, node: str) -> Iterator[None]:
        """``node``'s hypervisor run directory replaced by a file: no guest starts there."""
        path = self.run_dir / node
        aside = self.run_dir / f"{node}.aside"
        if path.exists():
            path.rename(aside)
        path.write_text("not a directory\n")
        try:
            yield
        finally:
            path.unlink()
            if aside.exists():
                aside.rename(path)

    @contextlib.contextmanager
    def ssh_stopped(self, node: str) -> Iterator[None]:
        """``node``'s SSH server stopped (its guests keep running), started afterwards."""
        self.tc.node(node).stop()
        try:
            yield
        finally:
            self.tc.node(node).start()
            self._wait_reachable(node)

    def _wait_reachable(self, node: str) -> None:
        deadline = time.monotonic() + 30
        while True:
            job = self.tc.run_job(
                [{"OP_ID": "OP_TEST_DELAY", "duration": 0, "on_master": False, "on_nodes": [node]}]
            )
            if job["status"] == "success":
                return
            assert time.monotonic() < deadline, f"{node} did not come back"
            time.sleep(0.2)

    def run_strict(self, node: str, action: str, volume: str, vols: Path, **env: str) -> None:
        """Run a strict provider script by hand on ``node`` (a stray action)."""
        import subprocess

        directory = self.provider_dir(node)
        subprocess.run(
            [str(directory / action)],
            env={"PATH": "/usr/bin:/bin", "VOL_NAME": volume, "EXTP_DIR": str(vols), **env},
            cwd=directory,
            check=True,
            capture_output=True,
        )


def install_strict(cluster: Cluster) -> None:
    for node in cluster.tc.nodes:
        dest = cluster.tc.install_provider(node, "strict", STRICT)
        for script in dest.iterdir():
            if script.name not in ("parameters.list", "README.md", "common.sh", "node-id"):
                script.chmod(script.stat().st_mode | stat.S_IXUSR)


@contextlib.contextmanager
def open_move_cluster(kind: str, base: Path, *, nodes: int = 3) -> Iterator[MoveCluster]:
    with open_cluster(kind, base, nodes=nodes, providers=()) as plain:
        cluster = MoveCluster(plain.tc, plain.run_dir)
        install_strict(cluster)
        try:
            yield cluster
        finally:
            shutil.rmtree(base / "vols", ignore_errors=True)
