"""Real qemu guests (no OS): disks hot-plugged and hot-unplugged, grown while plugged in,
and snapshots taken while the guest runs — the guest's side checked through its own QMP
socket (``query-block``, ``qom-list``, ``query-status``), not only the configuration."""

from __future__ import annotations

import json
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.instances.conftest import (
    KINDS,
    Cluster,
    loop_devices_of,
    loop_devices_usable,
    open_cluster,
)

MIB = 1024 * 1024

pytestmark = [
    pytest.mark.spawns,
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
    base = tmp_path_factory.mktemp(f"kvmplug-{request.param}")
    with open_cluster(request.param, base, providers=("loopfile", "sharedfile")) as c:
        yield c


def qmp(path: Path, *commands: tuple[str, dict[str, Any]]) -> list[Any]:
    """Ask the guest's QMP socket directly; the return values."""
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(10)
        sock.connect(str(path))
        stream = sock.makefile("rwb")
        json.loads(stream.readline())
        replies: list[Any] = []
        for execute, arguments in (("qmp_capabilities", {}), *commands):
            message: dict[str, Any] = {"execute": execute}
            if arguments:
                message["arguments"] = arguments
            stream.write(json.dumps(message).encode() + b"\n")
            stream.flush()
            while "event" in (reply := json.loads(stream.readline())):
                pass
            replies.append(reply["return"])
    return replies[1:]


def guest_view(path: Path) -> dict[str, dict[str, Any]]:
    """The guest's disks by device id: its block backend's file and size, from
    ``query-block``; only devices ``qom-list /machine/peripheral`` also shows."""
    blocks, peripherals = qmp(
        path, ("query-block", {}), ("qom-list", {"path": "/machine/peripheral"})
    )
    devices = {p["name"] for p in peripherals if p["type"].startswith("child<")}
    view = {}
    for block in blocks:
        qdev = str(block.get("qdev") or "")
        name = qdev.removeprefix("/machine/peripheral/").split("/", 1)[0]
        if block.get("inserted") and name in devices:
            view[name] = {
                "file": block["inserted"]["file"],
                "size": block["inserted"]["image"]["virtual-size"],
            }
    assert set(view) == {d for d in devices if d.startswith("disk")}, (view, devices)
    return view


def test_kvm_disks_hot_plugged_grown_snapshotted_and_unplugged(cluster: Cluster) -> None:
    vols = cluster.vol_dir("kvmplug")
    cluster.ok(
        "instance",
        "add",
        "plug1",
        "-n",
        "node1",
        "--hypervisor",
        "kvm",
        "--disk",
        f"0:size=16M,provider=loopfile,dir={vols}",
    )
    info = cluster.instance("plug1")
    sock = cluster.run_dir / "node1" / f"{info['uuid']}.qmp"
    pid = cluster.guest_pid("plug1")
    [root_dev] = loop_devices_of(vols)
    assert guest_view(sock) == {"disk0-dev": {"file": root_dev, "size": 16 * MIB}}

    out = cluster.ok(
        "instance",
        "modify",
        "plug1",
        "--disk",
        f"add:size=8M,provider=loopfile,dir={vols},name=data",
    )
    assert "plug1: disk 1 (data) added, 8 MiB; hot-plugged into the running guest" in out
    data = cluster.instance("plug1")["disks"][1]
    [data_dev] = sorted(set(loop_devices_of(vols)) - {root_dev})
    view = guest_view(sock)
    assert view["disk1-dev"] == {"file": data_dev, "size": 8 * MIB}
    assert cluster.guest_pid("plug1") == pid
    log = cluster.log_text(cluster.last_job())
    assert "QMP blockdev-add" in log
    assert "QMP device_add" in log

    # Grown while plugged in: the guest sees the new size of the hot-plugged disk.
    out = cluster.ok("instance", "grow-disk", "plug1", "data", "8M")
    assert f"the guest sees {16 * MIB} bytes" in out
    assert guest_view(sock)["disk1-dev"]["size"] == 16 * MIB

    # A second disk on the other provider (a file, not a block device).
    cluster.ok(
        "instance", "modify", "plug1", "--disk", f"add:size=4M,provider=sharedfile,dir={vols}"
    )
    third = cluster.instance("plug1")["disks"][2]
    assert guest_view(sock)["disk2-dev"] == {
        "file": str(vols / f"{third['volume']}.img"),
        "size": 4 * MIB,
    }

    # Snapshot while running: no guest agent answers, so the guest is paused and resumed.
    out = cluster.ok("instance", "snapshot", "plug1", "--disk", "data", "--name", "s1")
    assert "guest paused (no guest agent answered)" in out
    [status] = qmp(sock, ("query-status", {}))
    assert status["status"] == "running"
    log = cluster.log_text(cluster.last_job())
    assert "QMP stop" in log
    assert "QMP cont" in log
    assert (vols / f"{data['volume']}.snap-s1").stat().st_size == 16 * MIB
    [snap] = cluster.instance("plug1")["snapshots"]
    assert (snap["name"], snap["disk"], snap["frozen_by"]) == ("s1", 1, "pause")

    # A snapshot script that fails: the guest is resumed all the same, nothing recorded.
    cluster.install_copy(
        "badsnap", "sharedfile", {"snapshot": 'echo "array offline" >&2\nexit 1\n'}
    )
    cluster.ok(
        "instance", "modify", "plug1", "--disk", f"add:size=4M,provider=badsnap,dir={vols},name=b"
    )
    cluster.fails(
        "instance", "snapshot", "plug1", "--disk", "b", "--name", "s2", message="array offline"
    )
    [status] = qmp(sock, ("query-status", {}))
    assert status["status"] == "running"
    assert "the guest runs again (resumed)" in cluster.log_text(cluster.last_job())
    assert [s["name"] for s in cluster.instance("plug1")["snapshots"]] == ["s1"]
    cluster.ok("instance", "modify", "plug1", "--disk", "b:remove")

    # Unplugged: qemu lets the volume go before it is detached and removed.
    out = cluster.ok("instance", "modify", "plug1", "--disk", "1:remove")
    assert "hot-unplugged from the running guest" in out
    assert "DEVICE_DELETED" in cluster.log_text(cluster.last_job())
    assert set(guest_view(sock)) == {"disk0-dev", "disk2-dev"}
    assert data_dev not in loop_devices_of(vols)
    assert not (vols / f"{data['volume']}.img").exists()
    assert not (vols / f"{data['volume']}.snap-s1").exists()  # removed with its volume

    # Detached and attached again, under the same index.
    cluster.ok("instance", "modify", "plug1", "--disk", "2:detach")
    assert set(guest_view(sock)) == {"disk0-dev"}
    assert (vols / f"{third['volume']}.img").exists()
    cluster.ok("instance", "modify", "plug1", "--disk", "2:attach")
    assert set(guest_view(sock)) == {"disk0-dev", "disk2-dev"}

    cluster.ok("instance", "modify", "plug1", "--disk", "2:remove")
    before = cluster.instance("plug1")
    cluster.fails(
        "instance",
        "modify",
        "plug1",
        "--disk",
        "0:remove",
        message="it is the only disk of a running guest",
    )
    assert cluster.instance("plug1") == before
    assert set(guest_view(sock)) == {"disk0-dev"}
    assert cluster.guest_pid("plug1") == pid

    # A restart gives the guest its disks under the same ids.
    cluster.ok(
        "instance", "modify", "plug1", "--disk", f"add:size=4M,provider=sharedfile,dir={vols}"
    )
    cluster.ok("instance", "shutdown", "plug1")
    cluster.ok("instance", "startup", "plug1")
    assert set(guest_view(sock)) == {"disk0-dev", "disk1-dev"}
    cluster.ok("verify")
    cluster.ok("instance", "remove", "plug1")
    assert list(vols.glob("*.img")) == []
    assert loop_devices_of(vols) == []
