"""Real qemu guests (no OS) moving between two nodes of this machine.

Live migration goes over TCP through QMP (the target waits with ``-incoming defer``,
``migrate-incoming`` picks its port); afterwards the guest runs on the target
(``query-status`` asked directly on its socket) and the source qemu is gone. A port
already taken makes the migration fail, and the guest keeps running on the source.
"""

from __future__ import annotations

import shutil
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness.procs import is_alive
from tests.instances.conftest import KINDS, loop_devices_of, loop_devices_usable
from tests.migration.conftest import MoveCluster, open_move_cluster
from tests.migration.invariants import check, guest_pid, qmp

pytestmark = [
    pytest.mark.kvm,
    pytest.mark.skipif(
        shutil.which("qemu-system-x86_64") is None,
        reason="qemu-system-x86 is not installed (make system-deps installs it)",
    ),
]


@pytest.fixture(scope="module", params=KINDS)
def cluster(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[MoveCluster]:
    base = tmp_path_factory.mktemp(f"kvm-move-{request.param}")
    with open_move_cluster(request.param, base, nodes=2) as c:
        if loop_devices_usable():
            for node in c.tc.nodes:
                c.tc.install_provider(node, "loopfile")
        yield c


def add_kvm(cluster: MoveCluster, name: str, vols: Path) -> None:
    disks = ["--disk", f"0:size=16M,provider=strict,dir={vols}"]
    if loop_devices_usable():
        # A kernelspace disk too: each node attaches its own loop device.
        disks += ["--disk", f"1:size=8M,provider=loopfile,dir={vols}"]
    cluster.ok("instance", "add", name, "-n", "node1", "-H", "kvm", "--memory", "64M", *disks)


def qemu_state(cluster: MoveCluster, name: str, node: str) -> str:
    uuid = cluster.instance(name)["uuid"]
    return str(qmp(cluster.run_dir / node / f"{uuid}.qmp", "query-status")[0]["status"])


def test_kvm_live_migration_and_failover(cluster: MoveCluster) -> None:
    vols = cluster.vol_dir("kvm")
    add_kvm(cluster, "vm1", vols)
    uuid = cluster.instance("vm1")["uuid"]
    source_pid = guest_pid(cluster.run_dir, "node1", uuid)
    assert source_pid is not None
    check(cluster, "vm1", on="node1", running=True)

    out = cluster.ok("instance", "migrate", "vm1", "-n", "node2")
    assert "instance vm1 migrated from node1 to node2" in out
    assert not is_alive(source_pid)
    assert qemu_state(cluster, "vm1", "node2") == "running"
    log = cluster.log_text(cluster.last())
    assert "QMP migrate-incoming" in log
    assert "node2: waiting for the guest on 127.0.0.1:" in log
    assert "node1: migration completed:" in log
    assert "MiB sent" in log
    check(cluster, "vm1", on="node2", running=True)
    if loop_devices_usable():
        assert len(loop_devices_of(vols)) == 1

    # Back, non-live: paused while the memory moves, running again on arrival.
    cluster.ok("instance", "migrate", "vm1", "--non-live")
    assert qemu_state(cluster, "vm1", "node1") == "running"
    assert "QMP cont" in cluster.log_text(cluster.last())
    check(cluster, "vm1", on="node1", running=True)

    # The target's port is taken: the migration fails, the guest stays on node1.
    pid = guest_pid(cluster.run_dir, "node1", uuid)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        cluster.fails(
            "instance",
            "migrate",
            "vm1",
            "-n",
            "node2",
            "--migration-port",
            str(port),
            message="Address already in use",
        )
    message = cluster.error(cluster.last())
    assert "vm1 runs on node1, its disks open exclusively there" in message
    assert "stopped the guest process on node2" in message
    assert guest_pid(cluster.run_dir, "node1", uuid) == pid
    check(cluster, "vm1", on="node1", running=True)

    out = cluster.ok("instance", "failover", "vm1")
    assert "instance vm1 failed over from node1 to node2, running" in out
    assert qemu_state(cluster, "vm1", "node2") == "running"
    check(cluster, "vm1", on="node2", running=True)

    cluster.ok("instance", "remove", "vm1")
    assert loop_devices_of(vols) == []
