"""A remote command left running by a crashed daemon is killed before recovery."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from extjobs.api.client import Client
from tests.harness.cluster import start_cluster
from tests.integration.test_queue import _processes_with_cmdline

pytestmark = pytest.mark.spawns


def test_leftover_remote_command_is_killed_after_a_crash(tmp_path: Path) -> None:
    marker = "sleep 271.5"
    with start_cluster("embedded", 1, tmp_path) as c:
        c.init()
        job_id = c.client.submit(
            {
                "ops": [
                    {
                        "OP_ID": "OP_TEST_DELAY",
                        "duration": 271.5,
                        "on_master": False,
                        "on_nodes": ["node1"],
                    }
                ]
            }
        )[0]
        deadline = time.monotonic() + 30
        while not _processes_with_cmdline(marker) and time.monotonic() < deadline:
            time.sleep(0.02)
        [original] = _processes_with_cmdline(marker)
        time.sleep(0.2)  # the process group id reaches the journal
        c.daemon.kill()
        assert _processes_with_cmdline(marker) == [original]  # still running on the node
        c.client.close()
        c.daemon.start()
        c.client = Client(c.daemon.socket)
        deadline = time.monotonic() + 30
        while original in _processes_with_cmdline(marker) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert original not in _processes_with_cmdline(marker)
        log = [e["message"] for e in c.client.job(job_id)["log"]]
        assert any("killed 'sleep 271.5' left running by the crashed daemon" in m for m in log)
        c.client.cancel(job_id)
        assert c.wait(job_id)["status"] == "canceled"
