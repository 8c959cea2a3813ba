"""A fence command still running when the daemon is SIGKILLed is killed at recovery.

The fence runs on the master, so no node can kill it: the restarted daemon finds it
from its journal entry (program, arguments, environment, start time), kills it with its
session and descendants, and the failover then does what its recovery promises for an
interrupted fence: it runs again from the start towards the same target.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from extjobs.api.client import Client
from extjobs.engine.local import find_local_leftovers, kill_local_leftover, run_local_process
from extjobs.errors import CommandTimeoutError
from tests.harness.procs import is_alive, wait_line_in_file
from tests.instances.conftest import open_cluster

pytestmark = pytest.mark.spawns

PATH = "/usr/local/bin:/usr/bin:/bin"

#: First run: start a helper in a session of its own, then hang, like a fence whose
#: power switch never answers. Later runs: record the fence and succeed.
FENCE = """#!/bin/sh
state=$1
if [ ! -e "$state/first.pid" ]; then
  setsid sh -c 'echo $$ > "$1/helper.pid"; exec sleep 300' sh "$state" >/dev/null 2>&1 &
  echo $$ > "$state/first.pid"
  sleep 300
  exit 0
fi
echo "$EXTJOBS_NODE" >> "$state/fenced"
"""


def _wait_dead(pid: int, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while is_alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


@pytest.fixture
def state(tmp_path: Path) -> Iterator[Path]:
    """The fence's state directory; whatever it started is SIGKILLed after the test."""
    directory = tmp_path / "fence-state"
    directory.mkdir()
    yield directory
    for name in ("first.pid", "helper.pid"):
        with contextlib.suppress(OSError, ValueError):
            os.kill(int((directory / name).read_text()), signal.SIGKILL)


def test_a_fence_left_running_by_a_crash_is_killed_and_the_failover_finishes(
    tmp_path: Path, state: Path
) -> None:
    fence = tmp_path / "fence.sh"
    fence.write_text(FENCE)
    fence.chmod(0o755)
    with open_cluster("embedded", tmp_path / "cluster", nodes=2) as c:
        vols = c.vol_dir("fence")
        c.ok(
            "instance",
            "add",
            "fenced1",
            "-n",
            "node1",
            "--no-start",
            "--disk",
            f"0:size=4M,provider=sharedfile,dir={vols}",
        )
        c.ok("node", "modify", "node1", "--fence-command", f"{fence} {state}")
        c.ok("node", "modify", "node1", "--offline", "yes")
        [job_id] = c.tc.client.submit(
            {
                "ops": [
                    {
                        "OP_ID": "OP_INSTANCE_FAILOVER",
                        "instance_name": "fenced1",
                        "target_node": "node2",
                    }
                ]
            }
        )
        fence_pid = int(wait_line_in_file(state / "first.pid", timeout=30))
        helper_pid = int(wait_line_in_file(state / "helper.pid", timeout=30))
        c.tc.daemon.kill()
        # The daemon is gone; its fence run goes on.
        assert is_alive(fence_pid)
        assert is_alive(helper_pid)
        c.tc.client.close()
        c.tc.daemon.start()
        c.tc.client = Client(c.tc.daemon.socket)
        job = c.tc.wait(job_id)
        log = c.log_text(job)
        assert job["status"] == "success", log
        assert _wait_dead(fence_pid), "the fence left by the crashed daemon still runs"
        assert _wait_dead(helper_pid), "the fence's setsid helper still runs"
        assert "master: killed 'fence node node1' left running by the crashed daemon" in log
        assert "interrupted before node1 released the disks; running it again towards node2" in (
            log
        )
        # The second run fenced node1, then the instance moved.
        assert (state / "fenced").read_text() == "node1\n"
        assert c.instance("fenced1")["primary"] == "node2"


async def test_a_fence_run_that_times_out_is_killed_with_its_setsid_helper(
    tmp_path: Path, state: Path
) -> None:
    fence = tmp_path / "fence.sh"
    fence.write_text(FENCE)
    fence.chmod(0o755)
    with pytest.raises(CommandTimeoutError):
        await run_local_process([str(fence), str(state)], {"PATH": PATH}, timeout=1)
    fence_pid = int(wait_line_in_file(state / "first.pid"))
    helper_pid = int(wait_line_in_file(state / "helper.pid"))
    assert _wait_dead(fence_pid)
    assert _wait_dead(helper_pid), "the timed-out fence's setsid helper still runs"


#: Starts argv[2:] with the environment in argv[1] (JSON) in a session of its own, prints
#: its pid and exits: the run is nobody's child, like one whose daemon died.
ORPHAN = """
import json, subprocess, sys
run = subprocess.Popen(sys.argv[2:], env=json.loads(sys.argv[1]), start_new_session=True,
                       stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
print(run.pid)
"""


def test_only_a_run_matching_the_journal_entry_is_a_leftover(tmp_path: Path, state: Path) -> None:
    fence = tmp_path / "fence.sh"
    fence.write_text(FENCE)
    fence.chmod(0o755)
    argv, env = [str(fence), str(state)], {"PATH": PATH, "EXTJOBS_NODE": "node1"}
    started = time.time()
    out = subprocess.run(
        [sys.executable, "-c", ORPHAN, json.dumps(env), *argv],
        capture_output=True,
        text=True,
        check=True,
    )
    pid = int(out.stdout)
    assert int(wait_line_in_file(state / "first.pid")) == pid
    helper_pid = int(wait_line_in_file(state / "helper.pid"))
    # Started through its #! line: the kernel shows /bin/sh first; still a match.
    assert find_local_leftovers(argv, env, started=started) == [pid]
    assert find_local_leftovers(argv, {**env, "EXTJOBS_NODE": "node2"}, started=started) == []
    assert find_local_leftovers([str(fence), "/elsewhere"], env, started=started) == []
    # Started before the journal entry: another run, not this one.
    assert find_local_leftovers(argv, env, started=started + 60) == []
    assert kill_local_leftover(argv, env, started=started) == 1
    assert _wait_dead(pid)
    assert _wait_dead(helper_pid)
