"""The shipped providers, run script by script as a node would run them."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

from extjobs.extstorage.attach import parse_attach_output
from extjobs.extstorage.names import Action

from .conftest import loop_devices, make_volume
from .harness import fails, install, ok, run

pytestmark = pytest.mark.spawns

MiB = 1024 * 1024


@pytest.fixture(
    params=[
        pytest.param("loopfile", marks=pytest.mark.root, id="loopfile"),
        pytest.param("sharedfile", id="sharedfile"),
    ]
)
def provider(request: pytest.FixtureRequest) -> str:
    """Each shipped provider; loopfile skips without root and cleans its loop devices."""
    name: str = request.param
    if name == "loopfile":
        request.getfixturevalue("loop_cleanup")
    return name


def _blockdev_size(dev: str) -> int:
    out = subprocess.run(
        ["blockdev", "--getsize64", dev], capture_output=True, text=True, check=True
    ).stdout
    return int(out)


def _two_nodes(tmp_path: Path, provider: str) -> tuple[Path, Path]:
    return install(tmp_path, provider, "node-a"), install(tmp_path, provider, "node-b")


def _markers(vol_dir: Path, name: str) -> list[str]:
    open_dir = vol_dir / f"{name}.open"
    return sorted(p.name for p in open_dir.iterdir()) if open_dir.exists() else []


@pytest.mark.root
@pytest.mark.usefixtures("loop_cleanup")
def test_loopfile_lifecycle(tmp_path: Path, vol_dir: Path) -> None:
    node_a, node_b = _two_nodes(tmp_path, "loopfile")
    vol = make_volume("loopfile", vol_dir, size=8)
    image = vol_dir / f"{vol.name}.img"

    ok(run(node_a, Action.VERIFY, vol))
    ok(run(node_a, Action.CREATE, vol))
    assert image.stat().st_size == 8 * MiB
    assert image.stat().st_blocks == 0  # sparse
    fails(run(node_a, Action.CREATE, vol), "already exists")

    out = ok(run(node_a, Action.ATTACH, vol))
    info = parse_attach_output(out, provider="loopfile", node="node-a")
    assert info.device is not None
    assert info.uris == {}
    assert stat.S_ISBLK(os.stat(info.device).st_mode)
    assert _blockdev_size(info.device) == 8 * MiB
    assert ok(run(node_a, Action.ATTACH, vol)) == out  # idempotent: same device
    assert loop_devices(image) == [info.device]

    ok(run(node_a, Action.OPEN, vol, open_exclusive=True))
    assert _markers(vol_dir, vol.name) == ["node-a.exclusive"]
    fails(run(node_b, Action.OPEN, vol, open_exclusive=True), "open (exclusive) on node node-a")
    fails(run(node_b, Action.OPEN, vol, open_exclusive=False), "open exclusively on node node-a")
    fails(run(node_b, Action.REMOVE, vol), "still open on node(s) node-a")
    ok(run(node_a, Action.CLOSE, vol))
    ok(run(node_a, Action.CLOSE, vol))  # idempotent
    assert _markers(vol_dir, vol.name) == []

    ok(run(node_a, Action.GROW, vol, new_size=24))
    assert image.stat().st_size == 24 * MiB
    assert _blockdev_size(info.device) == 24 * MiB

    ok(run(node_a, Action.SETINFO, vol, metadata="originstname+web 1"))
    assert (vol_dir / f"{vol.name}.meta").read_text() == "originstname+web_1\n"

    ok(run(node_a, Action.DETACH, vol))
    assert loop_devices(image) == []
    ok(run(node_a, Action.DETACH, vol))  # idempotent

    ok(run(node_a, Action.REMOVE, vol))
    assert not image.exists()
    assert list(vol_dir.iterdir()) == []
    ok(run(node_a, Action.REMOVE, vol))  # already gone
    assert list(tmp_path.rglob("PWNED*")) == []


@pytest.mark.root
@pytest.mark.usefixtures("loop_cleanup")
def test_loopfile_remove_detaches_first(tmp_path: Path, vol_dir: Path) -> None:
    node_a = install(tmp_path, "loopfile", "node-a")
    vol = make_volume("loopfile", vol_dir)
    image = vol_dir / f"{vol.name}.img"
    ok(run(node_a, Action.CREATE, vol))
    ok(run(node_a, Action.ATTACH, vol))
    ok(run(node_a, Action.OPEN, vol, open_exclusive=True))  # own markers do not block
    assert loop_devices(image)
    ok(run(node_a, Action.REMOVE, vol))
    assert loop_devices(image) == []
    assert not image.exists()


@pytest.mark.root
@pytest.mark.usefixtures("loop_cleanup")
def test_loopfile_attach_of_missing_volume_fails(tmp_path: Path, vol_dir: Path) -> None:
    node_a = install(tmp_path, "loopfile", "node-a")
    vol = make_volume("loopfile", vol_dir)
    fails(run(node_a, Action.ATTACH, vol), "does not exist")
    ok(run(node_a, Action.DETACH, vol))


def test_sharedfile_lifecycle(tmp_path: Path, vol_dir: Path) -> None:
    node_a, node_b = _two_nodes(tmp_path, "sharedfile")
    vol = make_volume("sharedfile", vol_dir, size=8)
    image = vol_dir / f"{vol.name}.img"

    ok(run(node_a, Action.VERIFY, vol))
    ok(run(node_a, Action.CREATE, vol))
    assert image.stat().st_size == 8 * MiB
    fails(run(node_a, Action.CREATE, vol), "already exists")

    out = ok(run(node_a, Action.ATTACH, vol))
    info = parse_attach_output(out, provider="sharedfile", node="node-a")
    assert info.device is None
    assert info.uri_for("kvm") == str(image)
    assert ok(run(node_a, Action.ATTACH, vol)) == out

    ok(run(node_a, Action.OPEN, vol, open_exclusive=True))
    fails(run(node_b, Action.OPEN, vol, open_exclusive=True), "open (exclusive) on node node-a")
    ok(run(node_a, Action.CLOSE, vol))

    ok(run(node_a, Action.GROW, vol, new_size=20))
    assert image.stat().st_size == 20 * MiB

    ok(run(node_a, Action.SETINFO, vol, metadata="originstname+vm"))
    assert (vol_dir / f"{vol.name}.meta").read_text() == "originstname+vm\n"

    ok(run(node_a, Action.DETACH, vol))
    ok(run(node_a, Action.DETACH, vol))
    ok(run(node_a, Action.REMOVE, vol))
    assert not image.exists()
    assert list(vol_dir.iterdir()) == []
    assert list(tmp_path.rglob("PWNED*")) == []


def test_migration_open_sequence(tmp_path: Path, vol_dir: Path, provider: str) -> None:
    """DESIGN §4 live migration: S shared, T shared, S closes, T exclusive."""
    source, target = _two_nodes(tmp_path, provider)
    vol = make_volume(provider, vol_dir)
    ok(run(source, Action.CREATE, vol))
    ok(run(source, Action.OPEN, vol, open_exclusive=True))
    ok(run(source, Action.OPEN, vol, open_exclusive=False))
    ok(run(target, Action.OPEN, vol, open_exclusive=False))
    assert _markers(vol_dir, vol.name) == ["node-a.shared", "node-b.shared"]
    fails(run(target, Action.OPEN, vol, open_exclusive=True), "open (shared) on node node-a")
    ok(run(source, Action.CLOSE, vol))
    ok(run(target, Action.OPEN, vol, open_exclusive=True))
    assert _markers(vol_dir, vol.name) == ["node-b.exclusive"]
    fails(run(source, Action.OPEN, vol, open_exclusive=False), "open exclusively on node node-b")


def test_error_cases(tmp_path: Path, vol_dir: Path, provider: str) -> None:
    node = install(tmp_path, provider, "node-a")
    vol = make_volume(provider, vol_dir, size=16)
    fails(run(node, Action.OPEN, vol), "does not exist")
    fails(run(node, Action.GROW, vol, new_size=32), "does not exist")
    ok(run(node, Action.CREATE, vol))
    image = vol_dir / f"{vol.name}.img"
    os.truncate(image, 64 * MiB)  # the file is larger than the size we are told
    fails(run(node, Action.GROW, vol, new_size=32), "refusing to shrink")
    missing = make_volume(provider, tmp_path / "nowhere")
    fails(run(node, Action.VERIFY, missing), "does not exist")
    fails(run(node, Action.CREATE, missing), "does not exist")
    relative = make_volume(provider, Path("relative"))
    fails(run(node, Action.VERIFY, relative), "must be an absolute path")


def test_node_identity_defaults_to_uname(tmp_path: Path, vol_dir: Path) -> None:
    node = install(tmp_path, "sharedfile", "ignored")
    (node / "node-id").unlink()
    vol = make_volume("sharedfile", vol_dir)
    ok(run(node, Action.CREATE, vol))
    ok(run(node, Action.OPEN, vol, open_exclusive=True))
    assert _markers(vol_dir, vol.name) == [f"{os.uname().nodename}.exclusive"]


def test_invalid_node_identity_is_refused(tmp_path: Path, vol_dir: Path) -> None:
    node = install(tmp_path, "sharedfile", "node-a")
    (node / "node-id").write_text("../evil\n")
    vol = make_volume("sharedfile", vol_dir)
    ok(run(node, Action.CREATE, vol))
    fails(run(node, Action.OPEN, vol), "invalid node identity")


@pytest.mark.parametrize("argv0", ["./verify", "verify"])
def test_default_dir_is_named_after_the_provider(tmp_path: Path, argv0: str) -> None:
    """Without a dir parameter the volumes live in /var/lib/extjobs/<provider>."""
    default = Path("/var/lib/extjobs/sharedfile")
    if default.exists():
        pytest.skip(f"{default} exists on this machine")
    node = install(tmp_path, "sharedfile", "node-a")
    env = {"PATH": f"{node}:/usr/bin:/bin", "LC_ALL": "C", "VOL_NAME": "u.ext.disk0"}
    result = subprocess.run([argv0], env=env, cwd=node, capture_output=True, text=True, check=False)
    fails(result, f"volume directory {default} does not exist")
