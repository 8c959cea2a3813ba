"""Real qemu guests: reboot, migration settings, and a migration that cannot converge.

The guest boots a 512-byte boot sector written into its disk (BIOS → virtio disk) that
rewrites 512 KiB of its memory in a loop for ever. Such a guest cannot be moved at
1 MiB/s within 1 ms of downtime: the migration must be cancelled once its converge
timeout passes, and the guest must go on running on the source, its target cleaned
up. qemu's own answers (``query-migrate-parameters``, ``query-status``) are read on its
QMP socket, not only the configuration.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness.procs import is_alive
from tests.instances.conftest import KINDS
from tests.migration.conftest import MoveCluster, open_move_cluster
from tests.migration.invariants import check, guest_pid, qmp

pytestmark = [
    pytest.mark.kvm,
    pytest.mark.skipif(
        shutil.which("qemu-system-x86_64") is None,
        reason="qemu-system-x86 is not installed (make system-deps installs it)",
    ),
]

#: Real mode: cli; cld; ax=0; for ever { for es in 0x1000..0x8000 step 0x1000:
#: rep stosw 64 KiB of ax at es:0 } ; inc ax — i.e. physical 0x10000-0x8ffff dirtied.
DIRTY_LOOP = bytes.fromhex(
    "fa fc 31c0"  # cli; cld; xor ax,ax
    "bb0010"  # outer: mov bx,0x1000
    "8ec3 31ff b90080 f3ab"  # seg: mov es,bx; xor di,di; mov cx,0x8000; rep stosw
    "81c30010 81fb0090 72ed"  # add bx,0x1000; cmp bx,0x9000; jb seg
    "40 ebe7"  # inc ax; jmp outer
)
BOOT_SECTOR = DIRTY_LOOP.ljust(510, b"\0") + b"\x55\xaa"


@pytest.fixture(scope="module", params=KINDS)
def cluster(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[MoveCluster]:
    base = tmp_path_factory.mktemp(f"kvm-day2-{request.param}")
    with open_move_cluster(request.param, base, nodes=2) as c:
        yield c


def qemu(cluster: MoveCluster, name: str, node: str, *commands: str) -> list[object]:
    uuid = cluster.instance(name)["uuid"]
    return qmp(cluster.run_dir / node / f"{uuid}.qmp", *commands)


def registers(path: Path) -> str:
    """The CPU registers as qemu's monitor prints them (HMP through QMP)."""
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(10)
        sock.connect(str(path))
        stream = sock.makefile("rwb")
        json.loads(stream.readline())
        for message in (
            {"execute": "qmp_capabilities"},
            {
                "execute": "human-monitor-command",
                "arguments": {"command-line": "info registers"},
            },
        ):
            stream.write(json.dumps(message).encode() + b"\n")
            stream.flush()
            while "event" in (reply := json.loads(stream.readline())):
                pass
    return str(reply["return"])


def wait_in_boot_sector(path: Path, timeout: float = 180.0) -> None:
    """Wait until the guest's CPU runs the boot sector (the BIOS takes a while under
    TCG); fail naming where it is otherwise."""
    deadline = time.monotonic() + timeout
    while True:
        regs = registers(path)
        cs = re.search(r"^CS\s*=\s*([0-9a-f]+)", regs, re.MULTILINE | re.IGNORECASE)
        eip = re.search(r"EIP=([0-9a-f]+)", regs, re.IGNORECASE)
        if cs and eip and int(cs.group(1), 16) == 0 and 0x7C00 <= int(eip.group(1), 16) < 0x7E00:
            return
        assert time.monotonic() < deadline, f"the guest never reached its boot sector: {regs}"
        time.sleep(0.5)


@pytest.mark.timeout(400)
def test_reboot_then_a_migration_that_cannot_converge_is_cancelled(cluster: MoveCluster) -> None:
    vols = cluster.vol_dir("kvm-day2")
    cluster.ok(
        "instance",
        "add",
        "vmr1",
        "-n",
        "node1",
        "-H",
        "kvm",
        "--memory",
        "64M",
        "--disk",
        f"0:size=16M,provider=strict,dir={vols}",
    )
    info = cluster.instance("vmr1")
    uuid, volume = info["uuid"], info["disks"][0]["volume"]
    with Path(vols / f"{volume}.img").open("r+b") as image:
        image.write(BOOT_SECTOR)
    first = guest_pid(cluster.run_dir, "node1", uuid)
    assert first is not None

    # No OS answers the ACPI power button: soft fails, then hard; a new qemu boots the
    # sector just written.
    out = cluster.ok("instance", "reboot", "vmr1", "--timeout", "2")
    assert "instance vmr1 rebooted on node1 (hard)" in out
    log = cluster.log_text(cluster.last("OP_INSTANCE_REBOOT"))
    assert "asked the guest of vmr1 to power down (ACPI)" in log
    assert "did not power down within 2 s; stopping it hard" in log
    second = guest_pid(cluster.run_dir, "node1", uuid)
    assert second is not None
    assert second != first
    assert not is_alive(first)
    [status] = qemu(cluster, "vmr1", "node1", "query-status")
    assert isinstance(status, dict)
    assert status["status"] == "running"
    check(cluster, "vmr1", on="node1", running=True)
    wait_in_boot_sector(cluster.run_dir / "node1" / f"{uuid}.qmp")

    cluster.fails(
        "instance",
        "migrate",
        "vmr1",
        "-n",
        "node2",
        "--max-downtime",
        "1",
        "--bandwidth",
        "1",
        "--converge-timeout",
        "3",
        message="did not converge within 3 s",
    )
    message = cluster.error(cluster.last())
    assert "was cancelled: the guest keeps running on node1" in message
    assert "vmr1 runs on node1, its disks open exclusively there" in message
    # The settings reached qemu on the source; the guest kept running there, the
    # same process; the target's qemu is gone and its disks released.
    [params] = qemu(cluster, "vmr1", "node1", "query-migrate-parameters")
    assert isinstance(params, dict)
    assert params["downtime-limit"] == 1
    assert params["max-bandwidth"] == 1 << 20
    [migrated] = qemu(cluster, "vmr1", "node1", "query-migrate")
    assert isinstance(migrated, dict)
    assert migrated["status"] == "cancelled"
    assert guest_pid(cluster.run_dir, "node1", uuid) == second
    log = cluster.log_text(cluster.last())
    assert "migration settings: max downtime 1 ms, bandwidth 1 MiB/s" in log
    check(cluster, "vmr1", on="node1", running=True)

    # With room to converge the same guest moves.
    out = cluster.ok("instance", "migrate", "vmr1", "-n", "node2", "--max-downtime", "5000")
    assert "migrated from node1 to node2 (max downtime 5000 ms, bandwidth 1024 MiB/s)" in out
    check(cluster, "vmr1", on="node2", running=True)
    cluster.ok("instance", "remove", "vmr1")
