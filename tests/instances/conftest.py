"""Clusters for the instance tests: embedded and OpenSSH nodes, one cluster per module.

Each module gets one running cluster per node kind (module-scoped, so the cases of a
module share it); each test works on its own instance names and its own volume
directory, so cases cannot see each other's volumes.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.harness.cluster import PROVIDERS, TestCluster, start_cluster

KINDS = [
    pytest.param("embedded", id="embedded"),
    pytest.param("openssh", id="openssh", marks=pytest.mark.openssh),
]


def loop_devices_usable() -> bool:
    return os.geteuid() == 0 and shutil.which("losetup") is not None


needs_loop = [
    pytest.mark.root,
    pytest.mark.skipif(
        not loop_devices_usable(), reason="loopfile needs root and losetup (CI runs as root)"
    ),
]


class Cluster:
    """A test cluster plus helpers for instances, volumes and provider copies."""

    def __init__(self, tc: TestCluster, run_dir: Path) -> None:
        self.tc = tc
        self.run_dir = run_dir
        self._vols = 0

    # -- plumbing -----------------------------------------------------------------------

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return self.tc.cli(*args)

    def ok(self, *args: str) -> str:
        result = self.tc.cli(*args)
        assert result.returncode == 0, (args, result.stdout[-3000:], result.stderr[-3000:])
        return result.stdout

    def fails(self, *args: str, message: str) -> subprocess.CompletedProcess[str]:
        result = self.tc.cli(*args)
        assert result.returncode != 0, (args, result.stdout[-3000:])
        text = result.stdout + result.stderr
        assert message in " ".join(text.split()), text[-3000:]
        return result

    def last_job(self) -> dict[str, Any]:
        jobs = self.tc.client.jobs()
        return self.tc.client.job(jobs[-1]["id"])

    def log_text(self, job: dict[str, Any]) -> str:
        return "\n".join(entry["message"] for entry in job["log"])

    def vol_dir(self, label: str) -> Path:
        """A fresh shared volume directory (every node of the test cluster sees it)."""
        self._vols += 1
        path = self.tc.base / "vols" / f"{self._vols}-{label}"
        path.mkdir(parents=True)
        return path

    # -- instances ----------------------------------------------------------------------

    def instance(self, name: str) -> dict[str, Any]:
        return self.tc.client.instance(name)

    def instance_names(self) -> list[str]:
        return [i["name"] for i in self.tc.client.instances()]

    def guest_pid(self, name: str, node: str = "node1") -> int | None:
        """The pid in the instance's pid file on ``node``, if the file exists."""
        uuid = self.instance(name)["uuid"]
        pidfile = self.run_dir / node / f"{uuid}.pid"
        if not pidfile.exists():
            return None
        return int(pidfile.read_text().strip())

    # -- providers ----------------------------------------------------------------------

    def install_copy(self, name: str, source: str, scripts: dict[str, str] | None = None) -> None:
        """Install provider ``source`` as ``name`` on every node, with some scripts replaced.

        A replaced script may call the original as ``"${0%/*}/<script>.real"``.
        """
        for node in self.tc.nodes:
            dest = self.tc.install_provider(node, name, PROVIDERS / source)
            for script, body in (scripts or {}).items():
                original = dest / script
                if original.exists():
                    original.rename(dest / f"{script}.real")
                original.write_text("#!/bin/sh\n" + body)
                original.chmod(0o755)


def loop_devices_of(directory: Path) -> list[str]:
    """Loop devices backed by any volume file in ``directory``."""
    found = []
    for image in directory.glob("*.img"):
        out = subprocess.run(
            ["losetup", "-n", "-O", "NAME", "-j", str(image)],
            capture_output=True,
            text=True,
            check=False,
        ).stdout
        found += out.split()
    return found


def leftovers(directory: Path) -> list[str]:
    """Files a removed volume must not leave behind in its directory."""
    return sorted(p.name for p in directory.iterdir())


@contextlib.contextmanager
def open_cluster(
    kind: str,
    base: Path,
    *,
    nodes: int = 1,
    providers: tuple[str, ...] = ("sharedfile",),
    sections: str = "",
) -> Iterator[Cluster]:
    """A running cluster whose hypervisor run directory is short and private."""
    run_dir = Path(tempfile.mkdtemp(prefix="xj", dir="/tmp"))
    try:
        with start_cluster(kind, nodes, base, sections=sections) as tc:
            tc.init(providers=providers)
            cluster = Cluster(tc, run_dir)
            cluster.ok("cluster", "modify", "--hypervisor-run-dir", str(run_dir))
            try:
                yield cluster
            finally:
                _stop_guests(run_dir)
                for image in (base / "vols").rglob("*.img") if (base / "vols").exists() else []:
                    for dev in loop_devices_of(image.parent):
                        subprocess.run(["losetup", "-d", dev], check=False)
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)


def _stop_guests(run_dir: Path) -> None:
    for pidfile in run_dir.rglob("*.pid"):
        text = pidfile.read_text().strip()
        if re.fullmatch(r"[0-9]+", text):
            subprocess.run(["kill", "-KILL", "--", f"-{text}"], capture_output=True, check=False)
            subprocess.run(["kill", "-KILL", text], capture_output=True, check=False)


def open_files(pid: int) -> set[str]:
    fd_dir = Path(f"/proc/{pid}/fd")
    return {os.readlink(fd_dir / fd) for fd in os.listdir(fd_dir)}
