"""Node faults mid-job: a killed sshd and a frozen node give a clear error in bounded time,
the daemon keeps serving other jobs and the API meanwhile, and reconnects afterwards."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.harness.cluster import TestCluster, start_cluster
from tests.harness.watch import wait_processes

pytestmark = pytest.mark.spawns


def delay_on(node: str, seconds: float) -> dict[str, Any]:
    return {"OP_ID": "OP_TEST_DELAY", "duration": seconds, "on_master": False, "on_nodes": [node]}


def start_remote_delay(c: TestCluster, node: str, seconds: float) -> int:
    """Submit a job sleeping ``seconds`` on ``node``; its id, once the sleep runs there
    (every test node runs on this machine). ``seconds`` marks the process: make it
    unique."""
    job_id = c.client.submit({"ops": [delay_on(node, seconds)]})[0]
    wait_processes(f"sleep {seconds:g}")
    return job_id


def add_instance(c: TestCluster, name: str) -> None:
    """An instance on node1, so that verify has guests and disks to compare afterwards."""
    vols = c.base / "vols" / name
    vols.mkdir(parents=True)
    disk = {"size": 4, "provider": "sharedfile", "params": {"dir": str(vols)}}
    op = {"OP_ID": "OP_INSTANCE_CREATE", "instance_name": name, "pnode": "node1", "disks": [disk]}
    assert c.run_job([op])["status"] == "success"


def verify_clean_and_remove(c: TestCluster, name: str) -> None:
    out = c.cli("verify")
    assert out.returncode == 0, out.stdout + out.stderr
    op = {"OP_ID": "OP_INSTANCE_REMOVE", "instance_name": name}
    assert c.run_job([op])["status"] == "success"


def check_others_still_served(c: TestCluster) -> None:
    other = c.run_job([delay_on("node2", 0)])
    assert other["status"] == "success"
    assert c.client.info()["cluster"] == "test"


def test_killed_node_mid_job(node_kind: str, tmp_path: Path) -> None:
    with start_cluster(node_kind, 2, tmp_path) as c:
        c.init()
        add_instance(c, "k1")
        job_id = start_remote_delay(c, "node1", 60.0625)
        c.node("node1").kill()
        check_others_still_served(c)
        job = c.wait(job_id, timeout=60)
        assert job["status"] == "error"
        message = job["ops"][0]["error"]["message"]
        assert "node1" in message
        assert "unreachable" in message or "lost" in message
        c.node("node1").start()
        assert c.run_job([delay_on("node1", 0)])["status"] == "success"
        verify_clean_and_remove(c, "k1")


def test_frozen_node_mid_job(node_kind: str, tmp_path: Path) -> None:
    extra = "kill_timeout = 2.0\n"
    with start_cluster(node_kind, 2, tmp_path, config_extra=extra) as c:
        c.init()
        add_instance(c, "f1")
        job_id = start_remote_delay(c, "node1", 60.125)
        c.node("node1").freeze()
        try:
            check_others_still_served(c)
            # keepalive_interval 2 s x 2 (the harness's settings): detected well before 60 s.
            job = c.wait(job_id, timeout=45)
            assert job["status"] == "error"
            message = job["ops"][0]["error"]["message"]
            assert "node1" in message
            # A new job on the frozen node fails within the connect timeout, not forever.
            stuck = c.run_job([delay_on("node1", 0)])
            assert stuck["status"] == "error"
            assert "node1" in stuck["ops"][0]["error"]["message"]
        finally:
            c.node("node1").thaw()
        assert c.run_job([delay_on("node1", 0)])["status"] == "success"
        verify_clean_and_remove(c, "f1")
