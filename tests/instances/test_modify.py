"""instance modify and instance snapshot through the real CLI and daemon, on embedded and
OpenSSH nodes, with the fake hypervisor: disks added, detached, attached and removed while
the guest runs (the guest process keeps running and holds exactly its disks), added to a
stopped instance, memory/vcpus/flags, snapshots; and the refusals, each leaving the
configuration, the volumes and the guest as they were."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.harness.procs import is_alive
from tests.instances.conftest import KINDS, Cluster, open_cluster, open_files

pytestmark = pytest.mark.spawns


@pytest.fixture(scope="module", params=KINDS)
def cluster(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    base = tmp_path_factory.mktemp(f"modify-{request.param}")
    with open_cluster(request.param, base) as c:
        # The same provider without a snapshot script.
        c.install_copy("nosnap", "sharedfile")
        for node in c.tc.nodes:
            (c.tc.search_path(node) / "nosnap" / "snapshot").unlink()
        yield c


def _add(cluster: Cluster, name: str, vols: Path, *extra: str) -> dict[str, Any]:
    cluster.ok(
        "instance",
        "add",
        name,
        "-n",
        "node1",
        "--disk",
        f"0:size=8M,provider=sharedfile,dir={vols},name=root",
        *extra,
    )
    return cluster.instance(name)


def _held(cluster: Cluster, name: str) -> set[str]:
    """The volume files the fake guest of ``name`` holds open."""
    pid = cluster.guest_pid(name)
    assert pid is not None
    assert is_alive(pid)
    return {Path(p).name for p in open_files(pid) if p.endswith(".img")}


def _state(cluster: Cluster, name: str, vols: Path) -> tuple[Any, ...]:
    """What a refused change must leave untouched."""
    info = cluster.instance(name)
    files = sorted(p.name for p in vols.iterdir() if not p.name.endswith(".lock"))
    return (json.dumps(info, sort_keys=True), files, cluster.guest_pid(name))


def test_disks_plugged_in_and_out_of_a_running_guest(cluster: Cluster) -> None:
    vols = cluster.vol_dir("hot")
    info = _add(cluster, "hot1", vols)
    pid = cluster.guest_pid("hot1")
    root = f"{info['disks'][0]['volume']}.img"
    assert _held(cluster, "hot1") == {root}

    out = cluster.ok(
        "instance",
        "modify",
        "hot1",
        "--disk",
        f"add:size=4M,provider=sharedfile,dir={vols},name=data",
    )
    assert "hot1: disk 1 (data) added, 4 MiB; hot-plugged into the running guest" in out
    info = cluster.instance("hot1")
    [data] = [d for d in info["disks"] if d["name"] == "data"]
    assert data["index"] == 1
    assert (vols / f"{data['volume']}.img").stat().st_size == 4 << 20
    assert _held(cluster, "hot1") == {root, f"{data['volume']}.img"}
    assert cluster.guest_pid("hot1") == pid  # no restart

    # A disk's name works wherever an index does.
    out = cluster.ok("instance", "grow-disk", "hot1", "data", "4M")
    assert "4 → 8 MiB" in out

    out = cluster.ok("instance", "modify", "hot1", "--disk", "data:detach")
    assert "detached (kept" in out
    assert _held(cluster, "hot1") == {root}
    info = cluster.instance("hot1")
    assert [d["index"] for d in info["disks"]] == [0]
    assert [d["name"] for d in info["detached_disks"]] == ["data"]
    assert (vols / f"{data['volume']}.img").stat().st_size == 8 << 20  # kept
    assert not (vols / f"{data['volume']}.open").exists()
    text = cluster.ok("instance", "info", "hot1")
    assert "detached disk 1 data" in text

    out = cluster.ok("instance", "modify", "hot1", "--disk", "1:attach")
    assert "disk 1 (data) attached" in out
    assert _held(cluster, "hot1") == {root, f"{data['volume']}.img"}
    info = cluster.instance("hot1")
    assert [d["index"] for d in info["disks"]] == [0, 1]
    assert info["detached_disks"] == []

    # A third disk: indexes stay stable when the one before it goes.
    cluster.ok(
        "instance", "modify", "hot1", "--disk", f"add:size=2M,provider=sharedfile,dir={vols}"
    )
    third = cluster.instance("hot1")["disks"][2]
    assert third["index"] == 2
    out = cluster.ok("instance", "modify", "hot1", "--disk", "1:remove")
    assert "hot-unplugged from the running guest" in out
    assert not (vols / f"{data['volume']}.img").exists()
    assert _held(cluster, "hot1") == {root, f"{third['volume']}.img"}
    assert [d["index"] for d in cluster.instance("hot1")["disks"]] == [0, 2]
    assert cluster.guest_pid("hot1") == pid

    # Restarted, the guest gets exactly the configured disks.
    cluster.ok("instance", "shutdown", "hot1")
    cluster.ok("instance", "startup", "hot1")
    assert _held(cluster, "hot1") == {root, f"{third['volume']}.img"}
    cluster.ok("verify")
    cluster.ok("instance", "remove", "hot1")
    assert sorted(p.name for p in vols.glob("*.img")) == []


def test_a_disk_added_to_a_stopped_instance_is_used_at_the_next_start(cluster: Cluster) -> None:
    vols = cluster.vol_dir("cold")
    info = _add(cluster, "cold1", vols, "--no-start")
    out = cluster.ok(
        "instance", "modify", "cold1", "--disk", f"add:size=4M,provider=sharedfile,dir={vols}"
    )
    assert "the instance is stopped: used at its next start" in out
    new = cluster.instance("cold1")["disks"][1]
    assert (vols / f"{new['volume']}.img").exists()
    assert not (vols / f"{new['volume']}.open").exists()  # closed again: held nowhere
    cluster.ok("instance", "startup", "cold1")
    assert _held(cluster, "cold1") == {f"{info['disks'][0]['volume']}.img", f"{new['volume']}.img"}
    # A detached disk is removed with its instance.
    cluster.ok("instance", "modify", "cold1", "--disk", "1:detach")
    cluster.ok("instance", "remove", "cold1")
    assert list(vols.glob("*.img")) == []


def test_memory_vcpus_and_watcher_flags(cluster: Cluster) -> None:
    vols = cluster.vol_dir("flags")
    _add(cluster, "flags1", vols)
    pid = cluster.guest_pid("flags1")
    out = cluster.ok(
        "instance",
        "modify",
        "flags1",
        "--memory",
        "128M",
        "--vcpus",
        "2",
        "--auto-restart",
        "no",
        "--auto-failover",
        "yes",
    )
    assert "memory and vcpus take effect at the next start" in out
    info = cluster.instance("flags1")
    assert (info["memory"], info["vcpus"], info["auto_restart"], info["auto_failover"]) == (
        128,
        2,
        False,
        True,
    )
    assert cluster.guest_pid("flags1") == pid
    cluster.ok("instance", "modify", "flags1", "--auto-failover", "group")
    assert cluster.instance("flags1")["auto_failover"] is None
    assert "auto-repair: restart no, failover group" in cluster.ok("instance", "info", "flags1")
    cluster.ok("instance", "remove", "flags1")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param(["--disk", "7:remove"], "has no disk 7 (disks: 0 (root), 1)", id="index"),
        pytest.param(["--disk", "nosuch:detach"], "has no disk 'nosuch'", id="name"),
        pytest.param(
            ["--disk", "1:attach"], "has no detached disk 1 (detached disks: none)", id="attach"
        ),
        pytest.param(
            ["--disk", "add:size=4M,provider=sharedfile,dir=/nonexistent,colour=red"],
            "colour",
            id="param",
        ),
        pytest.param(
            ["--disk", "add:size=4M,provider=sharedfile,dir={vols},name=root"],
            "already has a disk named 'root'",
            id="dup-name",
        ),
        pytest.param(["--disk", "0:zap"], "'zap' is not remove, detach or attach", id="action"),
        pytest.param(
            ["--disk", "add:size=100T,provider=sharedfile,dir={vols}"],
            "not enough storage: disk 2 needs 104857600 MiB of provider sharedfile",
            id="capacity",
        ),
        pytest.param(
            ["--disk", "add:size=4M,pool=nosuchpool,dir={vols}"],
            "unknown storage pool 'nosuchpool'",
            id="pool",
        ),
    ],
)
def test_bad_disk_changes_are_refused_and_change_nothing(
    cluster: Cluster, args: list[str], message: str
) -> None:
    vols = cluster.vol_dir("bad")
    name = f"bad-{len(list(vols.parent.iterdir()))}"
    _add(cluster, name, vols)
    cluster.ok("instance", "modify", name, "--disk", f"add:size=2M,provider=sharedfile,dir={vols}")
    before = _state(cluster, name, vols)
    cluster.fails("instance", "modify", name, *[a.format(vols=vols) for a in args], message=message)
    assert _state(cluster, name, vols) == before
    cluster.ok("instance", "remove", name)


def test_the_last_disk_of_a_running_guest_stays(cluster: Cluster) -> None:
    vols = cluster.vol_dir("last")
    _add(cluster, "last1", vols)
    before = _state(cluster, "last1", vols)
    for action in ("remove", "detach"):
        cluster.fails(
            "instance",
            "modify",
            "last1",
            "--disk",
            f"0:{action}",
            message=f"refusing to {action} disk 0 of last1: it is the only disk of a running guest",
        )
    assert _state(cluster, "last1", vols) == before
    cluster.ok("instance", "remove", "last1")


def test_a_failed_add_leaves_no_volume(cluster: Cluster) -> None:
    vols = cluster.vol_dir("failadd")
    cluster.install_copy("badopen", "sharedfile", {"open": 'echo "open refused" >&2\nexit 1\n'})
    _add(cluster, "failadd1", vols)
    before = _state(cluster, "failadd1", vols)
    cluster.fails(
        "instance",
        "modify",
        "failadd1",
        "--disk",
        f"add:size=4M,provider=badopen,dir={vols}",
        message="open refused",
    )
    assert _state(cluster, "failadd1", vols) == before
    job = cluster.last_job()
    assert "removed disk1" in cluster.log_text(job)
    cluster.ok("instance", "remove", "failadd1")


def test_snapshots(cluster: Cluster) -> None:
    vols = cluster.vol_dir("snap")
    info = _add(cluster, "snap1", vols)
    volume = info["disks"][0]["volume"]
    (vols / f"{volume}.img").write_bytes(b"before the upgrade".ljust(8 << 20, b"\0"))
    out = cluster.ok("instance", "snapshot", "snap1", "--name", "pre-upgrade")
    assert "snapshot pre-upgrade of snap1 taken (disk(s) 0;" in out
    copy = vols / f"{volume}.snap-pre-upgrade"
    assert copy.read_bytes()[:18] == b"before the upgrade"
    [snap] = cluster.instance("snap1")["snapshots"]
    assert (snap["name"], snap["disk"], snap["size"], snap["frozen_by"]) == (
        "pre-upgrade",
        0,
        8,
        "none",
    )
    assert "snapshot pre-upgrade of disk 0: 8 MiB" in cluster.ok("instance", "info", "snap1")

    before = _state(cluster, "snap1", vols)
    cluster.fails(
        "instance",
        "snapshot",
        "snap1",
        "--name",
        "pre-upgrade",
        message="already has a snapshot 'pre-upgrade' of disk0",
    )
    cluster.fails(
        "instance", "snapshot", "snap1", "--disk", "9", "--name", "x", message="has no disk 9"
    )
    assert _state(cluster, "snap1", vols) == before

    # A provider without a snapshot script: refused before anything is paused.
    cluster.ok("instance", "modify", "snap1", "--disk", f"add:size=2M,provider=nosnap,dir={vols}")
    before = _state(cluster, "snap1", vols)
    cluster.fails(
        "instance",
        "snapshot",
        "snap1",
        "--name",
        "second",
        message="provider(s) nosnap on node node1 have no snapshot script",
    )
    assert _state(cluster, "snap1", vols) == before
    # Just the disk that can: fine.
    cluster.ok("instance", "snapshot", "snap1", "--disk", "root", "--name", "second")
    assert [s["name"] for s in cluster.instance("snap1")["snapshots"]] == ["pre-upgrade", "second"]
    cluster.ok("instance", "remove", "snap1")
    assert sorted(p.name for p in vols.iterdir() if ".snap-" in p.name) == []


def test_a_failed_remove_gives_the_disk_back_to_the_guest(cluster: Cluster) -> None:
    vols = cluster.vol_dir("failrm")
    flaky = 'if [ -e "$EXTP_DIR/refuse" ]; then echo "detach refused" >&2; exit 1; fi\n'
    cluster.install_copy("flaky", "sharedfile", {"detach": flaky + 'exec "${0%/*}/detach.real"\n'})
    info = _add(cluster, "failrm1", vols)
    cluster.ok("instance", "modify", "failrm1", "--disk", f"add:size=4M,provider=flaky,dir={vols}")
    before = _state(cluster, "failrm1", vols)
    held = _held(cluster, "failrm1")
    assert len(held) == 2
    (vols / "refuse").touch()
    cluster.fails("instance", "modify", "failrm1", "--disk", "1:remove", message="detach refused")
    (vols / "refuse").unlink()
    assert _state(cluster, "failrm1", vols) == before
    assert _held(cluster, "failrm1") == held
    volume = cluster.instance("failrm1")["disks"][1]["volume"]
    assert sorted(p.name for p in (vols / f"{volume}.open").iterdir()) == ["node1.exclusive"]
    assert "disk1 plugged into the guest again" in cluster.log_text(cluster.last_job())
    cluster.ok("verify")
    cluster.ok("instance", "remove", "failrm1")
    assert info["disks"][0]["volume"] not in {p.stem for p in vols.glob("*.img")}


def test_reboot_and_disks_activated_for_a_repair_through_the_cli(cluster: Cluster) -> None:
    vols = cluster.vol_dir("verbs")
    info = _add(cluster, "verbs1", vols)
    pid = cluster.guest_pid("verbs1")
    out = cluster.ok("instance", "reboot", "verbs1", "--timeout", "5")
    assert "instance verbs1 rebooted on node1" in out
    assert cluster.guest_pid("verbs1") not in (None, pid)

    cluster.ok("instance", "shutdown", "verbs1")
    assert "disks activated" not in cluster.ok("instance", "info", "verbs1")
    out = cluster.ok("instance", "activate-disks", "verbs1")
    volume = info["disks"][0]["volume"]
    assert f"node1:disk0:{vols}/{volume}.img" in out.splitlines()
    assert cluster.guest_pid("verbs1") is None
    assert "disks activated on node1" in cluster.ok("instance", "info", "verbs1")
    # A move would pull the disks from under the repair: refused.
    cluster.fails("instance", "failover", "verbs1", message="deactivate")
    assert "deactivated" in cluster.ok("instance", "deactivate-disks", "verbs1")
    assert "disks activated" not in cluster.ok("instance", "info", "verbs1")
    cluster.ok("instance", "remove", "verbs1")
    assert not [p for p in vols.iterdir() if p.name.endswith(".img")]


def test_a_detached_disk_moves_to_another_instance_with_its_data(cluster: Cluster) -> None:
    vols = cluster.vol_dir("move")
    _add(cluster, "src1", vols)
    _add(cluster, "dst1", vols)
    cluster.ok(
        "instance",
        "modify",
        "dst1",
        "--disk",
        f"add:size=2M,provider=sharedfile,dir={vols},name=scratch",
    )
    cluster.ok(
        "instance",
        "modify",
        "src1",
        "--disk",
        f"add:size=4M,provider=sharedfile,dir={vols},name=data",
    )
    [data] = [d for d in cluster.instance("src1")["disks"] if d["name"] == "data"]
    image = f"{data['volume']}.img"
    assert image in _held(cluster, "src1")
    # Written through the disk the running guest of src1 holds.
    with (vols / image).open("r+b") as f:
        f.write(b"moved between instances")

    # An attached disk does not move: refused, naming it, nothing changed.
    before = (_state(cluster, "src1", vols), _state(cluster, "dst1", vols))
    cluster.fails(
        "instance",
        "modify",
        "dst1",
        "--disk",
        "attach:from=src1,disk=data",
        message="disk 1 of src1 is attached, not detached; detach it first",
    )
    cluster.fails(
        "instance",
        "modify",
        "dst1",
        "--disk",
        "attach:from=nosuch,disk=1",
        message="unknown instance 'nosuch'",
    )
    cluster.fails(
        "instance",
        "modify",
        "dst1",
        "--disk",
        "attach:from=src1",
        message="needs disk=",
    )
    assert (_state(cluster, "src1", vols), _state(cluster, "dst1", vols)) == before

    cluster.ok("instance", "modify", "src1", "--disk", "data:detach")
    out = cluster.ok(
        "instance", "modify", "dst1", "--disk", "attach:from=src1,disk=data,name=moved"
    )
    assert (
        f"dst1: disk 2 (moved) attached from src1 (volume {data['volume']}), 4 MiB; "
        "hot-plugged into the running guest"
    ) in out
    src, dst = cluster.instance("src1"), cluster.instance("dst1")
    assert src["detached_disks"] == []
    assert [d["index"] for d in src["disks"]] == [0]
    [moved] = [d for d in dst["disks"] if d["index"] == 2]
    assert (moved["name"], moved["uuid"], moved["volume"]) == (
        "moved",
        data["uuid"],
        data["volume"],
    )
    assert image in _held(cluster, "dst1")
    assert (vols / image).read_bytes()[:23] == b"moved between instances"
    cluster.ok("verify")

    # Moved back while dst1 is stopped, at src1's next free index, used at its next start.
    cluster.ok("instance", "shutdown", "dst1")
    cluster.ok("instance", "modify", "dst1", "--disk", "moved:detach")
    out = cluster.ok("instance", "modify", "src1", "--disk", "attach:from=dst1,disk=2")
    assert "src1: disk 1 (moved) attached from dst1" in out
    assert (vols / image).read_bytes()[:23] == b"moved between instances"
    assert image in _held(cluster, "src1")
    cluster.ok("instance", "startup", "dst1")
    assert image not in _held(cluster, "dst1")
    cluster.ok("verify")
    cluster.ok("instance", "remove", "src1")
    assert not (vols / image).exists()
    cluster.ok("instance", "remove", "dst1")


def test_a_disk_in_a_pool_not_connected_to_the_receiver_does_not_move(cluster: Cluster) -> None:
    vols = cluster.vol_dir("movepool")
    cluster.ok("cluster", "modify", "--add-pool", "movable", "sharedfile")
    cluster.ok("group", "modify", "default", "--connect-pool", "movable")
    _add(cluster, "psrc1", vols)
    _add(cluster, "pdst1", vols)
    cluster.ok("instance", "modify", "psrc1", "--disk", f"add:size=2M,pool=movable,dir={vols}")
    cluster.ok("instance", "modify", "psrc1", "--disk", "1:detach")
    cluster.ok("group", "modify", "default", "--disconnect-pool", "movable")
    before = (_state(cluster, "psrc1", vols), _state(cluster, "pdst1", vols))
    cluster.fails(
        "instance",
        "modify",
        "pdst1",
        "--disk",
        "attach:from=psrc1,disk=1",
        message="storage pool 'movable', which is not connected to node group 'default' of pdst1",
    )
    assert (_state(cluster, "psrc1", vols), _state(cluster, "pdst1", vols)) == before
    cluster.ok("group", "modify", "default", "--connect-pool", "movable")
    cluster.ok("instance", "modify", "pdst1", "--disk", "attach:from=psrc1,disk=1")
    assert [d["pool"] for d in cluster.instance("pdst1")["disks"]] == [None, "movable"]
    cluster.ok("verify")
    cluster.ok("instance", "remove", "psrc1")
    cluster.ok("instance", "remove", "pdst1")
    assert sorted(p.name for p in vols.glob("*.img")) == []
