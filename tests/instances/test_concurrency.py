"""Locks: adds of different instances overlap; operations on one instance serialise.

Overlap is read from the recorded step times in the job logs (each step's log entry
carries its end time and duration), never from wall-clock thresholds.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.instances.conftest import KINDS, Cluster, leftovers, open_cluster

pytestmark = pytest.mark.spawns

SLOW = 'sleep 0.5; exec "${{0%/*}}/{step}.real"\n'


@pytest.fixture(scope="module", params=KINDS)
def cluster(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    base = tmp_path_factory.mktemp(f"conc-{request.param}")
    with open_cluster(request.param, base) as c:
        c.install_copy(
            "slow",
            "sharedfile",
            {
                "create": SLOW.format(step="create"),
                "grow": SLOW.format(step="grow"),
            },
        )
        yield c


def step_intervals(job: dict[str, Any], action: str) -> list[tuple[float, float]]:
    """(start, end) of every step of ``action`` in a job's log."""
    out = []
    for entry in job["log"]:
        data = entry.get("data") or {}
        if entry["type"] == "step" and data.get("action") == action:
            out.append((entry["timestamp"] - data["duration"], entry["timestamp"]))
    return out


def overlap(a: tuple[float, float], b: tuple[float, float]) -> bool:
    return a[0] < b[1] and b[0] < a[1]


def add_op(name: str, vols: str) -> dict[str, Any]:
    return {
        "OP_ID": "OP_INSTANCE_CREATE",
        "instance_name": name,
        "pnode": "node1",
        "start": False,
        "disks": [{"size": 4, "provider": "slow", "params": {"dir": vols}}],
    }


def test_adds_of_different_instances_overlap(cluster: Cluster) -> None:
    vols = cluster.vol_dir("overlap")
    client = cluster.tc.client
    ids = client.submit(
        {"jobs": [{"ops": [add_op("ov1", str(vols))]}, {"ops": [add_op("ov2", str(vols))]}]}
    )
    jobs = [cluster.tc.wait(job_id) for job_id in ids]
    assert [j["status"] for j in jobs] == ["success", "success"]
    (first,) = step_intervals(jobs[0], "create")
    (second,) = step_intervals(jobs[1], "create")
    assert overlap(first, second), (first, second)
    for name in ("ov1", "ov2"):
        cluster.ok("instance", "remove", name)
    assert leftovers(vols) == []


def test_operations_on_one_instance_serialise(cluster: Cluster) -> None:
    vols = cluster.vol_dir("serial")
    job = cluster.tc.run_job([add_op("se1", str(vols))])
    assert job["status"] == "success", job
    grow = {"OP_ID": "OP_INSTANCE_GROW_DISK", "instance_name": "se1", "disk": 0, "amount": 4}
    ids = cluster.tc.client.submit({"jobs": [{"ops": [grow]}, {"ops": [grow]}]})
    jobs = [cluster.tc.wait(job_id) for job_id in ids]
    assert [j["status"] for j in jobs] == ["success", "success"]
    (first,) = step_intervals(jobs[0], "grow")
    (second,) = step_intervals(jobs[1], "grow")
    assert not overlap(first, second), (first, second)
    assert "waiting for lock instance/se1" in cluster.log_text(jobs[1])
    assert cluster.instance("se1")["disks"][0]["size"] == 12
    cluster.ok("instance", "remove", "se1")
    assert leftovers(vols) == []
