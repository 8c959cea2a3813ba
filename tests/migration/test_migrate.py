"""Live migration with the fake hypervisor and the strict provider, through the CLI.

The strict provider refuses an attach while another node holds the volume open
exclusively, so a migration that touched the target before the source re-opened its
disks shared would fail here. Every case ends with the invariants checked.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.instances.conftest import KINDS
from tests.migration.conftest import MoveCluster, open_move_cluster
from tests.migration.invariants import check, snapshot

pytestmark = pytest.mark.spawns

FAIL = 'echo "injected failure" >&2\nexit 1\n'


@pytest.fixture(scope="module", params=KINDS)
def cluster(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[MoveCluster]:
    base = tmp_path_factory.mktemp(f"migrate-{request.param}")
    with open_move_cluster(request.param, base) as c:
        yield c


def provider_steps(job: dict[str, Any]) -> list[tuple[str, str, str]]:
    """``(node, action, open mode)`` of every provider step in the job log; the mode is
    ``True``/``False`` for ``open`` (exclusive or not), empty for other actions."""
    steps = []
    for entry in job["log"]:
        data = entry.get("data") or {}
        if entry["type"] == "step" and "action" in data and "provider" in data:
            mode = str(data["volume"]["open_exclusive"]) if data["action"] == "open" else ""
            steps.append((data["node"], data["action"], mode))
    return steps


def test_live_migration_there_and_back(cluster: MoveCluster) -> None:
    vols = cluster.vol_dir("live")
    cluster.add("mig1", "node1", vols)
    check(cluster, "mig1", on="node1", running=True)

    out = cluster.ok("instance", "migrate", "mig1", "-n", "node2")
    assert "instance mig1 migrated from node1 to node2" in out
    check(cluster, "mig1", on="node2", running=True)
    job = cluster.last()
    log = cluster.log_text(job)
    assert "target node node2 (given)" in log
    assert "mig1 migrated from node1 to node2" in log
    # The order of DESIGN §4: shared on the source before the target is touched.
    steps = [s for s in provider_steps(job) if s[1] != "verify"]
    first_on_target = next(i for i, s in enumerate(steps) if s[0] == "node2")
    assert steps[:first_on_target] == [("node1", "open", "False")] * 2
    assert [s[1:] for s in steps if s[0] == "node2"][:4] == [
        ("attach", ""),
        ("open", "False"),
        ("attach", ""),
        ("open", "False"),
    ]
    assert [s[1:] for s in steps[-6:]] == [
        ("close", ""),
        ("detach", ""),
        ("close", ""),
        ("detach", ""),
        ("open", "True"),
        ("open", "True"),
    ]

    # No target given: node1 and node3 run nothing, node1 comes first by name.
    cluster.ok("instance", "migrate", "mig1", "--non-live")
    check(cluster, "mig1", on="node1", running=True)
    log = cluster.log_text(cluster.last())
    assert "target node node1 chosen" in log
    assert "primary of 0 instance(s), the fewest" in log

    cluster.ok("instance", "remove", "mig1")
    assert sorted(p.name for p in vols.iterdir()) == []


def test_migration_failures_settle_on_the_source(cluster: MoveCluster) -> None:
    vols = cluster.vol_dir("fail")
    cluster.add("mig2", "node1", vols)

    # The target's attach fails: the target is released, the source locks again.
    with cluster.replaced("node2", "attach", FAIL):
        cluster.fails("instance", "migrate", "mig2", "-n", "node2", message="injected failure")
    message = cluster.error(cluster.last())
    assert "migration of mig2 from node1 to node2 failed" in message
    assert "mig2 runs on node1, its disks open exclusively there" in message
    assert "disks closed and detached on node2" in message
    check(cluster, "mig2", on="node1", running=True)

    # The guest cannot start on the target.
    with cluster.run_dir_blocked("node3"):
        cluster.fails("instance", "migrate", "mig2", "-n", "node3", message="failed")
    assert "mig2 runs on node1" in cluster.error(cluster.last())
    check(cluster, "mig2", on="node1", running=True)

    # The source cannot be reached: refused before anything changes.
    with cluster.ssh_stopped("node1"):
        cluster.fails("instance", "migrate", "mig2", "-n", "node2", message="nothing was changed")
        check(cluster, "mig2", on="node1", running=True, verify=False)
    check(cluster, "mig2", on="node1", running=True)

    cluster.ok("instance", "remove", "mig2")


def test_failed_source_detach_is_finished_by_cleanup(cluster: MoveCluster) -> None:
    vols = cluster.vol_dir("detach")
    cluster.add("mig3", "node1", vols)
    with cluster.replaced("node1", "detach", FAIL):
        cluster.fails("instance", "migrate", "mig3", "-n", "node2", message="--cleanup")
        message = cluster.error(cluster.last())
        assert "mig3 was migrated to node2 and runs there, but releasing the disks" in message
        # The guest moved and the configuration says so; node1 still has the disks
        # attached (the failure), but nobody else may open them: node2 holds them.
        snap = snapshot(cluster, "mig3")
        assert (snap.primary, snap.running_on) == ("node2", ["node2"])
        for volume, attached in snap.attached.items():
            assert attached == {"node1", "node2"}
            assert snap.opened[volume] == {"node2": "exclusive"}
    out = cluster.ok("instance", "migrate", "mig3", "--cleanup")
    assert "instance mig3 runs on node2" in out
    assert "disks closed and detached on node1, node3" in cluster.log_text(cluster.last())
    check(cluster, "mig3", on="node2", running=True)
    cluster.ok("instance", "remove", "mig3")


def test_cleanup_detaches_a_stray_attachment(cluster: MoveCluster) -> None:
    vols = cluster.vol_dir("stray")
    cluster.add("mig4", "node1", vols)
    volume = cluster.instance("mig4")["disks"][0]["volume"]
    # What a demoted node left behind: attached and open shared on node3.
    cluster.run_strict("node1", "open", volume, vols, VOL_OPEN_EXCLUSIVE="False")
    cluster.run_strict("node3", "attach", volume, vols)
    cluster.run_strict("node3", "open", volume, vols, VOL_OPEN_EXCLUSIVE="False")
    out = cluster.ok("instance", "migrate", "mig4", "--cleanup")
    assert "instance mig4 runs on node1" in out
    check(cluster, "mig4", on="node1", running=True)
    cluster.ok("instance", "remove", "mig4")


def test_migration_refusals(cluster: MoveCluster) -> None:
    vols = cluster.vol_dir("refuse")
    cluster.add("mig5", "node1", vols)
    cluster.ok("instance", "shutdown", "mig5")
    cluster.fails("instance", "migrate", "mig5", message="does not run on node1")
    cluster.fails(
        "instance", "migrate", "mig5", "-n", "node1", message="it is the instance's primary"
    )
    cluster.fails("instance", "migrate", "mig5", "-n", "nope", message="unknown node 'nope'")
    check(cluster, "mig5", on="node1", running=False)
    # --allow-failover moves a stopped instance by failing it over.
    out = cluster.ok("instance", "migrate", "mig5", "-n", "node2", "--allow-failover")
    assert "instance mig5 failed over from node1 to node2" in out
    check(cluster, "mig5", on="node2", running=False)
    cluster.ok("instance", "remove", "mig5")


def test_migration_defaults_from_the_group_and_the_cluster(cluster: MoveCluster) -> None:
    vols = cluster.vol_dir("defaults")
    cluster.add("mig-def1", "node1", vols)
    out = cluster.ok("cluster", "modify", "--max-downtime", "40", "--bandwidth", "300")
    assert "cluster: migration max downtime 40 ms" in out
    assert "cluster: migration bandwidth 300 MiB/s" in out
    out = cluster.ok("group", "modify", "default", "--bandwidth", "55")
    assert "group default: migration bandwidth 55 MiB/s" in out
    info = cluster.ok("cluster", "info")
    assert "migration defaults of the cluster: max downtime 40 ms, bandwidth 300 MiB/s" in info
    assert "migration defaults of the node group default: bandwidth 55 MiB/s" in info
    try:
        out = cluster.ok(
            "instance", "migrate", "mig-def1", "-n", "node2", "--converge-timeout", "90"
        )
        assert "(max downtime 40 ms, bandwidth 55 MiB/s)" in out
        log = cluster.log_text(cluster.last())
        assert (
            "migration settings: max downtime 40 ms (from the cluster), bandwidth 55 MiB/s "
            "(from node group default), converge timeout 90 s (from the opcode)"
        ) in log
        check(cluster, "mig-def1", on="node2", running=True)
        out = cluster.ok("group", "modify", "default", "--bandwidth", "0")
        assert "group default: migration bandwidth not set (the cluster's)" in out
        out = cluster.ok("instance", "migrate", "mig-def1", "-n", "node1")
        assert "(max downtime 40 ms, bandwidth 300 MiB/s)" in out
        cluster.fails(
            "group", "modify", "default", "--max-downtime", "-3", message="-3 is not in the range"
        )
    finally:
        cluster.ok("group", "modify", "default", "--bandwidth", "0")
        cluster.ok("cluster", "modify", "--max-downtime", "0", "--bandwidth", "0")
    out = cluster.ok("instance", "migrate", "mig-def1", "-n", "node2")
    assert "(max downtime 300 ms, bandwidth 1024 MiB/s)" in out
    check(cluster, "mig-def1", on="node2", running=True)
    cluster.ok("instance", "remove", "mig-def1")
