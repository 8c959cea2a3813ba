"""Real qemu guests (no OS) on loop-backed disks: start, grow while running, stop.

The daemon reaches each guest's QMP socket through SSH stream-local forwarding; the
test also asks the socket directly (the nodes run on this machine) what the guest sees.
"""

from __future__ import annotations

import json
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.harness.procs import is_alive
from tests.instances.conftest import (
    KINDS,
    Cluster,
    leftovers,
    loop_devices_of,
    loop_devices_usable,
    open_cluster,
)

MIB = 1024 * 1024

pytestmark = [
    pytest.mark.kvm,
    pytest.mark.root,
    pytest.mark.skipif(
        shutil.which("qemu-system-x86_64") is None,
        reason="qemu-system-x86 is not installed (make system-deps installs it)",
    ),
    pytest.mark.skipif(not loop_devices_usable(), reason="loop devices need root and losetup"),
]


@pytest.fixture(scope="module", params=KINDS)
def cluster(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    base = tmp_path_factory.mktemp(f"kvm-{request.param}")
    with open_cluster(request.param, base, providers=("loopfile", "sharedfile")) as c:
        yield c


def query_block(path: Path) -> dict[str, int]:
    """``device → virtual size`` straight from the guest's QMP socket."""
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(10)
        sock.connect(str(path))
        stream = sock.makefile("rwb")
        json.loads(stream.readline())
        replies: list[Any] = []
        for execute in ("qmp_capabilities", "query-block"):
            stream.write(json.dumps({"execute": execute}).encode() + b"\n")
            stream.flush()
            while "event" in (reply := json.loads(stream.readline())):
                pass
            replies.append(reply["return"])
    return {b["device"]: b["inserted"]["image"]["virtual-size"] for b in replies[1]}


def test_kvm_guest_sees_a_disk_grown_while_it_runs(cluster: Cluster) -> None:
    vols = cluster.vol_dir("kvm")
    out = cluster.ok(
        "instance",
        "add",
        "vm1",
        "-n",
        "node1",
        "--hypervisor",
        "kvm",
        "--memory",
        "64M",
        "--disk",
        f"0:size=16M,provider=loopfile,dir={vols}",
        "--disk",
        f"1:size=8M,provider=sharedfile,dir={vols},name=data",
    )
    assert "running" in out
    info = cluster.instance("vm1")
    pid = cluster.guest_pid("vm1")
    assert pid is not None
    assert is_alive(pid)
    argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
    assert "qemu-system-x86_64" in argv[0]
    assert "-nographic" not in argv
    assert argv[argv.index("-display") + 1] == "none"
    assert argv[argv.index("-machine") + 1] == "accel=kvm:tcg"
    (device,) = loop_devices_of(vols)
    assert f"file={device},format=raw,if=none,id=disk0" in argv
    qmp = cluster.run_dir / "node1" / f"{info['uuid']}.qmp"
    assert query_block(qmp) == {"disk0": 16 * MIB, "disk1": 8 * MIB}

    out = cluster.ok("instance", "grow-disk", "vm1", "0", "16M")
    assert f"the guest sees {32 * MIB} bytes" in out
    assert "QMP block_resize" in cluster.log_text(cluster.last_job())
    assert query_block(qmp)["disk0"] == 32 * MIB
    # A userspace (file) disk grows the same way.
    cluster.ok("instance", "grow-disk", "vm1", "1", "24M", "--absolute")
    assert query_block(qmp) == {"disk0": 32 * MIB, "disk1": 24 * MIB}

    cluster.ok("instance", "shutdown", "vm1")
    assert not is_alive(pid)
    assert not qmp.exists()
    assert loop_devices_of(vols) == []

    cluster.ok("instance", "startup", "vm1")
    pid = cluster.guest_pid("vm1")
    assert pid is not None
    assert is_alive(pid)
    assert query_block(qmp) == {"disk0": 32 * MIB, "disk1": 24 * MIB}

    cluster.ok("instance", "remove", "vm1")
    assert not is_alive(pid)
    assert leftovers(vols) == []
