"""Two master daemons on the harness's PostgreSQL and embedded SSH nodes: the leader is
SIGKILLed, or paused, in the middle of a job; the standby takes over, the job ends as it
would after a restart, nothing is attached twice, no volume leaks, and verify is clean.
Submissions and watches work through the standby too."""

from __future__ import annotations

import json
import os
import signal
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from extjobs.api.client import Client
from extjobs.errors import ExtJobsError
from extjobs.testing.processes import write_daemon_config
from tests.crash.test_crash_matrix import STRICT, add_op, check_consistent, reset
from tests.harness.cluster import Daemon
from tests.instances.conftest import Cluster, open_cluster

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

LEASE = 3.0  # the default: robust on a loaded two-core machine
FINAL = ("success", "error", "canceled")


def store_section(url: str, name: str) -> str:
    return f'[store]\nurl = "{url}"\nmaster_name = "{name}"\nlease = {LEASE}\n'


class Pair:
    """The two masters of a cluster; ``leader`` and ``standby`` as they are now."""

    def __init__(self, cluster: Cluster, url: str, *, crash_file: bool = True) -> None:
        self.c = cluster
        tc = cluster.tc
        base = tc.base
        config = base / "extjobs-m2.toml"
        first = tomllib.loads(tc.daemon.config.read_text())
        write_daemon_config(
            config,
            state_dir=base / "state-m2",
            socket=base / "run" / "m2.sock",
            identity_file=Path(first["ssh"]["identity_file"]),
            ssh="connect_timeout = 3.0\nkeepalive_interval = 2.0\nkeepalive_count_max = 2\n",
            extra=store_section(url, "m2"),
        )
        self.daemons = {
            "m1": tc.daemon,
            "m2": Daemon(config, base / "run" / "m2.sock", base / "m2.log"),
        }
        if crash_file:
            # Either may be told to SIGKILL itself at a journal point (tests/crash's file).
            for daemon in self.daemons.values():
                daemon.env = {"EXTJOBS_CRASH_FILE": str(base / "crash-at")}
            tc.restart_daemon(kill=False)
        self.daemons["m2"].start()
        self.paused: set[str] = set()

    def client(self, name: str) -> Client:
        return Client(self.daemons[name].socket)

    def roles(self) -> dict[str, bool]:
        """Which running (and not paused) master says it leads."""
        leads = {}
        for name, daemon in self.daemons.items():
            if daemon.process is None or daemon.process.poll() is not None:
                continue
            if name in self.paused:
                continue
            with Client(daemon.socket) as client:
                try:
                    leads[name] = bool(client.masters()["leads"])
                except ExtJobsError:  # its store connection just broke: ask again later
                    continue
        return leads

    def wait_leader(self, timeout: float = 20) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            leaders = [n for n, leads in self.roles().items() if leads]
            if len(leaders) == 1:
                return leaders[0]
            time.sleep(0.1)
        raise AssertionError(f"no single leader: {self.roles()}")

    def other(self, name: str) -> str:
        return "m2" if name == "m1" else "m1"

    def point_cluster_at(self, name: str) -> None:
        """Make the cluster's CLI and client talk to master ``name``."""
        tc = self.c.tc
        tc.client.close()
        tc.daemon = self.daemons[name]
        tc.client = Client(tc.daemon.socket)


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory, postgres_server: Any) -> Iterator[Pair]:
    url = postgres_server.create_database()
    base = tmp_path_factory.mktemp("ha")
    with open_cluster(
        "embedded", base, nodes=2, providers=(), sections=store_section(url, "m1")
    ) as c:
        for node in c.tc.nodes:
            c.tc.install_provider(node, "strict", STRICT)
        pair = Pair(c, url)
        try:
            pair.wait_leader()
            yield pair
        finally:
            for daemon in pair.daemons.values():
                if daemon.process is not None and daemon.process.poll() is None:
                    daemon.stop()


def _add(c: Cluster, vols: Path) -> None:
    assert c.tc.run_job([add_op(vols)])["status"] == "success"


def flows(vols: Path) -> dict[str, tuple[Any, dict[str, Any]]]:
    name = {"instance_name": "crash1"}
    return {
        "add": (lambda c, v: None, add_op(vols)),
        "grow": (_add, {"OP_ID": "OP_INSTANCE_GROW_DISK", **name, "disk": 0, "amount": 4}),
        "migrate": (_add, {"OP_ID": "OP_INSTANCE_MIGRATE", **name, "target_node": "node2"}),
        "failover": (_add, {"OP_ID": "OP_INSTANCE_FAILOVER", **name, "target_node": "node2"}),
    }


@pytest.mark.parametrize("flow", ["add", "grow", "migrate", "failover"])
def test_a_standby_takes_over_from_a_leader_killed_mid_job(pair: Pair, flow: str) -> None:
    c = pair.c
    leader = pair.wait_leader()
    standby = pair.other(leader)
    pair.point_cluster_at(leader)
    vols = c.vol_dir(f"ha-{flow}")
    setup, op = flows(vols)[flow]
    setup(c, vols)
    crash_file = c.tc.base / "crash-at"
    next_id = max(j["id"] for j in c.tc.client.jobs()) + 1
    crash_file.write_text(f"after:3:{next_id}")
    killer = pair.daemons[leader]
    try:
        with pair.client(standby) as client:  # submitted through the standby
            [job_id] = client.submit({"ops": [op]})
        assert job_id == next_id
        assert killer.process is not None
        deadline = time.monotonic() + 60
        while killer.process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert killer.process.poll() == -signal.SIGKILL, f"{flow}: the leader did not die"
        killed_at = time.monotonic()
    finally:
        crash_file.unlink()
    assert pair.wait_leader() == standby
    took = time.monotonic() - killed_at
    pair.point_cluster_at(standby)
    job = c.tc.wait(job_id, timeout=120)
    assert job["status"] in FINAL
    messages = [e["message"] for e in job["log"] if e["type"] == "recovery"]
    assert any("recovering" in m for m in messages), job["log"]
    check_consistent(c, vols, f"{flow}: leader killed after step 3")
    with pair.client(standby) as client:
        masters = client.masters()
    assert masters["lease"]["holder"] == standby
    killer.start()  # back as a standby
    assert pair.wait_leader() == standby
    reset(c, vols)
    assert took < 20


def test_a_paused_leader_starts_nothing_once_the_standby_leads(pair: Pair) -> None:
    c = pair.c
    leader = pair.wait_leader()
    standby = pair.other(leader)
    pair.point_cluster_at(leader)
    delay = {"OP_ID": "OP_TEST_DELAY", "duration": 2, "repeat": 3, "on_nodes": ["node1"]}
    [job_id] = c.tc.client.submit({"ops": [delay]})
    time.sleep(0.5)  # its first sleep runs on node1
    paused = pair.daemons[leader]
    assert paused.process is not None
    os.kill(paused.process.pid, signal.SIGSTOP)
    pair.paused.add(leader)
    try:
        assert pair.wait_leader(timeout=20) == standby
    finally:
        os.kill(paused.process.pid, signal.SIGCONT)
        pair.paused.discard(leader)
    pair.point_cluster_at(standby)
    job = c.tc.wait(job_id, timeout=60)
    assert job["status"] == "success", json.dumps(job["log"][-6:], indent=1)
    # The former leader found out and stepped down; it neither finished nor restarted
    # the job: every step journalled after the takeover is the new leader's.
    deadline = time.monotonic() + 10
    while pair.roles().get(leader) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert pair.roles() == {leader: False, standby: True}
    assert "no longer leads" in Path(paused.log).read_text()
    recovered = [e for e in job["log"] if e["type"] == "recovery"]
    assert recovered, job["log"]


def test_postgresql_restarted_under_load_loses_no_job(pair: Pair, postgres_server: Any) -> None:
    c = pair.c
    leader = pair.wait_leader()
    pair.point_cluster_at(leader)
    delay = {"OP_ID": "OP_TEST_DELAY", "duration": 0.2, "on_nodes": ["node1", "node2"]}
    before = {j["id"] for j in c.tc.client.jobs()}
    ids = c.tc.client.submit({"jobs": [[delay] for _ in range(20)]})
    time.sleep(0.3)
    postgres_server.restart("immediate")  # every server process killed, crash recovery
    restarted = time.monotonic()
    # The API answers again (from whichever master leads) within a bound.
    leader = pair.wait_leader(timeout=30)
    answered = time.monotonic() - restarted
    pair.point_cluster_at(leader)
    jobs = [c.tc.wait(job_id, timeout=120) for job_id in ids]
    failed = [j for j in jobs if j["status"] != "success"]
    assert not failed, json.dumps([f["log"][-6:] for f in failed[:2]], indent=1)
    for job in jobs:
        done = [e for e in job["log"] if e["type"] == "status" and "success" in e["message"]]
        assert len(done) == 1, job["log"]
    after = {j["id"] for j in c.tc.client.jobs()}
    assert after - before == set(ids)
    assert answered < 30


def test_a_watch_opened_on_the_standby_follows_the_job_to_its_end(pair: Pair) -> None:
    c = pair.c
    leader = pair.wait_leader()
    standby = pair.other(leader)
    delay = {"OP_ID": "OP_TEST_DELAY", "duration": 0.3, "repeat": 3, "on_nodes": ["node1"]}
    with pair.client(standby) as client:
        [job_id] = client.submit({"ops": [delay]})
        seen: list[dict[str, Any]] = []
        statuses = []
        for job, entries in client.follow(job_id):  # long polls answered by the standby
            seen += entries
            statuses.append(job["status"])
            if job["status"] in FINAL:
                break
    assert statuses[-1] == "success"
    assert "running" in statuses, statuses  # it saw the job while it ran, not only after
    with pair.client(leader) as client:
        full = client.job(job_id)
    # Every line the leader wrote, in order, none twice, none missing.
    assert [e["serial"] for e in seen] == [e["serial"] for e in full["log"]]
    assert [e["message"] for e in seen] == [e["message"] for e in full["log"]]
    # The CLI's watch on the standby ends with the job, with its exit status.
    pair.point_cluster_at(standby)
    watched = c.tc.cli("job", "watch", str(job_id))
    assert watched.returncode == 0, watched.stderr
    assert "success" in watched.stdout
