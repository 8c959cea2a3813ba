"""The backends' shell scripts, run locally exactly as a node runs them (clean env).

These need no SSH: they check the node-side behaviour of start, status and stop.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from extjobs.hypervisors import get_hypervisor
from extjobs.hypervisors.base import RuntimeStatus, parse_node_info, parse_status
from extjobs.hypervisors.fake import NODE_MEMORY_FILE
from extjobs.model.cluster import Instance
from extjobs.model.remote import RemoteCommand
from tests.harness.procs import is_alive

pytestmark = pytest.mark.spawns


def run(cmd: RemoteCommand, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        cmd.argv,
        env=cmd.env_dict,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=cmd.timeout,
        check=False,
        stdin=subprocess.DEVNULL,
    )


def open_files(pid: int) -> set[str]:
    fd_dir = Path(f"/proc/{pid}/fd")
    return {os.readlink(fd_dir / fd) for fd in os.listdir(fd_dir)}


@pytest.fixture
def home(tmp_path: Path) -> Iterator[Path]:
    """A node's login directory; every guest started in it is stopped afterwards."""
    yield tmp_path
    for pidfile in tmp_path.rglob("*.pid"):
        text = pidfile.read_text().strip()
        if text.isdigit():
            for sig in ("-TERM", "-KILL"):
                subprocess.run(["kill", sig, "--", f"-{text}"], capture_output=True, check=False)
                subprocess.run(["kill", sig, text], capture_output=True, check=False)


def test_fake_guest_holds_its_disks_until_stopped(home: Path) -> None:
    hv = get_hypervisor("fake")
    inst = Instance(name="web1", primary="n1", uuid="0f0f-1")
    disks = [home / "vol with space.img", home / "vol2.img"]
    for disk in disks:
        disk.write_bytes(b"\0" * 4096)
    started = run(hv.start_command(inst, [str(d) for d in disks], "run/n1", timeout=30), home)
    assert started.returncode == 0, started.stderr
    status = parse_status(started.stdout, node="n1")
    assert status.running
    assert status.pid is not None
    assert status.run_dir == str((home / "run" / "n1").resolve())
    assert {str(d) for d in disks} <= open_files(status.pid)
    # Idempotent: starting again reports the same process.
    again = run(hv.start_command(inst, [str(d) for d in disks], "run/n1", timeout=30), home)
    assert parse_status(again.stdout, node="n1") == status
    assert (
        parse_status(run(hv.status_command("0f0f-1", "run/n1", timeout=5), home).stdout, node="n1")
        == status
    )

    stopped = run(hv.stop_command("0f0f-1", "run/n1", grace=5, timeout=30), home)
    assert stopped.returncode == 0, stopped.stderr
    assert not is_alive(status.pid)
    assert not (home / "run" / "n1" / "0f0f-1.pid").exists()
    after = run(hv.status_command("0f0f-1", "run/n1", timeout=5), home).stdout
    assert not parse_status(after, node="n1").running
    # Stopping what does not run succeeds.
    assert run(hv.stop_command("0f0f-1", "run/n1", grace=5, timeout=30), home).returncode == 0


def test_fake_start_fails_for_a_missing_disk(home: Path) -> None:
    hv = get_hypervisor("fake")
    inst = Instance(name="web1", primary="n1", uuid="0f0f-2")
    result = run(hv.start_command(inst, [str(home / "nope.img")], "run/n1", timeout=30), home)
    assert result.returncode == 1
    assert "does not exist on this node" in result.stderr


def test_a_reused_pid_is_not_taken_for_the_guest(home: Path) -> None:
    hv = get_hypervisor("fake")
    rundir = home / "run" / "n1"
    rundir.mkdir(parents=True)
    # Our own pid: alive, but its command line does not name the key.
    (rundir / "0f0f-3.pid").write_text(f"{os.getpid()}\n")
    status = parse_status(
        run(hv.status_command("0f0f-3", "run/n1", timeout=5), home).stdout, node="n1"
    )
    assert status == RuntimeStatus(False, None, str(rundir.resolve()))
    assert run(hv.stop_command("0f0f-3", "run/n1", grace=1, timeout=10), home).returncode == 0
    assert is_alive(os.getpid())


def _qmp(path: Path, *commands: str) -> list[object]:
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(10)
        sock.connect(str(path))
        stream = sock.makefile("rwb")
        json.loads(stream.readline())
        out = []
        for execute in ("qmp_capabilities", *commands):
            stream.write(json.dumps({"execute": execute}).encode() + b"\n")
            stream.flush()
            while "event" in (reply := json.loads(stream.readline())):
                pass
            out.append(reply["return"])
        return out[1:]


@pytest.mark.kvm
@pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None, reason="qemu is not installed")
def test_kvm_guest_starts_daemonised_with_a_qmp_socket(tmp_path: Path) -> None:
    import tempfile

    home = Path(tempfile.mkdtemp(prefix="xjq", dir="/tmp"))  # short: socket paths <= 107
    try:
        hv = get_hypervisor("kvm")
        inst = Instance(name="vm1", primary="n1", hypervisor="kvm", memory=32, uuid="k-1")
        disk = home / "disk.img"
        disk.write_bytes(b"\0" * (1 << 20))
        started = run(hv.start_command(inst, [str(disk)], "n1", timeout=60), home)
        assert started.returncode == 0, started.stderr
        status = parse_status(started.stdout, node="n1")
        assert status.pid is not None
        assert is_alive(status.pid)
        socket_path = hv.control_socket("k-1", status)
        assert socket_path == f"{home.resolve()}/n1/k-1.qmp"
        blocks = _qmp(Path(socket_path), "query-block")[0]
        assert isinstance(blocks, list)
        assert [b["device"] for b in blocks] == ["disk0"]
        stopped = run(hv.stop_command("k-1", "n1", grace=5, timeout=30), home)
        assert stopped.returncode == 0, stopped.stderr
        deadline = time.monotonic() + 10
        while is_alive(status.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not is_alive(status.pid)
    finally:
        for pidfile in home.rglob("*.pid"):
            subprocess.run(["kill", pidfile.read_text().strip()], check=False)
        shutil.rmtree(home, ignore_errors=True)


# -- node info: the memory a node offers guests ---------------------------------------------


def _meminfo_total_mib() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) // 1024
    raise AssertionError("no MemTotal in /proc/meminfo")


@pytest.mark.parametrize("hv", ["fake", "kvm"])
def test_node_info_reports_the_nodes_meminfo(tmp_path: Path, hv: str) -> None:
    result = run(get_hypervisor(hv).node_info_command(str(tmp_path), timeout=10), tmp_path)
    assert result.returncode == 0, result.stderr
    info = parse_node_info(result.stdout, node="n1")
    assert info.memory_total == _meminfo_total_mib()
    assert 0 < info.memory_free <= info.memory_total


def test_a_fake_node_offers_the_memory_its_run_directory_says(tmp_path: Path) -> None:
    command = get_hypervisor("fake").node_info_command("run/n1", timeout=10)
    (tmp_path / "run" / "n1").mkdir(parents=True)
    (tmp_path / "run" / "n1" / NODE_MEMORY_FILE).write_text("768\n")
    result = run(command, tmp_path)
    assert result.returncode == 0, result.stderr
    info = parse_node_info(result.stdout, node="n1")
    assert (info.memory_total, info.memory_free) == (768, 768)
    (tmp_path / "run" / "n1" / NODE_MEMORY_FILE).write_text("lots\n")
    result = run(command, tmp_path)
    assert result.returncode == 1
    assert "holds lots, not a number of MiB" in result.stderr


def test_the_guest_listing_names_every_live_guest_and_nothing_else(home: Path) -> None:
    from extjobs.hypervisors.base import guests_command, parse_guests

    hv = get_hypervisor("fake")
    assert parse_guests(run(guests_command("run/n1", timeout=5), home).stdout, node="n1") == {}
    pids = {}
    for uuid in ("aaaa-1", "bbbb-2"):
        inst = Instance(name=f"i{uuid}", primary="n1", uuid=uuid)
        started = run(hv.start_command(inst, [], "run/n1", timeout=30), home)
        assert started.returncode == 0, started.stderr
        pids[uuid] = parse_status(started.stdout, node="n1").pid
    rundir = home / "run" / "n1"
    # A stale pid file (a pid reused by a process that is not the guest) is not listed.
    (rundir / "cccc-3.pid").write_text(f"{os.getpid()}\n")
    listed = parse_guests(run(guests_command("run/n1", timeout=5), home).stdout, node="n1")
    # (The fixture's teardown kills what pid files name: not this process.)
    (rundir / "cccc-3.pid").unlink()
    assert listed == pids
    assert run(hv.stop_command("aaaa-1", "run/n1", grace=5, timeout=30), home).returncode == 0
    listed = parse_guests(run(guests_command("run/n1", timeout=5), home).stdout, node="n1")
    assert listed == {"bbbb-2": pids["bbbb-2"]}
