"""Leadership in the metrics: two masters on the harness's PostgreSQL, each scraped on
its own socket; the leader says 1 and its epoch, the standby 0 and no job gauges; when
the leader is killed the other one takes over with a later epoch, and runs jobs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.ha.test_takeover import Pair, store_section
from tests.instances.conftest import open_cluster
from tests.integration.test_metrics import Scrape, scrape_socket

pytestmark = [pytest.mark.spawns, pytest.mark.postgres]


def test_leader_and_epoch_follow_the_election(tmp_path: Path, postgres_server: Any) -> None:
    url = postgres_server.create_database()
    with open_cluster(
        "embedded", tmp_path, nodes=1, providers=(), sections=store_section(url, "m1")
    ) as c:
        pair = Pair(c, url, crash_file=False)
        try:
            leader = pair.wait_leader()
            standby = pair.other(leader)
            with pair.client(leader) as client:
                epoch = client.masters()["lease"]["epoch"]
            leads = scrape_socket(pair.daemons[leader].socket)
            stands_by = scrape_socket(pair.daemons[standby].socket)
            assert leads("extjobs_leader") == 1
            assert leads("extjobs_leader_epoch") == epoch
            assert leads.has("extjobs_queue_depth")
            assert stands_by.has("extjobs_leader")
            assert stands_by("extjobs_leader") == 0
            assert not stands_by.has("extjobs_leader_epoch")
            assert not stands_by.has("extjobs_jobs")
            assert not stands_by.has("extjobs_queue_depth")

            pair.daemons[leader].kill()
            assert pair.wait_leader() == standby
            pair.point_cluster_at(standby)
            delay = {"OP_ID": "OP_TEST_DELAY", "duration": 0, "on_nodes": ["node1"]}
            assert c.tc.run_job([delay])["status"] == "success"
            took_over: Scrape = scrape_socket(pair.daemons[standby].socket)
            assert took_over("extjobs_leader") == 1
            assert took_over("extjobs_leader_epoch") > epoch
            assert (
                took_over("extjobs_jobs_finished_total", opcode="OP_TEST_DELAY", status="success")
                == 1
            )
            assert took_over.has("extjobs_queue_depth")
            assert took_over("extjobs_node_reachable", node="node1") == 1

            # The former leader, started again, stands by.
            pair.daemons[leader].start()
            back = scrape_socket(pair.daemons[leader].socket)
            assert back("extjobs_leader") == 0
        finally:
            for daemon in pair.daemons.values():
                if daemon.process is not None and daemon.process.poll() is None:
                    daemon.stop()
