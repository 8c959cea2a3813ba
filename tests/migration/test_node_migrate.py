"""Node maintenance through the CLI, on embedded and on OpenSSH nodes: drain a node,
move everything off it with ``node migrate`` (one job per instance), re-pin the host
key of a reinstalled node. Every instance is checked from outside afterwards."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from tests.instances.conftest import KINDS
from tests.migration.conftest import MoveCluster, open_move_cluster
from tests.migration.invariants import check

pytestmark = pytest.mark.spawns

#: The strict attach, failing for the volumes of a directory whose name ends in -bad.
FAIL_BAD = (
    'case "${EXTP_DIR:-}" in *-bad) echo "injected attach failure" >&2; exit 1 ;; esac\n'
    'exec "${0%/*}/attach.real"\n'
)


@pytest.fixture(scope="module", params=KINDS)
def cluster(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[MoveCluster]:
    base = tmp_path_factory.mktemp(f"nodemig-{request.param}")
    with open_move_cluster(request.param, base) as c:
        yield c


def job_ids(cluster: MoveCluster) -> list[int]:
    return [j["id"] for j in cluster.tc.client.jobs()]


def test_drain_then_node_migrate_moves_each_instance_and_one_failure_stays_alone(
    cluster: MoveCluster,
) -> None:
    good, bad = cluster.vol_dir("good"), cluster.vol_dir("bad")
    cluster.add("nm1", "node1", good)
    cluster.add("nm2", "node1", bad)
    cluster.add("nm3", "node1", good, "--no-start")
    cluster.ok("node", "modify", "node1", "--drained", "yes")
    try:
        with (
            cluster.replaced("node2", "attach", FAIL_BAD),
            cluster.replaced("node3", "attach", FAIL_BAD),
        ):
            result = cluster.cli("node", "migrate", "node1")
        assert result.returncode == 1, result.stdout + result.stderr
        out = result.stdout
        landed = re.search(r"nm1: migrate to (node[23]) \(job (\d+)\)", out)
        assert landed, out
        stopped = re.search(r"nm3: failover \(stopped\) to (node[23]) \(job \d+\)", out)
        assert stopped, out
        failed = re.search(r"nm2: NOT moved, job (\d+) error: .*injected attach failure", out)
        assert failed, out
        assert "1 of 3 instance(s) not moved: nm2" in result.stderr
        check(cluster, "nm1", on=landed.group(1), running=True, verify=False)
        check(cluster, "nm2", on="node1", running=True, verify=False)
        check(cluster, "nm3", on=stopped.group(1), running=False)
        # The job log of the failed instance says what failed and where it runs.
        log = cluster.log_text(cluster.tc.client.job(int(failed.group(1))))
        assert "injected attach failure" in log
        assert "nm2 runs on node1" in log
        # The node migrate job itself lists the batch it submitted.
        parent = cluster.last("OP_NODE_MIGRATE")
        entries = parent["ops"][0]["result"]["jobs"]
        assert sorted(e["instance"] for e in entries) == ["nm1", "nm2", "nm3"]
        ids = sorted(e["job_id"] for e in entries)
        assert ids == list(range(ids[0], ids[0] + 3))
        # Once the fault is gone, migrating the node again moves what is left.
        out = cluster.ok("node", "migrate", "node1")
        assert re.search(r"nm2: migrate to node[23]", out), out
        check(cluster, "nm2", running=True)
        assert cluster.instance("nm2")["primary"] != "node1"
    finally:
        cluster.ok("node", "modify", "node1", "--drained", "no")
        for name in ("nm1", "nm2", "nm3"):
            cluster.ok("instance", "remove", name)


def test_node_migrate_without_a_valid_target_changes_nothing(cluster: MoveCluster) -> None:
    vols = cluster.vol_dir("stuck")
    cluster.add("nm4", "node1", vols)
    for node in ("node2", "node3"):
        cluster.ok("node", "modify", node, "--drained", "yes")
    try:
        before = job_ids(cluster)
        cluster.fails(
            "node",
            "migrate",
            "node1",
            message="cannot migrate node node1: 1 of 1 instance(s) have no valid target "
            "(nm4: no node of group default can receive nm4 (node2: it is drained; "
            "node3: it is drained)); nothing was moved",
        )
        assert len(job_ids(cluster)) == len(before) + 1, "only the refused job"
        cluster.fails(
            "node",
            "migrate",
            "node1",
            "--target",
            "node2",
            message="nm4: node node2 cannot receive the instance: it is drained",
        )
        cluster.fails("node", "migrate", "nodeX", message="unknown node 'nodeX'")
        cluster.fails("node", "evacuate", "node1", message="no valid target")
        check(cluster, "nm4", on="node1", running=True)
    finally:
        for node in ("node2", "node3"):
            cluster.ok("node", "modify", node, "--drained", "no")
        cluster.ok("instance", "remove", "nm4")


def test_a_reinstalled_node_is_refused_until_its_key_is_re_pinned(cluster: MoveCluster) -> None:
    node = cluster.tc.node("node3")
    old = cluster.ok("node", "list", "--output", "json")
    node.delete_host_key()
    node.restart()
    delay = {"OP_ID": "OP_TEST_DELAY", "duration": 0, "on_master": False, "on_nodes": ["node3"]}
    job = cluster.tc.run_job([delay])
    assert job["status"] == "error"
    assert "host key of node node3" in cluster.error(job)
    # A wrong key is refused and nothing changes.
    cluster.fails(
        "node",
        "modify",
        "node3",
        "--host-key",
        cluster.tc.node("node1").host_key,
        message="host key of node node3 is SHA256:",
    )
    assert cluster.ok("node", "list", "--output", "json") == old
    assert cluster.tc.run_job([delay])["status"] == "error", "still refused"
    out = cluster.ok("node", "modify", "node3", "--accept-new-host-key")
    match = re.search(r"host key re-pinned, (SHA256:\S+) → (SHA256:\S+)", out)
    assert match, out
    assert match.group(1) != match.group(2), out
    parent = cluster.last("OP_NODE_SET_PARAMS")
    log = cluster.log_text(parent)
    assert f"host key re-pinned: {match.group(1)} → {match.group(2)}" in log
    assert cluster.tc.run_job([delay])["status"] == "success"
    # The re-pinned node takes instances again.
    vols = cluster.vol_dir("repinned")
    cluster.add("nm5", "node1", vols)
    cluster.ok("instance", "migrate", "nm5", "-n", "node3")
    check(cluster, "nm5", on="node3", running=True)
    cluster.ok("instance", "remove", "nm5")
