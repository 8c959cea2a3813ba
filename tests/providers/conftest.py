from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from extjobs.extstorage.env import Volume, volume_name


@pytest.fixture
def vol_dir(tmp_path: Path) -> Path:
    """The shared volume directory; its name would break any unquoted shell use."""
    path = tmp_path / "shared vols $(touch PWNED) 'q'"
    path.mkdir()
    return path


def make_volume(provider: str, vol_dir: Path, size: int = 8) -> Volume:
    disk = str(uuid.uuid4())
    return Volume(
        name=volume_name(disk, 0),
        uuid=disk,
        size=size,
        provider=provider,
        params={"dir": str(vol_dir)},
        access="kernelspace" if provider == "loopfile" else "userspace",
        cname="data",
    )


def _loop_devices(image: Path) -> list[str]:
    out = subprocess.run(
        ["losetup", "-n", "-O", "NAME", "-j", str(image)],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    return out.split()


@pytest.fixture
def loop_cleanup(vol_dir: Path) -> Iterator[None]:
    """Detach every loop device left on a volume file of ``vol_dir`` by a failed test."""
    if os.geteuid() != 0:
        pytest.skip("loopfile needs root for losetup (CI runs the tests as root)")
    if shutil.which("losetup") is None:
        pytest.skip("losetup (util-linux) is not installed")
    try:
        yield
    finally:
        for image in vol_dir.glob("*.img"):
            for dev in _loop_devices(image):
                subprocess.run(["losetup", "-d", dev], check=False)


def loop_devices(image: Path) -> list[str]:
    return _loop_devices(image)
