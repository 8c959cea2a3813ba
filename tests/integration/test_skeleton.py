"""The walking skeleton end to end: CLI → API → queue → LU → journal → SSH → node."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.harness.cluster import TestCluster, start_cluster

pytestmark = pytest.mark.spawns

TWO_OPS = [
    {"OP_ID": "OP_TEST_DELAY", "duration": 3.0, "on_master": False, "on_nodes": ["node1", "node2"]},
    {"OP_ID": "OP_NODE_QUERY"},
]


def test_submit_returns_at_once_and_info_shows_each_opcode(cluster3: TestCluster) -> None:
    started = time.monotonic()
    out = cluster3.cli("submit", "-", stdin=json.dumps(TWO_OPS))
    assert out.returncode == 0, out.stderr
    job_id = int(out.stdout.strip())
    # Still running: submit did not wait for the 3 s delay on the nodes.
    assert cluster3.client.job(job_id)["status"] in ("queued", "waiting", "running")
    assert time.monotonic() - started < 30  # bound only; the point is the status above

    watch = cluster3.cli("job", "watch", str(job_id))
    assert watch.returncode == 0, watch.stderr
    assert "node1: sleep 3: exit 0" in watch.stdout
    assert "node2: sleep 3: exit 0" in watch.stdout
    assert watch.stdout.strip().endswith(f"job {job_id}: success")

    info = cluster3.cli("job", "info", str(job_id), "--output", "json")
    data = json.loads(info.stdout)
    assert data["status"] == "success"
    assert [op["status"] for op in data["ops"]] == ["success", "success"]
    delay, query = data["ops"]
    assert delay["result"] == {"slept": 3.0}
    assert delay["started"] <= delay["ended"] <= query["started"] <= query["ended"]
    assert delay["duration"] >= 3
    assert sorted(n["name"] for n in query["result"]) == ["node1", "node2", "node3"]
    steps = [e for e in data["log"] if e["type"] == "step"]
    assert {s["data"]["node"] for s in steps} == {"node1", "node2"}
    assert all(s["data"]["exit_status"] == 0 for s in steps)


def test_watch_exits_1_when_the_job_fails(cluster3: TestCluster) -> None:
    bad = [
        {"OP_ID": "OP_TEST_DELAY", "duration": 0, "on_nodes": ["nosuchnode"]},
        {"OP_ID": "OP_NODE_QUERY"},
    ]
    job_id = cluster3.client.submit({"ops": bad})[0]
    watch = cluster3.cli("job", "watch", str(job_id))
    assert watch.returncode == 1
    job = cluster3.client.job(job_id)
    assert job["status"] == "error"
    assert "nosuchnode" in job["ops"][0]["error"]["message"]
    assert job["ops"][1]["status"] == "error"
    assert "opcode 0 failed" in job["ops"][1]["error"]["message"]


def test_diagnose_per_node_and_per_group(cluster3: TestCluster) -> None:
    # node3 gets a broken copy of the provider: attach loses its execute bit.
    (cluster3.search_path(cluster3.node("node3")) / "sharedfile" / "attach").chmod(0o644)
    out = cluster3.cli("storage", "diagnose", "--output", "json")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    nodes = result["nodes"]
    assert nodes["node1"]["providers"]["sharedfile"]["valid"] is True
    assert nodes["node2"]["providers"]["sharedfile"]["valid"] is True
    node3 = nodes["node3"]["providers"]["sharedfile"]
    assert node3["valid"] is False
    assert "attach" in node3["reason"]
    assert node3["path"].endswith("/node3/srv/extjobs/extstorage/sharedfile")
    group = result["groups"]["default"]["sharedfile"]
    assert group["valid"] is False
    assert list(group["reasons"]) == ["node3"]
    assert "dir" in group["parameters"]
    table = cluster3.cli("storage", "diagnose")
    assert "invalid" in table.stdout
    assert "node3" in table.stdout


def test_unreachable_node_is_reported_while_others_answer(cluster3: TestCluster) -> None:
    cluster3.node("node2").stop()
    out = cluster3.cli("storage", "diagnose", "--output", "json")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert "error" in result["nodes"]["node2"]
    assert "node2" in result["nodes"]["node2"]["error"]
    assert result["nodes"]["node1"]["providers"]["sharedfile"]["valid"] is True
    assert result["nodes"]["node3"]["providers"]["sharedfile"]["valid"] is True
    assert result["groups"]["default"]["sharedfile"]["valid"] is False
    # Back again: the daemon reconnects without a restart.
    cluster3.node("node2").start()
    again = json.loads(cluster3.cli("storage", "diagnose", "--output", "json").stdout)
    assert again["nodes"]["node2"]["providers"]["sharedfile"]["valid"] is True


def test_changed_host_key_is_refused(cluster3: TestCluster) -> None:
    node = cluster3.node("node1")
    node.stop()
    node.delete_host_key()
    node.start()
    result = json.loads(cluster3.cli("storage", "diagnose", "--output", "json").stdout)
    error = result["nodes"]["node1"]["error"]
    assert "host key" in error.lower()
    assert "node1" in error
    assert result["nodes"]["node2"]["providers"]["sharedfile"]["valid"] is True


def test_node_add_pins_the_host_key_only_when_confirmed(node_kind: str, tmp_path: Path) -> None:
    with start_cluster(node_kind, 1, tmp_path) as cluster:
        assert (
            cluster.run_job([{"OP_ID": "OP_CLUSTER_INIT", "cluster_name": "c"}])["status"]
            == "success"
        )
        node = cluster.nodes[0]
        base = [
            "node",
            "add",
            node.name,
            "--address",
            node.host,
            "--port",
            str(node.port),
            "--user",
            cluster.user,
        ]
        refused = cluster.cli(*base)
        assert refused.returncode == 1
        assert "--accept-new-host-key" in refused.stderr
        assert "SHA256:" in refused.stderr
        wrong = cluster.cli(
            *base,
            "--host-key",
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBm5NAWe1vdIFGx7/SvWCr5cQ1jJZQBHCYUf+MOXeLmm",
        )
        assert wrong.returncode == 1
        assert "not the given" in wrong.stderr
        assert cluster.client.nodes() == []
        ok = cluster.cli(*base, "--host-key", node.host_key)
        assert ok.returncode == 0, ok.stderr
        [pinned] = cluster.client.nodes()
        assert pinned["host_key"] == " ".join(node.host_key.split()[:2])


def test_sigkill_keeps_finished_jobs_and_runs_queued_ones(node_kind: str, tmp_path: Path) -> None:
    with start_cluster(node_kind, 2, tmp_path, config_extra="[queue]\nmax_running = 1\n") as c:
        c.init()
        done = c.run_job([{"OP_ID": "OP_TEST_DELAY", "duration": 0, "on_nodes": ["node1"]}])
        assert done["status"] == "success"
        blocker = c.client.submit(
            {"ops": [{"OP_ID": "OP_TEST_DELAY", "duration": 1.0, "on_nodes": ["node1"]}]}
        )[0]
        queued = c.client.submit(
            {
                "jobs": [
                    {"ops": [{"OP_ID": "OP_TEST_DELAY", "duration": 0, "on_nodes": ["node2"]}]},
                    {"ops": [{"OP_ID": "OP_NODE_QUERY"}], "depends": [[-1, ["success"]]]},
                ]
            }
        )
        deadline = time.monotonic() + 30
        while c.client.job(blocker)["status"] != "running" and time.monotonic() < deadline:
            time.sleep(0.02)
        c.restart_daemon(kill=True)
        again = c.client.job(done["id"])
        assert again["status"] == "success"
        assert [e["message"] for e in again["log"]] == [e["message"] for e in done["log"]]
        for job_id in [blocker, *queued]:
            assert c.wait(job_id)["status"] == "success", c.client.job(job_id)
        recovered = c.client.job(blocker)
        assert any(e["type"] == "recovery" for e in recovered["log"])
        statuses = {j["status"] for j in c.client.jobs()}
        assert statuses == {"success"}


def test_diagnose_exits_3_when_a_provider_is_valid_on_no_node(cluster3: TestCluster) -> None:
    for node in ("node1", "node2", "node3"):
        (cluster3.search_path(cluster3.node(node)) / "sharedfile" / "attach").chmod(0o644)
    try:
        for args in (("storage", "diagnose"), ("storage", "info", "--output", "json")):
            out = cluster3.cli(*args)
            assert out.returncode == 3, (args, out.stdout, out.stderr)
            assert "provider sharedfile is valid on no node" in out.stderr
        missing = cluster3.cli("storage", "diagnose", "nosuchprovider")
        assert missing.returncode == 3
        assert "provider nosuchprovider was not found on any node" in missing.stderr
    finally:
        for node in ("node1", "node2", "node3"):
            (cluster3.search_path(cluster3.node(node)) / "sharedfile" / "attach").chmod(0o755)
    assert cluster3.cli("storage", "diagnose").returncode == 0
