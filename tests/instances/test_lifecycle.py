"""Instances through the real CLI and daemon: add, list, info, grow, shutdown, startup,
rename, remove, pools, refusals, and removal that needs cleanup."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness.procs import is_alive
from tests.instances.conftest import (
    KINDS,
    Cluster,
    leftovers,
    loop_devices_of,
    loop_devices_usable,
    open_cluster,
    open_files,
)

pytestmark = pytest.mark.spawns

MIB = 1024 * 1024


@pytest.fixture(scope="module", params=KINDS)
def cluster(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    providers = ("sharedfile", "loopfile") if loop_devices_usable() else ("sharedfile",)
    base = tmp_path_factory.mktemp(f"life-{request.param}")
    with open_cluster(request.param, base, providers=providers) as c:
        yield c


def _image(vols: Path, volume: str) -> Path:
    return vols / f"{volume}.img"


def test_add_grow_stop_start_rename_remove(cluster: Cluster) -> None:
    vols = cluster.vol_dir("life")
    disks = ["--disk", f"0:size=16M,provider=sharedfile,dir={vols}"]
    loop = loop_devices_usable()
    if loop:
        disks += ["--disk", f"1:size=8M,provider=loopfile,dir={vols},name=data"]
    out = cluster.ok("instance", "add", "life1", "-n", "node1", "--memory", "32M", *disks)
    assert "instance life1 added on node1, running" in out

    info = cluster.instance("life1")
    assert (info["state"], info["primary"], info["memory"], info["group"]) == (
        "up",
        "node1",
        32,
        "default",
    )
    volumes = [d["volume"] for d in info["disks"]]
    assert [d["size"] for d in info["disks"]] == ([16, 8] if loop else [16])
    shared = _image(vols, volumes[0])
    assert shared.stat().st_size == 16 * MIB
    # The fake guest holds every disk open: the file, and the loop device.
    pid = cluster.guest_pid("life1")
    assert pid is not None
    assert is_alive(pid)
    held = open_files(pid)
    assert str(shared) in held
    if loop:
        (device,) = loop_devices_of(vols)
        assert device in held
        assert info["disks"][1]["name"] == "data"
    for volume in volumes:
        assert (vols / f"{volume}.meta").read_text() == "originstname+life1\n"
        assert (vols / f"{volume}.open" / "node1.exclusive").exists()

    table = cluster.ok("instance", "list")
    assert "life1" in table
    assert "0:16M@sharedfile" in table
    listed = json.loads(cluster.ok("instance", "list", "--output", "json"))
    assert [i["name"] for i in listed] == ["life1"]
    assert "volume " + volumes[0] in " ".join(cluster.ok("instance", "info", "life1").split())
    assert json.loads(cluster.ok("instance", "info", "life1", "-o", "json"))["uuid"] == info["uuid"]

    # Grow: relative on the file, absolute on the loop device; the node sees the size.
    out = cluster.ok("instance", "grow-disk", "life1", "0", "8M")
    assert "16 → 24 MiB" in out
    assert shared.stat().st_size == 24 * MIB
    if loop:
        cluster.ok("instance", "grow-disk", "life1", "1", "32M", "--absolute")
        size = subprocess.run(
            ["blockdev", "--getsize64", device], capture_output=True, text=True, check=True
        ).stdout
        assert int(size) == 32 * MIB
    assert [d["size"] for d in cluster.instance("life1")["disks"]] == ([24, 32] if loop else [24])

    # Shutdown: the guest is gone, the disks closed and detached.
    cluster.ok("instance", "shutdown", "life1")
    assert not is_alive(pid)
    assert cluster.instance("life1")["state"] == "down"
    assert not any((vols / f"{v}.open").exists() for v in volumes)
    assert loop_devices_of(vols) == []

    # Startup: attached and opened again, held by a new guest.
    cluster.ok("instance", "startup", "life1")
    pid = cluster.guest_pid("life1")
    assert pid is not None
    assert str(shared) in open_files(pid)
    assert cluster.instance("life1")["state"] == "up"

    # Rename: the metadata follows; the running guest is untouched.
    cluster.ok("instance", "rename", "life1", "life2")
    assert cluster.instance_names() == ["life2"]
    assert (vols / f"{volumes[0]}.meta").read_text() == "originstname+life2\n"
    assert cluster.guest_pid("life2") == pid
    assert is_alive(pid)

    cluster.ok("instance", "remove", "life2")
    assert not is_alive(pid)
    assert cluster.instance_names() == []
    assert leftovers(vols) == []
    assert loop_devices_of(vols) == []


def test_refused_before_anything_runs(cluster: Cluster) -> None:
    vols = cluster.vol_dir("refuse")
    disk = f"0:size=8M,provider=sharedfile,dir={vols}"
    add = ("instance", "add", "ref1", "-n", "node1")

    cluster.fails(
        *add,
        "--disk",
        f"0:size=8M,provider=../etc,dir={vols}",
        message="invalid provider name '../etc'",
    )
    cluster.fails(*add, "--disk", "0:size=12X,provider=sharedfile", message="is not a size")
    cluster.fails(
        *add,
        "--disk",
        disk,
        "--disk",
        "2:size=8M,provider=sharedfile",
        message="disk indexes must be 0..1 without gaps",
    )
    cluster.fails(
        *add,
        "--disk",
        f"{disk},colour=blue",
        message="unknown parameter colour for ExtStorage provider 'sharedfile'",
    )
    job = cluster.last_job()
    assert "create" not in cluster.log_text(job)
    cluster.fails(
        *add,
        "--disk",
        f"0:size=8M,provider=nosuch,dir={vols}",
        message="provider 'nosuch' is not valid in node group default",
    )
    assert "not found in" in cluster.log_text(cluster.last_job())
    cluster.fails(
        *add, "--disk", f"0:size=8M,pool=nopool,dir={vols}", message="unknown storage pool 'nopool'"
    )
    cluster.ok("cluster", "modify", "--add-pool", "refpool", "sharedfile")
    cluster.fails(
        *add,
        "--disk",
        f"0:size=8M,pool=refpool,dir={vols}",
        message="storage pool 'refpool' is not connected to node group 'default'",
    )
    cluster.fails(
        "instance", "add", "ref1", "-n", "nonode", "--disk", disk, message="unknown node 'nonode'"
    )
    assert leftovers(vols) == []
    assert "ref1" not in cluster.instance_names()

    cluster.ok(*add, "--disk", disk, "--no-start")
    assert cluster.instance("ref1")["state"] == "down"
    cluster.fails(*add, "--disk", disk, message="instance 'ref1' already exists")
    cluster.fails(
        "instance",
        "grow-disk",
        "ref1",
        "0",
        "4M",
        "--absolute",
        message="refusing to shrink disk 0 of ref1 from 8 MiB to 4 MiB",
    )
    cluster.fails(
        "instance",
        "grow-disk",
        "ref1",
        "0",
        "8M",
        "--absolute",
        message="is already 8 MiB; nothing to grow",
    )
    job = cluster.tc.run_job(
        [{"OP_ID": "OP_INSTANCE_GROW_DISK", "instance_name": "ref1", "disk": 0, "amount": 0}]
    )
    assert job["status"] == "error"
    assert "nothing to grow" in job["ops"][0]["error"]["message"]
    cluster.fails("instance", "grow-disk", "ref1", "3", "1G", message="has no disk 3")
    cluster.fails("instance", "startup", "nosuch", message="unknown instance 'nosuch'")
    # None of the refused grows ran a step.
    assert not any(
        "grow disk" in cluster.log_text(cluster.tc.client.job(j["id"]))
        for j in cluster.tc.client.jobs()[-4:]
    )
    cluster.ok("instance", "remove", "ref1")
    cluster.ok("cluster", "modify", "--remove-pool", "refpool")
    assert leftovers(vols) == []


def test_pools(cluster: Cluster) -> None:
    vols = cluster.vol_dir("pools")
    out = cluster.ok("cluster", "modify", "--add-pool", "fast", "sharedfile")
    assert "fast (sharedfile)" in out
    assert json.loads(cluster.ok("cluster", "info", "-o", "json"))["cluster"]["pools"]["fast"] == (
        "sharedfile"
    )
    cluster.fails(
        "cluster",
        "modify",
        "--add-pool",
        "fast",
        "loopfile",
        message="already exists with provider 'sharedfile'",
    )
    cluster.fails(
        "group",
        "modify",
        "default",
        "--connect-pool",
        "slow",
        message="unknown storage pool 'slow'",
    )
    cluster.ok("group", "modify", "default", "--connect-pool", "fast")
    cluster.ok("group", "add", "empty")
    out = cluster.ok("group", "modify", "empty", "--connect-pool", "fast")
    assert "group empty offers pools: fast" in out
    groups = json.loads(cluster.ok("group", "list", "-o", "json"))
    assert groups["default"]["pools"] == ["fast"]
    assert groups["empty"]["pools"] == ["fast"]
    assert "fast" in cluster.ok("group", "list")

    cluster.ok(
        "instance",
        "add",
        "pool1",
        "-n",
        "node1",
        "--no-start",
        "--disk",
        f"0:size=8M,pool=fast,dir={vols},name=root",
        "--disk",
        f"1:size=4M,provider=sharedfile,dir={vols}",
    )
    disks = cluster.instance("pool1")["disks"]
    assert [(d["provider"], d["pool"]) for d in disks] == [
        ("sharedfile", "fast"),
        ("sharedfile", None),
    ]
    cluster.fails(
        "cluster",
        "modify",
        "--remove-pool",
        "fast",
        message="cannot remove storage pool 'fast': still used by pool1/disk0",
    )
    cluster.fails(
        "group",
        "modify",
        "default",
        "--disconnect-pool",
        "fast",
        message="still used by pool1/disk0",
    )
    cluster.ok("instance", "remove", "pool1")
    cluster.ok("group", "modify", "empty", "--disconnect-pool", "fast")
    cluster.ok("cluster", "modify", "--remove-pool", "fast")
    groups = json.loads(cluster.ok("group", "list", "-o", "json"))
    assert groups["default"]["pools"] == []
    assert "fast" not in json.loads(cluster.ok("cluster", "info", "-o", "json"))["cluster"]["pools"]
    assert leftovers(vols) == []


def test_remove_keeps_disks_that_fail_for_cleanup(cluster: Cluster) -> None:
    vols = cluster.vol_dir("cleanup")
    cluster.install_copy("brittle", "sharedfile")
    cluster.ok(
        "instance",
        "add",
        "cl1",
        "-n",
        "node1",
        "--disk",
        f"0:size=4M,provider=brittle,dir={vols}",
        "--disk",
        f"1:size=4M,provider=sharedfile,dir={vols}",
    )
    stuck = cluster.instance("cl1")["disks"][0]["volume"]
    cluster.install_copy(
        "brittle",
        "sharedfile",
        {
            "remove": "echo 'injected: storage busy' >&2; exit 1\n",
        },
    )
    cluster.fails("instance", "remove", "cl1", message="instance cl1 not fully removed")
    inst = cluster.instance("cl1")
    assert inst["state"] == "cleanup"
    assert [d["volume"] for d in inst["disks"]] == [stuck]
    assert "injected: storage busy" in inst["disks"][0]["needs_cleanup"]
    assert leftovers(vols) == sorted(f"{stuck}.{ext}" for ext in ("img", "lock", "meta"))
    assert "cleanup" in cluster.ok("instance", "list")
    cluster.fails("instance", "startup", "cl1", message="is being removed")

    cluster.install_copy("brittle", "sharedfile")
    cluster.ok("instance", "remove", "cl1")
    assert "cl1" not in cluster.instance_names()
    assert leftovers(vols) == []
