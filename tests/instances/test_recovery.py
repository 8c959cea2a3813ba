"""Cancel and crash recovery of the instance LUs.

- A cancelled add undoes what it made (compensation).
- A daemon SIGKILLed in the middle of an add removes, after the restart, what the
  journal says was created; the job ends in error and the configuration is untouched.
- Grow and remove interrupted by a crash are run again (attach, grow to the same
  target and remove are idempotent) and finish.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.instances.conftest import KINDS, Cluster, leftovers, open_cluster

pytestmark = pytest.mark.spawns

# The provider script does its work, leaves a marker next to the volume directory, and
# then takes its time: the test acts while it sleeps.
THEN_SLEEP = '"${{0%/*}}/{step}.real" || exit 1\ntouch "$EXTP_DIR.{step}-done"\nsleep {secs}\n'
SLEEP_THEN = 'touch "$EXTP_DIR.{step}-started"\nsleep {secs}\nexec "${{0%/*}}/{step}.real"\n'


@pytest.fixture(scope="module", params=KINDS)
def cluster(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    base = tmp_path_factory.mktemp(f"recover-{request.param}")
    with open_cluster(request.param, base) as c:
        yield c


def wait_for(path: Path, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} did not appear"
        time.sleep(0.02)


def wait_empty(directory: Path, timeout: float = 15.0) -> list[str]:
    deadline = time.monotonic() + timeout
    while leftovers(directory) and time.monotonic() < deadline:
        time.sleep(0.05)
    return leftovers(directory)


def add_op(name: str, provider: str, vols: Path) -> dict[str, object]:
    return {
        "OP_ID": "OP_INSTANCE_CREATE",
        "instance_name": name,
        "pnode": "node1",
        "disks": [
            {"size": 4, "provider": "sharedfile", "params": {"dir": str(vols)}},
            {"size": 4, "provider": provider, "params": {"dir": str(vols)}},
        ],
    }


def test_cancelled_add_is_undone(cluster: Cluster) -> None:
    vols = cluster.vol_dir("cancel")
    cluster.install_copy(
        "slowc", "sharedfile", {"create": THEN_SLEEP.format(step="create", secs=60)}
    )
    job_id = cluster.tc.client.submit_ops([add_op("can1", "slowc", vols)])
    wait_for(Path(f"{vols}.create-done"))
    cluster.tc.client.cancel(job_id)
    job = cluster.tc.wait(job_id)
    assert job["status"] == "canceled"
    log = cluster.log_text(job)
    assert "undone: removed disk1" in log
    assert "undone: removed disk0" in log
    assert "can1" not in cluster.instance_names()
    assert leftovers(vols) == []


def test_add_interrupted_by_a_crash_is_rolled_back(cluster: Cluster) -> None:
    vols = cluster.vol_dir("crash-add")
    cluster.install_copy(
        "slowk", "sharedfile", {"create": THEN_SLEEP.format(step="create", secs=5)}
    )
    job_id = cluster.tc.client.submit_ops([add_op("crash1", "slowk", vols)])
    wait_for(Path(f"{vols}.create-done"))
    assert len(list(vols.glob("*.img"))) == 2
    cluster.tc.restart_daemon(kill=True)
    job = cluster.tc.wait(job_id)
    assert job["status"] == "error"
    assert "interrupted by a daemon restart" in job["ops"][0]["error"]["message"]
    log = cluster.log_text(job)
    assert "undone: removed disk1" in log
    assert "undone: removed disk0" in log
    assert "crash1" not in cluster.instance_names()
    assert wait_empty(vols) == []


def test_grow_and_remove_interrupted_by_a_crash_finish(cluster: Cluster) -> None:
    vols = cluster.vol_dir("crash-ops")
    cluster.install_copy(
        "slowg",
        "sharedfile",
        {
            "grow": SLEEP_THEN.format(step="grow", secs=2),
            "remove": SLEEP_THEN.format(step="remove", secs=2),
        },
    )
    job = cluster.tc.run_job([add_op("crash2", "slowg", vols)])
    assert job["status"] == "success", job

    grow = {"OP_ID": "OP_INSTANCE_GROW_DISK", "instance_name": "crash2", "disk": 1, "amount": 4}
    job_id = cluster.tc.client.submit_ops([grow])
    wait_for(Path(f"{vols}.grow-started"))
    cluster.tc.restart_daemon(kill=True)
    job = cluster.tc.wait(job_id)
    assert job["status"] == "success", cluster.log_text(job)
    assert "grow interrupted; running it again" in cluster.log_text(job)
    assert cluster.instance("crash2")["disks"][1]["size"] == 8
    volume = cluster.instance("crash2")["disks"][1]["volume"]
    assert (vols / f"{volume}.img").stat().st_size == 8 * 1024 * 1024

    job_id = cluster.tc.client.submit_ops(
        [{"OP_ID": "OP_INSTANCE_REMOVE", "instance_name": "crash2"}]
    )
    wait_for(Path(f"{vols}.remove-started"))
    cluster.tc.restart_daemon(kill=True)
    job = cluster.tc.wait(job_id)
    assert job["status"] == "success", cluster.log_text(job)
    assert "removal interrupted; running it again" in cluster.log_text(job)
    assert "crash2" not in cluster.instance_names()
    assert wait_empty(vols) == []
