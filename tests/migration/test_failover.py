"""Failover with the fake hypervisor and the strict provider: a reachable source, a
stopped one, an unreachable one (refused, then with --ignore-consistency and fencing),
an offline one, failures on the target, and the choice of the target node."""

from __future__ import annotations

from collections.abc import Iterator

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
    base = tmp_path_factory.mktemp(f"failover-{request.param}")
    with open_move_cluster(request.param, base) as c:
        yield c


def test_failover_of_running_and_stopped_instances(cluster: MoveCluster) -> None:
    vols = cluster.vol_dir("plain")
    cluster.add("fo1", "node1", vols)
    out = cluster.ok("instance", "failover", "fo1", "-n", "node2")
    assert "instance fo1 failed over from node1 to node2, running" in out
    check(cluster, "fo1", on="node2", running=True)
    log = cluster.log_text(cluster.last("OP_INSTANCE_FAILOVER"))
    assert "node2: disks closed and detached" not in log
    assert "node1: disks closed and detached" in log
    assert "fencing" not in log

    cluster.ok("instance", "shutdown", "fo1")
    out = cluster.ok("instance", "failover", "fo1", "-n", "node1")
    assert "failed over from node2 to node1, down" in out
    check(cluster, "fo1", on="node1", running=False)
    cluster.ok("instance", "startup", "fo1")
    check(cluster, "fo1", on="node1", running=True)
    cluster.ok("instance", "remove", "fo1")


def test_target_failure_puts_the_instance_back(cluster: MoveCluster) -> None:
    vols = cluster.vol_dir("target-fails")
    cluster.add("fo2", "node1", vols)
    with cluster.replaced("node2", "open", FAIL):
        cluster.fails("instance", "failover", "fo2", "-n", "node2", message="injected failure")
    message = cluster.error(cluster.last("OP_INSTANCE_FAILOVER"))
    assert "failover of fo2 to node2 failed" in message
    assert "its disks are released on node2" in message
    assert "fo2 runs on node1 again, as before" in message
    check(cluster, "fo2", on="node1", running=True)

    # Releasing the disks on the source fails: the instance is put back there.
    with cluster.replaced("node1", "detach", FAIL):
        cluster.fails("instance", "failover", "fo2", "-n", "node2", message="injected failure")
    message = cluster.error(cluster.last("OP_INSTANCE_FAILOVER"))
    assert "failover of fo2 stopped" in message
    assert "fo2 runs on node1 again, as before" in message
    check(cluster, "fo2", on="node1", running=True)
    cluster.ok("instance", "remove", "fo2")


def test_unreachable_source_refused_then_fenced(cluster: MoveCluster) -> None:
    vols = cluster.vol_dir("fence")
    cluster.add("fo3", "node1", vols)
    cluster.ok("node", "modify", "node1", "--fence-command", cluster.fence_command())
    try:
        with cluster.ssh_stopped("node1"):
            cluster.fails("instance", "failover", "fo3", "-n", "node2", message="--offline yes")
            assert "nothing was changed" in cluster.error(cluster.last("OP_INSTANCE_FAILOVER"))
            check(cluster, "fo3", on="node1", running=True, verify=False)

            # A fence command that fails stops the failover before the target is touched.
            cluster.ok("node", "modify", "node1", "--fence-command", "/bin/false")
            cluster.fails(
                "instance",
                "failover",
                "fo3",
                "-n",
                "node2",
                "--ignore-consistency",
                message="failover of fo3 stopped before node2 was touched: fencing node node1 "
                "failed",
            )
            check(cluster, "fo3", on="node1", running=True, verify=False)

            cluster.ok("node", "modify", "node1", "--fence-command", cluster.fence_command())
            out = cluster.ok("instance", "failover", "fo3", "-n", "node2", "--ignore-consistency")
            assert "failed over from node1 to node2, running" in out
            log = cluster.log_text(cluster.last("OP_INSTANCE_FAILOVER"))
            assert "fencing node node1" in log
            assert "node node1 fenced" in log
            assert log.index("node node1 fenced") < log.index("node2: attach disk0")
            assert cluster.fenced() == ["node1"]
            check(cluster, "fo3", on="node2", running=True, verify=False)
        # Back: the journal cannot know what the fenced node still holds; a cleanup
        # detaches there (a no-op after a real power-off) and the cluster verifies.
        out = cluster.ok("instance", "migrate", "fo3", "--cleanup")
        assert "instance fo3 runs on node2" in out
        check(cluster, "fo3", on="node2", running=True)
    finally:
        cluster.ok("node", "modify", "node1", "--fence-command", "")
    cluster.ok("instance", "remove", "fo3")


def test_offline_source_is_fenced_without_asking(cluster: MoveCluster) -> None:
    vols = cluster.vol_dir("offline")
    cluster.add("fo4", "node3", vols)
    cluster.ok("node", "modify", "node3", "--fence-command", cluster.fence_command())
    with cluster.ssh_stopped("node3"):
        out = cluster.ok("node", "modify", "node3", "--offline", "yes")
        assert "node node3: offline" in out
        out = cluster.ok("instance", "failover", "fo4", "-n", "node2")
        assert "failed over from node3 to node2, running" in out
        log = cluster.log_text(cluster.last("OP_INSTANCE_FAILOVER"))
        assert "source node node3 is offline: nothing is run there" in log
        assert "node node3 fenced" in log
        assert cluster.fenced()[-1] == "node3"
        check(cluster, "fo4", on="node2", running=True, verify=False)
        cluster.fails("node", "modify", "node3", "--offline", "no", message="stays offline")
    cluster.ok("node", "modify", "node3", "--offline", "no", "--fence-command", "")
    cluster.ok("instance", "migrate", "fo4", "--cleanup")
    check(cluster, "fo4", on="node2", running=True)
    cluster.ok("instance", "remove", "fo4")


def test_unfenced_source_keeps_its_lock(cluster: MoveCluster) -> None:
    """No fence command: the job warns, and a provider whose volume the unreachable node
    still holds exclusively refuses the target — nothing moves, nothing is attached twice."""
    vols = cluster.vol_dir("unfenced")
    cluster.add("fo5", "node1", vols)
    with cluster.ssh_stopped("node1"):
        cluster.fails(
            "instance",
            "failover",
            "fo5",
            "-n",
            "node2",
            "--ignore-consistency",
            message="open exclusively on node node1; refusing to attach on node2",
        )
        job = cluster.last("OP_INSTANCE_FAILOVER")
        assert "node node1 has no fence command" in cluster.log_text(job)
        assert "fo5 is down (its primary stays node1)" in cluster.error(job)
        snap = snapshot(cluster, "fo5")
        # The unreachable node still runs its guest and holds its disks; nothing else does.
        assert (snap.primary, snap.running_on) == ("node1", ["node1"])
        assert all(a == {"node1"} for a in snap.attached.values())
    check(cluster, "fo5", on="node1", running=True)
    cluster.ok("instance", "remove", "fo5")


def test_target_choice(cluster: MoveCluster) -> None:
    vols = cluster.vol_dir("choice")
    cluster.add("fo6", "node1", vols)
    cluster.add("fo7", "node2", vols)
    cluster.add("fo8", "node2", vols)
    # node3 is drained: node2 (two instances) is the only candidate for fo6.
    cluster.ok("node", "modify", "node3", "--drained", "yes")
    try:
        cluster.ok("instance", "failover", "fo6")
        log = cluster.log_text(cluster.last("OP_INSTANCE_FAILOVER"))
        assert "target node node2 chosen" in log
        assert "node3: it is drained" in log
        check(cluster, "fo6", on="node2", running=True)
        cluster.fails("instance", "migrate", "fo6", "-n", "node3", message="it is drained")
    finally:
        cluster.ok("node", "modify", "node3", "--drained", "no")
    # An invalid provider passes a node over, and the job says why.
    verify = cluster.provider_dir("node3") / "verify"
    verify.rename(verify.with_name("verify.off"))
    try:
        cluster.ok("instance", "migrate", "fo7")
        log = cluster.log_text(cluster.last())
        assert "target node node1 chosen" in log
        assert "node3: ExtStorage provider(s) not usable on node node3" in log
    finally:
        verify.with_name("verify.off").rename(verify)
    # Fewest instances first: node1 runs fo7 now, node2 runs fo6 and fo8, node3 none.
    cluster.ok("instance", "migrate", "fo8")
    assert "target node node3 chosen" in cluster.log_text(cluster.last())
    for name, node in (("fo6", "node2"), ("fo7", "node1"), ("fo8", "node3")):
        check(cluster, name, on=node, running=True, verify=False)
    for name in ("fo6", "fo7", "fo8"):
        cluster.ok("instance", "remove", name)
