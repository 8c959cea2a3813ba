"""The watcher against a real daemon and SSH nodes, embedded and OpenSSH (fake
hypervisor, strict provider): restarts, backoff, leaving operators' work alone, pause, and automatic
failover only after a successful fence.

The cases share one cluster and run in order: the last ones kill nodes for good
(their fence "powers them off").
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from extjobs.model.journal import StepStatus
from tests.harness.journal import wait_record
from tests.instances.conftest import KINDS
from tests.migration.conftest import MoveCluster
from tests.migration.invariants import check, guest_pid
from tests.watcher.conftest import (
    Fences,
    jobs_for,
    kill_guest,
    observed,
    open_watched_cluster,
    rounds,
    set_watcher,
    wait_for,
    watcher_jobs,
)

pytestmark = pytest.mark.spawns

STARTUP = "OP_INSTANCE_STARTUP"
FAILOVER = "OP_INSTANCE_FAILOVER"


@pytest.fixture(scope="module", params=KINDS)
def cluster(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[MoveCluster]:
    base = tmp_path_factory.mktemp(f"watcher-{request.param}")
    with open_watched_cluster(request.param, base) as c:
        yield c


@pytest.fixture(scope="module")
def fences(cluster: MoveCluster) -> Fences:
    return Fences(cluster)


def add(cluster: MoveCluster, name: str, node: str) -> Path:
    vols = cluster.vol_dir(name)
    cluster.add(name, node, vols, disks=1)
    assert wait_for(
        f"{name} observed running", lambda: observed(cluster, name)["state"] == "running"
    )
    return vols


def node_state(cluster: MoveCluster, node: str) -> dict[str, object]:
    rounds(cluster, 1)
    last = cluster.tc.client.watcher()["last_round"]
    state: dict[str, object] = last["nodes"][node]
    return state


# -- restarts ---------------------------------------------------------------------------


def test_killed_guest_is_restarted_by_one_job_with_a_reason(cluster: MoveCluster) -> None:
    add(cluster, "wr", "node2")
    assert jobs_for(cluster, STARTUP, "wr") == []
    kill_guest(cluster, "wr", "node2")
    job = wait_for(
        "the watcher's restart job",
        lambda: next(
            (j for j in jobs_for(cluster, STARTUP, "wr") if j["status"] == "success"), None
        ),
    )
    assert "watcher: guest of wr found down on node2 at " in job["reason"]
    assert job["priority"] == 10
    assert wait_for("wr running", lambda: observed(cluster, "wr")["state"] == "running")
    check(cluster, "wr", on="node2", running=True)
    rounds(cluster, 3)
    assert len(jobs_for(cluster, STARTUP, "wr")) == 1
    listing = cluster.ok("instance", "list")
    line = next(x for x in listing.splitlines() if x.lstrip("│ ").startswith("wr "))
    assert "running (" in line, listing
    assert "ago)" in line, listing
    cluster.ok("instance", "remove", "wr")


def test_guest_dying_at_once_backs_off_then_is_left_error_down(cluster: MoveCluster) -> None:
    add(cluster, "wd", "node2")
    uuid = cluster.instance("wd")["uuid"]
    stop = threading.Event()

    def keep_killing() -> None:
        import os
        import signal

        while not stop.is_set():
            pid = guest_pid(cluster.run_dir, "node2", uuid)
            if pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGKILL)
            stop.wait(0.02)

    killer = threading.Thread(target=keep_killing, daemon=True)
    killer.start()
    try:
        seen = wait_for(
            "the watcher to give up",
            lambda: (o := observed(cluster, "wd"))["message"] and "gave up" in o["message"] and o,
        )
    finally:
        stop.set()
        killer.join()
    assert seen["state"] == "ERROR_down"
    assert "after 3 restarts" in seen["message"]
    restarts = jobs_for(cluster, STARTUP, "wd")
    assert len(restarts) == 3
    assert "(restart 3 within the window)" in restarts[-1]["reason"]
    last_log = cluster.log_text(cluster.tc.client.job(restarts[-1]["id"]))
    assert "the watcher gave up restarting wd" in last_log
    info = cluster.ok("instance", "info", "wd")
    assert "ERROR_down" in info
    assert "gave up restarting wd" in " ".join(info.split())
    # It stays down: no further restart, whatever the rounds.
    rounds(cluster, 4)
    assert len(jobs_for(cluster, STARTUP, "wd")) == 3
    assert observed(cluster, "wd")["state"] == "ERROR_down"
    # An operator starts it: the watcher sees it running and forgets its give-up.
    cluster.ok("instance", "startup", "wd")
    assert wait_for("wd running", lambda: observed(cluster, "wd")["message"] is None)
    check(cluster, "wd", on="node2", running=True)
    cluster.ok("instance", "remove", "wd")


def test_a_busy_instance_is_left_alone_and_an_admin_down_one_never_started(
    cluster: MoveCluster,
) -> None:
    add(cluster, "wb", "node2")
    client = cluster.tc.client
    (delay,) = client.submit(
        {"ops": [{"OP_ID": "OP_TEST_DELAY", "duration": 120, "on_master": True}]}
    )
    (shutdown,) = client.submit(
        {
            "ops": [{"OP_ID": "OP_INSTANCE_SHUTDOWN", "instance_name": "wb"}],
            "depends": [[delay, ["success", "canceled"]]],
        }
    )
    kill_guest(cluster, "wb", "node2")
    seen = observed(cluster, "wb")
    assert seen["state"] == "ERROR_down"
    assert seen["message"] == "a job is working on the instance; left alone this round"
    rounds(cluster, 3)
    assert jobs_for(cluster, STARTUP, "wb") == []
    client.cancel(delay)
    assert cluster.tc.wait(shutdown)["status"] == "success"
    assert cluster.instance("wb")["state"] == "down"
    rounds(cluster, 4)
    assert observed(cluster, "wb")["state"] == "stopped"
    assert jobs_for(cluster, STARTUP, "wb") == []
    check(cluster, "wb", on="node2", running=False)
    cluster.ok("instance", "remove", "wb")


def test_paused_watcher_does_nothing_across_a_daemon_restart(cluster: MoveCluster) -> None:
    add(cluster, "wp", "node2")
    out = cluster.ok("watcher", "pause", "--for", "1h")
    assert "watcher paused until" in out
    kill_guest(cluster, "wp", "node2")
    assert observed(cluster, "wp")["state"] == "ERROR_down"
    rounds(cluster, 3)
    assert jobs_for(cluster, STARTUP, "wp") == []
    # Kept in the configuration: a restarted daemon is still paused.
    cluster.tc.restart_daemon(kill=True)
    rounds(cluster, 3)
    assert jobs_for(cluster, STARTUP, "wp") == []
    status = cluster.ok("watcher", "status")
    assert "watcher: paused until" in status
    assert "ERROR_down" in status
    assert cluster.tc.client.watcher()["last_round"]["acted"] is False
    cluster.ok("watcher", "resume")
    wait_for(
        "the restart after resume",
        lambda: [j for j in jobs_for(cluster, STARTUP, "wp") if j["status"] == "success"],
    )
    assert wait_for("wp running", lambda: observed(cluster, "wp")["state"] == "running")
    check(cluster, "wp", on="node2", running=True)
    cluster.ok("instance", "remove", "wp")


# -- dead nodes -----------------------------------------------------------------------------


def test_node_back_before_node_dead_after_is_left_alone(
    cluster: MoveCluster, fences: Fences
) -> None:
    out = cluster.ok("group", "modify", "default", "--auto-failover", "yes")
    assert "automatic failover on" in out
    set_watcher(cluster, node_dead_after=600)
    try:
        add(cluster, "wn", "node3")
        cluster.ok("node", "modify", "node3", "--fence-command", fences.power_off)
        cluster.tc.node("node3").stop()
        try:
            wait_for(
                "node3 unreachable", lambda: node_state(cluster, "node3")["state"] == "unreachable"
            )
            assert observed(cluster, "wn")["state"] == "unknown"
            rounds(cluster, 3)
        finally:
            cluster.tc.node("node3").start()
        wait_for("node3 answering", lambda: node_state(cluster, "node3")["state"] == "ok")
        assert fences.calls() == []
        assert watcher_jobs(cluster, "OP_NODE_FENCE") == []
        assert jobs_for(cluster, FAILOVER, "wn") == []
        assert wait_for("wn running", lambda: observed(cluster, "wn")["state"] == "running")
        check(cluster, "wn", on="node3", running=True)
        cluster.ok("node", "modify", "node3", "--fence-command", "")
        cluster.ok("instance", "remove", "wn")
    finally:
        set_watcher(cluster)


def test_without_a_working_fence_nothing_moves(cluster: MoveCluster, fences: Fences) -> None:
    add(cluster, "wf", "node3")
    cluster.tc.node("node3").stop()
    try:
        state = wait_for(
            "node3 reported not fenced",
            lambda: (s := node_state(cluster, "node3"))["state"] == "unreachable, not fenced" and s,
        )
        assert "node node3 has no fence command" in str(state["fence"])
        assert watcher_jobs(cluster, "OP_NODE_FENCE") == []
        # A fence command set now is used; it fails: nothing moves, the report says why.
        cluster.ok("node", "modify", "node3", "--fence-command", fences.fails)
        state = wait_for(
            "the failed fence reported",
            lambda: "ended error" in str((s := node_state(cluster, "node3"))["fence"]) and s,
        )
        assert state["state"] == "unreachable, not fenced"
        assert "power controller of node3 does not answer" in str(state["fence"])
        assert "nothing was failed over" in str(state["fence"])
        rounds(cluster, 4)
        assert fences.calls() == ["node3"]
        (failover,) = jobs_for(cluster, FAILOVER, "wf")
        assert failover["status"] != "success"
        assert cluster.instance("wf")["primary"] == "node3"
        nodes = {n["name"]: n for n in cluster.tc.client.nodes()}
        assert nodes["node3"]["offline"] is False
        assert "not fenced" in cluster.ok("watcher", "status")
    finally:
        cluster.tc.node("node3").start()
    wait_for("node3 answering", lambda: node_state(cluster, "node3")["state"] == "ok")
    cluster.ok("node", "modify", "node3", "--fence-command", "")
    check(cluster, "wf", on="node3", running=True)
    cluster.ok("instance", "remove", "wf")


def test_daemon_restart_during_a_watcher_failover_is_recovered(
    cluster: MoveCluster, fences: Fences
) -> None:
    add(cluster, "wc", "node3")
    cluster.ok("node", "modify", "node3", "--fence-command", fences.power_off)
    before = fences.calls()
    slow = 'sleep 3\nexec "${0%/*}/attach.real"\n'
    with cluster.replaced("node1", "attach", slow), cluster.replaced("node2", "attach", slow):
        cluster.tc.node("node3").stop()

        def failing_over() -> dict[str, object] | None:
            for job in jobs_for(cluster, FAILOVER, "wc"):
                if "it is not fenced again" in cluster.log_text(job):
                    return job
            return None

        job = wait_for("the watcher's failover to reach the target", failing_over)
        # Inside the slow attach on the target (started, not finished): the daemon dies.
        wait_record(
            cluster.tc.base / "state",
            int(str(job["id"])),
            lambda r: r.is_provider("attach") and r.status is StepStatus.STARTED,
        )
        cluster.tc.restart_daemon(kill=True)
        done = cluster.tc.wait(int(job["id"]))
    assert done["status"] == "success", cluster.log_text(done)
    assert any(e["type"] == "recovery" for e in done["log"])
    assert fences.calls()[len(before) :] == ["node3"]
    assert len(jobs_for(cluster, FAILOVER, "wc")) == 1
    target = cluster.instance("wc")["primary"]
    assert target in ("node1", "node2")
    check(cluster, "wc", on=target, running=True)
    nodes = {n["name"]: n for n in cluster.tc.client.nodes()}
    assert nodes["node3"]["offline"] is True
    assert nodes["node3"]["fenced"] is True


def test_dead_node_is_fenced_once_and_its_instances_fail_over_once(
    cluster: MoveCluster, fences: Fences
) -> None:
    for name in ("wa1", "wa2", "wa3"):
        add(cluster, name, "node1")
    out = cluster.ok("instance", "auto-repair", "wa3", "--failover", "no")
    assert "auto-failover no (off)" in out
    cluster.ok("node", "modify", "node1", "--fence-command", fences.power_off)
    before = fences.calls()
    cluster.tc.node("node1").stop()
    for name in ("wa1", "wa2"):
        job = wait_for(
            f"{name} failed over",
            lambda name=name: next(
                (j for j in jobs_for(cluster, FAILOVER, name) if j["status"] == "success"), None
            ),
        )
        assert "from dead node node1" in job["reason"]
    fence_job = watcher_jobs(cluster, "OP_NODE_FENCE")[-1]
    assert fence_job["status"] == "success"
    assert "node node1 unreachable for" in fence_job["reason"]
    rounds(cluster, 4)
    assert fences.calls()[len(before) :] == ["node1"]
    for name in ("wa1", "wa2"):
        assert len(jobs_for(cluster, FAILOVER, name)) == 1
        check(cluster, name, on="node2", running=True)
        assert observed(cluster, name)["state"] == "running"
    # Opted out: it stays with its powered-off node.
    assert jobs_for(cluster, FAILOVER, "wa3") == []
    assert cluster.instance("wa3")["primary"] == "node1"
    assert observed(cluster, "wa3")["state"] == "ERROR_nodeoffline"
    check(cluster, "wa3", on="node1", running=False)
    status = cluster.tc.client.watcher()
    assert status["last_round"]["nodes"]["node1"]["state"] == "offline (fenced)"
    kinds = [a["kind"] for a in status["recent_actions"] if a.get("node") == "node1"]
    assert kinds.count("fence") == 1
