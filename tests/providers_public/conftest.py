"""Clusters whose providers run stand-in LVM and ZFS commands found first on ``PATH``.

Each module gets one running cluster per node kind (module-scoped). Its daemon's
``[storage] path_env`` puts a private copy of ``tests/data/bin`` first, so providers
written like public ones (``tests/data/providers/lvmstyle`` and ``zfsstyle``, and
copies of them with scripts replaced) call the stand-ins by bare name; the stand-ins
keep their volumes in the copy's ``../state`` (see ``tests/data/bin/README.md``). Each
test creates its own volume group or pool there, so tests cannot see each other's
volumes.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import shutil
import signal
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs

from extjobs.model.remote import DEFAULT_PATH
from tests.harness.cluster import TestCluster, start_cluster
from tests.instances.conftest import Cluster

DATA = Path(__file__).resolve().parents[1] / "data"
STANDINS = DATA / "bin"
TEST_PROVIDERS = DATA / "providers"
MIB = 1024 * 1024


class Tools:
    """A private copy of the stand-in commands, and a view of their state."""

    def __init__(self, root: Path) -> None:
        self.bin = root / "bin"
        self.state = root / "state"
        shutil.copytree(STANDINS, self.bin)
        for sub in ("lvm", "zfs", "dev"):
            (self.state / sub).mkdir(parents=True, exist_ok=True)

    @property
    def path_env(self) -> str:
        """``PATH`` for provider scripts: the stand-ins first, then the system."""
        return f"{self.bin}:{DEFAULT_PATH}"

    @property
    def dev_dir(self) -> Path:
        """Where the stand-ins put the ``/dev/VG/LV`` and ``/dev/zvol/...`` links."""
        return self.state / "dev"

    def make_vg(self, name: str, capacity_mib: int | None = None) -> Path:
        return self._make(self.state / "lvm" / name, capacity_mib)

    def make_pool(self, name: str, capacity_mib: int | None = None) -> Path:
        return self._make(self.state / "zfs" / name, capacity_mib)

    @staticmethod
    def _make(path: Path, capacity_mib: int | None) -> Path:
        path.mkdir()
        if capacity_mib is not None:
            (path / "capacity").write_text(f"{capacity_mib}\n")
        return path

    def leftovers(self, kind: str, name: str) -> dict[str, list[str]]:
        """What the volumes of volume group or pool ``name`` (``kind`` ``lvm`` or ``zfs``)
        left behind: volume files, device links, and loop devices mapping those files
        (deleted ones included). A removed or undone volume must leave nothing."""
        storage = self.state / kind / name
        links = self.dev_dir / name if kind == "lvm" else self.dev_dir / "zvol" / name
        return {
            "volumes": sorted(p.name for p in storage.rglob("*.img")),
            "links": sorted(p.name for p in links.rglob("*")),
            "loops": self.loop_devices(under=storage),
        }

    def loop_devices(self, under: Path | None = None) -> list[str]:
        """Loop devices backed by a file below ``under`` (default: the state directory)."""
        prefix = f"{under or self.state}/"
        out = subprocess.run(
            ["losetup", "--list", "--noheadings", "--output", "NAME,BACK-FILE"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        found = []
        for line in out.splitlines():
            name, _, backing = line.strip().partition(" ")
            if backing.strip().startswith(prefix):
                found.append(name)
        return sorted(found)

    def detach_all(self) -> None:
        for dev in self.loop_devices():
            subprocess.run(["losetup", "-d", dev], check=False)


@attrs.frozen
class Style:
    """One public-provider style: its provider, its storage parameter, where volumes live."""

    provider: str
    param: str

    @property
    def lvm(self) -> bool:
        return self.provider == "lvmstyle"

    def make_storage(self, tools: Tools, name: str, capacity_mib: int | None = None) -> Path:
        """A fresh volume group or pool."""
        if self.lvm:
            return tools.make_vg(name, capacity_mib)
        return tools.make_pool(name, capacity_mib)

    def disk(self, index: int, size: str, storage: str, provider: str | None = None) -> str:
        """A ``--disk`` argument for a volume in ``storage``."""
        return f"{index}:size={size},provider={provider or self.provider},{self.param}={storage}"

    def link(self, tools: Tools, storage: str, volume: str) -> Path:
        """The device path ``attach`` prints for ``volume`` of ``storage``."""
        if self.lvm:
            return tools.dev_dir / storage / volume
        return tools.dev_dir / "zvol" / storage / volume

    @property
    def kind(self) -> str:
        """The stand-ins' name for the storage: ``lvm`` or ``zfs``."""
        return "lvm" if self.lvm else "zfs"

    def image(self, tools: Tools, storage: str, volume: str) -> Path:
        return tools.state / self.kind / storage / f"{volume}.img"

    def leftovers(self, tools: Tools, storage: str) -> dict[str, list[str]]:
        """See :meth:`Tools.leftovers`."""
        return tools.leftovers(self.kind, storage)

    def metadata(self, tools: Tools, storage: str, volume: str) -> str:
        """What ``setinfo`` stored: the volume's LVM tags or its ZFS user property."""
        image = self.image(tools, storage, volume)
        if self.lvm:
            return image.with_suffix(".tags").read_text()
        props = image.with_suffix(".props").read_text()
        return "".join(
            line.removeprefix("ganeti:metadata=") + "\n"
            for line in props.splitlines()
            if line.startswith("ganeti:metadata=")
        )


LVM = Style("lvmstyle", "vg")
ZFS = Style("zfsstyle", "zpool")


class PublicCluster(Cluster):
    """A test cluster whose provider scripts find the stand-ins of ``tools``."""

    def __init__(self, tc: TestCluster, run_dir: Path, tools: Tools) -> None:
        super().__init__(tc, run_dir)
        self.tools = tools

    def install(self, name: str, source: str, scripts: dict[str, str] | None = None) -> Path:
        """Install ``tests/data/providers/<source>`` as ``name`` on every node, configured
        for the stand-ins, with some scripts replaced (bash, ``set -e`` prepended); the
        directory on the last node is returned."""
        dest = Path()
        for node in self.tc.nodes:
            dest = self.tc.install_provider(node, name, TEST_PROVIDERS / source)
            dev = shlex.quote(str(self.tools.dev_dir))
            if source == LVM.provider:
                (dest / "config").write_text(f"DEV_DIR={dev}\n")
            elif source == ZFS.provider:
                zvols = shlex.quote(str(self.tools.dev_dir / "zvol"))
                (dest / "config").write_text(f"ZPOOL=tank\nZVOL_DIR={zvols}\n")
            for script, body in (scripts or {}).items():
                path = dest / script
                path.write_text("#!/bin/bash\nset -e\n" + body)
                path.chmod(0o755)
        return dest

    def steps(self, job: dict[str, Any], action: str, disk: int = 0) -> list[dict[str, Any]]:
        """The job log's data of every run of provider ``action`` on disk ``disk``."""
        return [
            entry["data"]
            for entry in job["log"]
            if entry["type"] == "step"
            and (entry.get("data") or {}).get("action") == action
            and entry["data"].get("disk") == disk
        ]

    def volume_of(self, job: dict[str, Any], disk: int = 0) -> str:
        """The provider-visible volume name of disk ``disk`` created by ``job``."""
        (create,) = self.steps(job, "create", disk)
        return str(create["volume"]["name"])

    def daemon_peak_rss(self) -> int:
        """The daemon's peak resident set size so far (VmHWM), in bytes."""
        assert self.tc.daemon.process is not None
        status = Path(f"/proc/{self.tc.daemon.process.pid}/status").read_text()
        match = re.search(r"^VmHWM:\s+([0-9]+) kB$", status, re.MULTILINE)
        assert match is not None, status
        return int(match.group(1)) * 1024


def is_block_device(path: Path) -> bool:
    try:
        return stat.S_ISBLK(path.stat().st_mode)
    except FileNotFoundError:
        return False


def blockdev_size(path: Path) -> int:
    out = subprocess.run(
        ["blockdev", "--getsize64", str(path)], capture_output=True, text=True, check=True
    )
    return int(out.stdout)


@contextlib.contextmanager
def open_public_cluster(
    kind: str, base: Path, *, storage_extra: str = ""
) -> Iterator[PublicCluster]:
    """A running one-node cluster whose providers see the stand-ins first on ``PATH``.

    ``storage_extra`` is appended to the daemon's ``[storage]`` section (e.g. a
    ``[storage.timeouts]`` table). On exit, guests are killed and loop devices of the
    stand-ins' state detached.
    """
    tools = Tools(base / "tools")
    config_extra = f"[storage]\npath_env = {json.dumps(tools.path_env)}\n{storage_extra}"
    run_dir = Path(tempfile.mkdtemp(prefix="xj", dir="/tmp"))
    try:
        with start_cluster(kind, 1, base, config_extra=config_extra) as tc:
            tc.init()
            cluster = PublicCluster(tc, run_dir, tools)
            cluster.ok("cluster", "modify", "--hypervisor-run-dir", str(run_dir))
            cluster.install(LVM.provider, LVM.provider)
            cluster.install(ZFS.provider, ZFS.provider)
            try:
                yield cluster
            finally:
                _kill_guests(run_dir)
    finally:
        tools.detach_all()
        shutil.rmtree(run_dir, ignore_errors=True)


def _kill_guests(run_dir: Path) -> None:
    for pidfile in run_dir.rglob("*.pid"):
        text = pidfile.read_text().strip()
        if text.isdigit():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(int(text), signal.SIGKILL)
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(text), signal.SIGKILL)
