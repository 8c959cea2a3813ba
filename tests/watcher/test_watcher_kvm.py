"""The watcher with real qemu guests (no OS): a killed qemu is restarted by one job, and a
dead node's kvm guest fails over once its fence "powered the node off"."""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest

from tests.instances.conftest import loop_devices_usable
from tests.migration.conftest import MoveCluster
from tests.migration.invariants import check, guest_pid, qmp
from tests.watcher.conftest import (
    Fences,
    jobs_for,
    kill_guest,
    observed,
    open_watched_cluster,
    rounds,
    wait_for,
    watcher_jobs,
)

pytestmark = [
    pytest.mark.kvm,
    pytest.mark.skipif(
        shutil.which("qemu-system-x86_64") is None,
        reason="qemu-system-x86 is not installed (make system-deps installs it)",
    ),
]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MoveCluster]:
    base = tmp_path_factory.mktemp("watcher-kvm")
    with open_watched_cluster("embedded", base, nodes=2) as c:
        if loop_devices_usable():
            for node in c.tc.nodes:
                c.tc.install_provider(node, "loopfile")
        yield c


def qemu_state(cluster: MoveCluster, name: str, node: str) -> str:
    uuid = cluster.instance(name)["uuid"]
    return str(qmp(cluster.run_dir / node / f"{uuid}.qmp", "query-status")[0]["status"])


def test_kvm_guest_restarted_then_failed_over_from_its_dead_node(cluster: MoveCluster) -> None:
    vols = cluster.vol_dir("kvm")
    disks = ["--disk", f"0:size=16M,provider=strict,dir={vols}"]
    if loop_devices_usable():
        disks += ["--disk", f"1:size=8M,provider=loopfile,dir={vols}"]
    cluster.ok("instance", "add", "vmw", "-n", "node1", "-H", "kvm", "--memory", "64M", *disks)
    assert wait_for("vmw observed running", lambda: observed(cluster, "vmw")["state"] == "running")
    uuid = cluster.instance("vmw")["uuid"]

    # qemu killed: one restart job, a new qemu that runs.
    old = kill_guest(cluster, "vmw", "node1")
    job = wait_for(
        "the watcher's restart",
        lambda: next(
            (
                j
                for j in jobs_for(cluster, "OP_INSTANCE_STARTUP", "vmw")
                if j["status"] == "success"
            ),
            None,
        ),
    )
    assert "watcher: guest of vmw found down on node1 at " in job["reason"]
    new = guest_pid(cluster.run_dir, "node1", uuid)
    assert new is not None
    assert new != old
    assert qemu_state(cluster, "vmw", "node1") == "running"
    rounds(cluster, 3)
    assert len(jobs_for(cluster, "OP_INSTANCE_STARTUP", "vmw")) == 1
    check(cluster, "vmw", on="node1", running=True)

    # Its node dies: fenced once, the guest fails over to node2 and runs there.
    fences = Fences(cluster)
    cluster.ok("group", "modify", "default", "--auto-failover", "yes")
    cluster.ok("node", "modify", "node1", "--fence-command", fences.power_off)
    cluster.tc.node("node1").stop()
    failover = wait_for(
        "the failover",
        lambda: next(
            (
                j
                for j in jobs_for(cluster, "OP_INSTANCE_FAILOVER", "vmw")
                if j["status"] in ("success", "error", "canceled")
            ),
            None,
        ),
    )
    assert failover["status"] == "success", cluster.log_text(failover)
    assert fences.calls() == ["node1"]
    assert [j["status"] for j in watcher_jobs(cluster, "OP_NODE_FENCE")] == ["success"]
    assert qemu_state(cluster, "vmw", "node2") == "running"
    check(cluster, "vmw", on="node2", running=True)
    assert wait_for("vmw running", lambda: observed(cluster, "vmw")["state"] == "running")
    rounds(cluster, 3)
    assert len(jobs_for(cluster, "OP_INSTANCE_FAILOVER", "vmw")) == 1
    assert fences.calls() == ["node1"]
    cluster.ok("instance", "remove", "vmw")
