"""Kills reach what a command started in a session of its own (``setsid``).

A provider script's background child that called ``setsid`` is in neither the script's
process group nor its session; killing the group alone leaves it running. These tests
start such a child (it writes its own pid), hang, and check that a timeout, a cancel and
a leftover kill after a crash all leave nothing of it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from extjobs.errors import CommandTimeoutError
from extjobs.model.config import SSHOptions
from extjobs.model.remote import RemoteCommand
from extjobs.nodes.ssh import SSHRunner
from tests.harness import HarnessNode
from tests.harness.procs import is_alive, wait_line_in_file

PATH = "/usr/local/bin:/usr/bin:/bin"


def _session_of(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[3])


def _escaping_script(node: HarnessNode, *, hold_output: bool) -> tuple[str, Path, Path]:
    """A script that starts a ``setsid`` child (in a new session, its pid in a file),
    then hangs; with ``hold_output`` the child keeps the channel's stdout open too."""
    leader_file = node.root / "leader.pid"
    child_file = node.root / "child.pid"
    redirect = "" if hold_output else " >/dev/null 2>&1"
    body = (
        f"echo $$ > {leader_file}\n"
        f"setsid sh -c 'echo $$ > {child_file}; exec sleep 300'{redirect} &\n"
        "sleep 300\n"
    )
    path = node.root / "escape"
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return str(path), leader_file, child_file


@pytest.fixture
def pid_files() -> Iterator[list[Path]]:
    """Pid files whose processes are SIGKILLed after the test, whatever its outcome."""
    files: list[Path] = []
    yield files
    for path in files:
        with contextlib.suppress(OSError, ValueError):
            os.kill(int(path.read_text()), signal.SIGKILL)


async def _pid_in(path: Path) -> int:
    return int(await anyio.to_thread.run_sync(wait_line_in_file, path))


def _wait_dead(pid: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while is_alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


async def _gone(pid: int) -> bool:
    return await anyio.to_thread.run_sync(_wait_dead, pid)


@pytest.mark.parametrize("hold_output", [False, True], ids=["detached", "holding-stdout"])
async def test_timeout_kills_a_child_that_left_the_session(
    nodes: list[HarnessNode], ssh_options: SSHOptions, hold_output: bool, pid_files: list[Path]
) -> None:
    node = nodes[0]
    script, leader_file, child_file = _escaping_script(node, hold_output=hold_output)
    pid_files += [leader_file, child_file]
    async with SSHRunner(ssh_options) as runner:
        with pytest.raises(CommandTimeoutError):
            await runner.run(
                node.endpoint(), RemoteCommand((script,), env={"PATH": PATH}, timeout=1)
            )
        leader, child = int(leader_file.read_text()), await _pid_in(child_file)
        assert await _gone(leader)
        assert await _gone(child), "the setsid child of the timed-out script still runs"
        assert runner.statistics()["channels_in_use"][node.name] == 0


async def test_cancel_kills_a_child_that_left_the_session(
    nodes: list[HarnessNode], ssh_options: SSHOptions, pid_files: list[Path]
) -> None:
    node = nodes[0]
    script, leader_file, child_file = _escaping_script(node, hold_output=False)
    pid_files += [leader_file, child_file]
    async with SSHRunner(ssh_options) as runner:
        async with anyio.create_task_group() as tg:
            tg.start_soon(runner.run, node.endpoint(), RemoteCommand((script,), env={"PATH": PATH}))
            leader, child = await _pid_in(leader_file), await _pid_in(child_file)
            # The child really left: another session than the script's.
            assert _session_of(child) != _session_of(leader) == leader
            tg.cancel_scope.cancel()
        assert await _gone(leader)
        assert await _gone(child), "the setsid child of the cancelled script still runs"


async def test_leftover_kill_takes_a_child_that_left_the_session(
    nodes: list[HarnessNode], ssh_options: SSHOptions, pid_files: list[Path]
) -> None:
    node = nodes[0]
    script, leader_file, child_file = _escaping_script(node, hold_output=False)
    pid_files += [leader_file, child_file]
    # What a crashed master leaves on a node: the script, leader of its own session as
    # sshd starts it, with nobody on the other end any more.
    process = await anyio.open_process(
        [script],
        env={"PATH": PATH},
        start_new_session=True,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        leader, child = await _pid_in(leader_file), await _pid_in(child_file)
        assert leader == process.pid
        async with SSHRunner(ssh_options) as runner:
            # A pid whose leader runs another program is left alone.
            assert not await runner.kill_leftover(node.endpoint(), leader, "/bin/not-ours")
            assert is_alive(child)
            assert await runner.kill_leftover(node.endpoint(), leader, script)
        assert await process.wait() == -signal.SIGKILL
        assert await _gone(child), "the setsid child of the leftover script still runs"
    finally:
        if process.returncode is None:
            process.kill()
        await process.aclose()
