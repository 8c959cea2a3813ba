"""A remote command left running by a crashed daemon is killed before recovery."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from extjobs.api.client import Client
from tests.harness.cluster import start_cluster
from tests.harness.journal import wait_record
from tests.harness.watch import processes_with_cmdline, wait_gone, wait_processes

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
        [original] = wait_processes(marker)
        # The daemon dies only once the command's process group is on record.
        record = wait_record(tmp_path / "state", job_id, lambda r: r.pgid is not None)
        assert record.pgid == os.getpgid(original)
        c.daemon.kill()
        assert processes_with_cmdline(marker) == [original]  # still running on the node
        c.client.close()
        c.daemon.start()
        c.client = Client(c.daemon.socket)
        assert wait_gone([original], marker) == []
        log = [e["message"] for e in c.client.job(job_id)["log"]]
        assert any("killed 'sleep 271.5' left running by the crashed daemon" in m for m in log)
        c.client.cancel(job_id)
        assert c.wait(job_id)["status"] == "canceled"
