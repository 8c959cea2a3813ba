"""Who may touch the daemon's state, checked at start with real daemon processes: a
state or socket directory of another user, or one that group or others may write, is
refused naming the path and its owner; store files are mode 0600, and looser ones left
from before are tightened."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from extjobs.testing.processes import DaemonProcess, write_daemon_config
from tests.harness.cluster import REPO

pytestmark = pytest.mark.spawns

NOBODY = 65534

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="chown to another user needs root")


def config_for(tmp_path: Path, state: Path, socket: Path) -> Path:
    path = tmp_path / "extjobs.toml"
    write_daemon_config(path, state_dir=state, socket=socket, identity_file=tmp_path / "key")
    return path


def run_daemon(config: Path) -> subprocess.CompletedProcess[str]:
    """``extjobs daemon`` that is expected to refuse: it must exit by itself."""
    return subprocess.run(
        [sys.executable, "-m", "extjobs", "daemon", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        check=False,
    )


def private_run_dir(tmp_path: Path) -> Path:
    run = tmp_path / "run"
    run.mkdir(mode=0o700)
    return run


@needs_root
def test_a_state_directory_of_another_user_is_refused_naming_it_and_its_owner(
    tmp_path: Path,
) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    os.chown(state, NOBODY, NOBODY)
    out = run_daemon(config_for(tmp_path, state, private_run_dir(tmp_path) / "api.sock"))
    assert out.returncode == 2, out.stderr
    assert f"state directory {state} is owned by uid {NOBODY}" in out.stderr
    assert "not by uid 0" in out.stderr
    assert "Traceback" not in out.stderr
    # Nothing was created in it, and its mode was left alone.
    assert list(state.iterdir()) == []
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    assert state.stat().st_uid == NOBODY


@pytest.mark.parametrize("mode", [0o770, 0o707, 0o1777], ids=["group", "others", "sticky"])
def test_a_state_directory_others_may_write_is_refused(tmp_path: Path, mode: int) -> None:
    state = tmp_path / "state"
    state.mkdir()
    state.chmod(mode)
    out = run_daemon(config_for(tmp_path, state, private_run_dir(tmp_path) / "api.sock"))
    assert out.returncode == 2, out.stderr
    assert f"state directory {state} (owner uid {os.geteuid()}" in out.stderr
    assert f"mode {stat.S_IMODE(mode):04o}) is writable by group or others" in out.stderr
    assert list(state.iterdir()) == []


@needs_root
def test_a_socket_directory_of_another_user_is_refused(tmp_path: Path) -> None:
    run = private_run_dir(tmp_path)
    os.chown(run, NOBODY, NOBODY)
    out = run_daemon(config_for(tmp_path, tmp_path / "state", run / "api.sock"))
    assert out.returncode == 2, out.stderr
    assert f"socket directory {run} is owned by uid {NOBODY}" in out.stderr
    assert not (run / "api.sock").exists()


def test_store_files_are_0600_and_looser_ones_are_tightened(tmp_path: Path) -> None:
    state = tmp_path / "state"
    socket = private_run_dir(tmp_path) / "api.sock"
    daemon = DaemonProcess(config_for(tmp_path, state, socket), socket, log=tmp_path / "log")
    old = os.umask(0o022)
    try:
        daemon.start(timeout=30)
        try:
            files = {p.name: stat.S_IMODE(p.stat().st_mode) for p in state.iterdir()}
            assert {"extjobs.db", "lock"} <= set(files)
            assert set(files.values()) == {0o600}, files
        finally:
            daemon.stop()
        # A store left readable by others (an older version, a copy by hand) ...
        for path in state.iterdir():
            path.chmod(0o644)
        daemon.start(timeout=30)
        try:
            files = {p.name: stat.S_IMODE(p.stat().st_mode) for p in state.iterdir()}
            assert set(files.values()) == {0o600}, files
        finally:
            daemon.stop()
    finally:
        os.umask(old)
    assert "now mode 0600" in (tmp_path / "log").read_text()
