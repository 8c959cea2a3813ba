"""The watcher with two masters on PostgreSQL: only the leader watches, and a pause made
through the standby holds across a takeover; resumed, the new leader restarts a guest
found down."""

from __future__ import annotations

import os
import signal
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from extjobs.api.client import Client
from extjobs.errors import ExtJobsError
from extjobs.testing.processes import write_daemon_config
from tests.harness.cluster import Daemon
from tests.instances.conftest import open_cluster
from tests.migration.conftest import MoveCluster, install_strict
from tests.watcher.conftest import jobs_for, kill_guest, wait_for, watcher_section

pytestmark = pytest.mark.postgres


def store_section(url: str, name: str) -> str:
    return f'[store]\nurl = "{url}"\nmaster_name = "{name}"\nlease = 3.0\n'


class Masters:
    def __init__(self, cluster: MoveCluster, url: str) -> None:
        tc = cluster.tc
        base = tc.base
        first = tomllib.loads(tc.daemon.config.read_text())
        config = base / "extjobs-m2.toml"
        write_daemon_config(
            config,
            state_dir=base / "state-m2",
            socket=base / "run" / "m2.sock",
            identity_file=Path(first["ssh"]["identity_file"]),
            ssh="connect_timeout = 3.0\n",
            extra=store_section(url, "m2") + watcher_section(),
        )
        self.daemons = {
            "m1": tc.daemon,
            "m2": Daemon(config, base / "run" / "m2.sock", base / "m2.log"),
        }
        self.daemons["m2"].start()

    def watcher(self, name: str) -> dict[str, Any]:
        with Client(self.daemons[name].socket) as client:
            return client.watcher()

    def leader(self) -> str:
        def one() -> str | None:
            leads = []
            for name, daemon in self.daemons.items():
                if daemon.process is None or daemon.process.poll() is not None:
                    continue
                try:
                    with Client(daemon.socket) as client:
                        if client.masters()["leads"]:
                            leads.append(name)
                except ExtJobsError:
                    return None
            return leads[0] if len(leads) == 1 else None

        return wait_for("a single leader", one, timeout=30)


@pytest.fixture(scope="module")
def masters(
    tmp_path_factory: pytest.TempPathFactory, postgres_server: Any
) -> Iterator[tuple[MoveCluster, Masters]]:
    url = postgres_server.create_database()
    base = tmp_path_factory.mktemp("watcher-ha")
    sections = store_section(url, "m1") + watcher_section()
    with open_cluster("embedded", base, nodes=2, providers=(), sections=sections) as plain:
        cluster = MoveCluster(plain.tc, plain.run_dir)
        install_strict(cluster)
        pair = Masters(cluster, url)
        try:
            yield cluster, pair
        finally:
            for daemon in pair.daemons.values():
                if daemon.process is not None and daemon.process.poll() is None:
                    daemon.stop()


def point_at(cluster: MoveCluster, pair: Masters, name: str) -> None:
    tc = cluster.tc
    tc.client.close()
    tc.daemon = pair.daemons[name]
    tc.client = Client(tc.daemon.socket)


def test_only_the_leader_watches_and_a_pause_survives_a_takeover(
    masters: tuple[MoveCluster, Masters],
) -> None:
    cluster, pair = masters
    leader = pair.leader()
    standby = "m2" if leader == "m1" else "m1"
    point_at(cluster, pair, leader)
    cluster.add("ha1", "node1", cluster.vol_dir("ha1"), disks=1)
    wait_for("a round of the leader", lambda: pair.watcher(leader)["rounds"] > 0)
    assert pair.watcher(leader)["leader"] is True
    assert pair.watcher(standby)["leader"] is False
    # Paused through the standby: the request reaches the leader, the pause the store.
    point_at(cluster, pair, standby)
    assert "watcher paused until resumed" in cluster.ok("watcher", "pause")
    assert pair.watcher(standby)["pause"] == {"until": None, "remaining": None}

    killed = pair.daemons[leader]
    assert killed.process is not None
    os.kill(killed.process.pid, signal.SIGKILL)
    killed.process.wait()
    assert pair.leader() == standby
    point_at(cluster, pair, standby)
    kill_guest(cluster, "ha1", "node1")
    wait_for(
        "the new leader to see ha1 down",
        lambda: (
            (cluster.tc.client.instance("ha1", refresh=20)["observed"] or {}).get("state")
            == "ERROR_down"
        ),
    )
    status = pair.watcher(standby)
    assert status["leader"] is True
    assert status["pause"] is not None
    for _ in range(3):
        assert cluster.tc.client.instance("ha1", refresh=20)["refreshed"] is True
    assert jobs_for(cluster, "OP_INSTANCE_STARTUP", "ha1") == []
    cluster.ok("watcher", "resume")
    job = wait_for(
        "the restart",
        lambda: next(
            (
                j
                for j in jobs_for(cluster, "OP_INSTANCE_STARTUP", "ha1")
                if j["status"] == "success"
            ),
            None,
        ),
    )
    assert "found down on node1" in job["reason"]
    killed.start()
    cluster.ok("instance", "remove", "ha1")
