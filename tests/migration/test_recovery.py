"""Migrate and failover interrupted by a daemon crash (SIGKILL) or a cancel.

A provider script on one node is replaced by one that, the first time only, leaves a
marker and sleeps before doing its work; the test kills the daemon while it sleeps and
starts it again. Recovery reads the journal:

- a migration interrupted after the target attach is settled back on the source: the
  target's disks are detached again, the job fails saying so;
- a failover interrupted after the source released the disks finishes on the target.

A cancelled migration settles on the source; a cancelled failover undoes what it did
on the target and starts the instance on the source again.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.instances.conftest import KINDS
from tests.migration.conftest import MoveCluster, open_move_cluster
from tests.migration.invariants import check

pytestmark = pytest.mark.spawns

# First call: leave a marker next to the volume directory and sleep; later calls and
# the rest of the first one do the real work.
SLEEP_ONCE = (
    'if [ ! -e "$EXTP_DIR.{step}-started" ]; then\n'
    '  touch "$EXTP_DIR.{step}-started"\n'
    "  sleep 30\n"
    "fi\n"
    'exec "${{0%/*}}/{step}.real"\n'
)


@pytest.fixture(scope="module", params=KINDS)
def cluster(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[MoveCluster]:
    base = tmp_path_factory.mktemp(f"move-crash-{request.param}")
    with open_move_cluster(request.param, base, nodes=2) as c:
        yield c


def wait_for(path: Path, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} did not appear"
        time.sleep(0.02)


def test_migration_interrupted_after_the_target_attach(cluster: MoveCluster) -> None:
    vols = cluster.vol_dir("crash-migrate")
    cluster.add("cr1", "node1", vols, disks=1)
    with cluster.replaced("node2", "open", SLEEP_ONCE.format(step="open")):
        job_id = cluster.tc.client.submit_ops(
            [{"OP_ID": "OP_INSTANCE_MIGRATE", "instance_name": "cr1", "target_node": "node2"}]
        )
        wait_for(Path(f"{vols}.open-started"))
        cluster.tc.restart_daemon(kill=True)
        job = cluster.tc.wait(job_id)
    assert job["status"] == "error", cluster.log_text(job)
    message = cluster.error(job)
    assert "migration of cr1 interrupted by a daemon restart" in message
    assert "cr1 runs on node1, its disks open exclusively there" in message
    assert "disks closed and detached on node2" in message
    check(cluster, "cr1", on="node1", running=True)
    cluster.ok("instance", "remove", "cr1")


def test_failover_interrupted_after_the_source_detach(cluster: MoveCluster) -> None:
    vols = cluster.vol_dir("crash-failover")
    cluster.add("cr2", "node1", vols, disks=1)
    with cluster.replaced("node2", "attach", SLEEP_ONCE.format(step="attach")):
        job_id = cluster.tc.client.submit_ops(
            [{"OP_ID": "OP_INSTANCE_FAILOVER", "instance_name": "cr2", "target_node": "node2"}]
        )
        wait_for(Path(f"{vols}.attach-started"))
        cluster.tc.restart_daemon(kill=True)
        job = cluster.tc.wait(job_id)
    assert job["status"] == "success", cluster.log_text(job)
    log = cluster.log_text(job)
    assert "after node1 released the disks; finished on node2" in log
    check(cluster, "cr2", on="node2", running=True)
    cluster.ok("instance", "remove", "cr2")


def test_cancelled_moves_are_undone(cluster: MoveCluster) -> None:
    vols = cluster.vol_dir("cancel")
    cluster.add("cr3", "node1", vols, disks=1)
    with cluster.replaced("node2", "open", SLEEP_ONCE.format(step="open")):
        job_id = cluster.tc.client.submit_ops(
            [{"OP_ID": "OP_INSTANCE_MIGRATE", "instance_name": "cr3", "target_node": "node2"}]
        )
        wait_for(Path(f"{vols}.open-started"))
        cluster.tc.client.cancel(job_id)
        job = cluster.tc.wait(job_id)
    assert job["status"] == "canceled", cluster.log_text(job)
    assert "cr3 runs on node1, its disks open exclusively there" in cluster.log_text(job)
    check(cluster, "cr3", on="node1", running=True)

    Path(f"{vols}.open-started").unlink()
    with cluster.replaced("node2", "open", SLEEP_ONCE.format(step="open")):
        job_id = cluster.tc.client.submit_ops(
            [{"OP_ID": "OP_INSTANCE_FAILOVER", "instance_name": "cr3", "target_node": "node2"}]
        )
        wait_for(Path(f"{vols}.open-started"))
        cluster.tc.client.cancel(job_id)
        job = cluster.tc.wait(job_id)
    assert job["status"] == "canceled", cluster.log_text(job)
    log = cluster.log_text(job)
    assert "undone: detached disk0" in log
    assert "cr3 runs on node1 again, as before" in log
    check(cluster, "cr3", on="node1", running=True)
    cluster.ok("instance", "remove", "cr3")
