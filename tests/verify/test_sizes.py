"""verify checks every configured disk through its provider: there, and of its size.

Real provider scripts: ``sharedfile`` (userspace only: the size of the file its attach
names) on both node kinds, and ``loopfile`` (a loop device: its block device size) where
root and losetup are available. The volumes are changed behind extjobs's back, the way
an operator or a storage failure would.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from tests.instances.conftest import (
    KINDS,
    Cluster,
    loop_devices_of,
    loop_devices_usable,
    needs_loop,
    open_cluster,
)

pytestmark = pytest.mark.spawns

MIB = 1024 * 1024

T = TypeVar("T", bound=Callable[..., None])


def loop_devices(test: T) -> T:
    """Marks a test that needs loop devices (root and losetup)."""
    for mark in needs_loop:
        test = mark(test)
    return test


@pytest.fixture(scope="module", params=KINDS)
def cluster(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    base = tmp_path_factory.mktemp(f"sizes-{request.param}")
    providers = ("sharedfile", "loopfile") if loop_devices_usable() else ("sharedfile",)
    with open_cluster(request.param, base, nodes=2, providers=providers) as c:
        yield c


def findings(cluster: Cluster) -> list[dict[str, Any]]:
    out = cluster.cli("verify", "--output", "json")
    assert out.returncode in (0, 1), out.stderr
    return list(json.loads(out.stdout)["findings"])


def image(cluster: Cluster, instance: str, vols: Path, disk: int = 0) -> Path:
    return vols / f"{cluster.instance(instance)['disks'][disk]['volume']}.img"


def add(cluster: Cluster, name: str, vols: Path, provider: str, *extra: str) -> None:
    cluster.ok(
        "instance",
        "add",
        name,
        "-n",
        "node1",
        "--disk",
        f"0:size=4M,provider={provider},dir={vols}",
        *extra,
    )


def test_a_volume_grown_behind_the_configuration_is_reported(cluster: Cluster) -> None:
    vols = cluster.vol_dir("grown")
    add(cluster, "sz1", vols, "sharedfile")
    assert findings(cluster) == []
    os.truncate(image(cluster, "sz1", vols), 8 * MIB)
    [found] = findings(cluster)
    assert found["kind"] == "size-mismatch"
    assert "disk 0 of sz1" in found["message"]
    assert "is 8388608 bytes (8 MiB) on node1" in found["message"]
    assert "the configuration says 4 MiB" in found["message"]
    assert "grow-disk sz1 0 8M --absolute" in found["message"]
    assert found["repair"] is None
    # What the finding advises records the size, and the cluster verifies again.
    cluster.ok("instance", "grow-disk", "sz1", "0", "8M", "--absolute")
    assert findings(cluster) == []
    cluster.ok("instance", "remove", "sz1")


def test_a_volume_smaller_than_configured_is_reported_and_left_detached(
    cluster: Cluster,
) -> None:
    vols = cluster.vol_dir("shrunk")
    add(cluster, "sz2", vols, "sharedfile", "--no-start")
    os.truncate(image(cluster, "sz2", vols), 2 * MIB)
    [found] = findings(cluster)
    assert found["kind"] == "size-mismatch"
    assert "is 2097152 bytes (2 MiB) on node1" in found["message"]
    assert "the guest cannot reach the end it was given" in found["message"]
    # The instance is down: verify attached its disk only to look, and detached it again
    # (the journal's ledger and the provider agree: nothing attached anywhere).
    assert [f for f in findings(cluster) if f["kind"] != "size-mismatch"] == []
    os.truncate(image(cluster, "sz2", vols), 4 * MIB)
    assert findings(cluster) == []
    cluster.ok("instance", "remove", "sz2")


def test_a_volume_gone_from_the_storage_is_reported(cluster: Cluster) -> None:
    vols = cluster.vol_dir("gone")
    add(cluster, "sz3", vols, "sharedfile")
    img = image(cluster, "sz3", vols)
    img.unlink()
    [found] = findings(cluster)
    assert found["kind"] == "missing-volume"
    assert "disk 0 of sz3" in found["message"]
    assert "cannot be attached on node1" in found["message"]
    # The provider's own words say why.
    assert "does not exist" in found["message"]
    with img.open("wb") as f:
        f.truncate(4 * MIB)
    assert findings(cluster) == []
    cluster.ok("instance", "remove", "sz3")


@loop_devices
def test_a_loop_device_larger_than_configured_is_reported(cluster: Cluster) -> None:
    vols = cluster.vol_dir("loop-grown")
    add(cluster, "sz4", vols, "loopfile")
    img = image(cluster, "sz4", vols)
    [device] = loop_devices_of(vols)
    os.truncate(img, 8 * MIB)
    subprocess.run(["losetup", "-c", device], check=True)
    [found] = findings(cluster)
    assert found["kind"] == "size-mismatch"
    assert f"is 8388608 bytes (8 MiB) on node1 ({device})" in found["message"]
    # The running instance keeps its disk attached where it was.
    assert loop_devices_of(vols) == [device]
    cluster.ok("instance", "grow-disk", "sz4", "0", "8M", "--absolute")
    assert findings(cluster) == []
    cluster.ok("instance", "remove", "sz4")
    assert loop_devices_of(vols) == []


@loop_devices
def test_a_vanished_backing_file_is_reported(cluster: Cluster) -> None:
    vols = cluster.vol_dir("loop-gone")
    add(cluster, "sz5", vols, "loopfile", "--no-start")
    img = image(cluster, "sz5", vols)
    os.truncate(img, 6 * MIB)
    [found] = findings(cluster)
    assert found["kind"] == "size-mismatch"
    # Attached to be measured as a block device, then detached again: it is down.
    assert loop_devices_of(vols) == []
    img.unlink()
    [found] = findings(cluster)
    assert found["kind"] == "missing-volume"
    assert "disk 0 of sz5" in found["message"]
    assert "does not exist" in found["message"]
    assert loop_devices_of(vols) == []
    cluster.ok("instance", "remove", "sz5")
