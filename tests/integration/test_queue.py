"""The job queue through a real daemon: locks, priorities, dependencies, cancel, archive."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from extjobs.api.client import ApiError
from tests.harness.cluster import TestCluster, start_cluster
from tests.harness.watch import wait_gone, wait_processes

pytestmark = pytest.mark.spawns


def delay(seconds: float, **extra: Any) -> dict[str, Any]:
    return {"OP_ID": "OP_TEST_DELAY", "duration": seconds, **extra}


def interval(job: dict[str, Any]) -> tuple[float, float]:
    op = job["ops"][0]
    return op["started"], op["ended"]


def wait_status(c: TestCluster, job_id: int, status: str, timeout: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = c.client.job(job_id)
        if job["status"] == status:
            return job
        time.sleep(0.02)
    raise AssertionError(f"job {job_id} never reached {status}: {c.client.job(job_id)}")


#: Long enough never to end by itself: a blocker holds its place until the test
#: releases it (cancels it), so no order below depends on how fast the machine is.
HOLD = 600.0


def hold(c: TestCluster, **extra: Any) -> int:
    """Submit a job that runs until the test cancels it; its id, once it runs."""
    blocker = c.client.submit({"ops": [delay(HOLD, **extra)]})[0]
    wait_status(c, blocker, "running")
    return blocker


def wait_log(c: TestCluster, job_id: int, text: str, timeout: float = 30) -> None:
    """Wait until the job's log has a line containing ``text``."""
    deadline = time.monotonic() + timeout
    for _job, entries in c.client.follow(job_id):
        if any(text in e["message"] for e in entries):
            return
        assert time.monotonic() < deadline, f"job {job_id} never logged '{text}'"
    raise AssertionError(f"job {job_id} ended without logging '{text}'")


def release(c: TestCluster, blocker: int) -> None:
    c.client.cancel(blocker)
    assert c.wait(blocker)["status"] == "canceled"


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[TestCluster]:
    with start_cluster("embedded", 1, tmp_path) as c:
        c.init()
        yield c


@pytest.fixture
def serial_cluster(tmp_path: Path) -> Iterator[TestCluster]:
    """At most one running job, so queue order is observable."""
    with start_cluster("embedded", 1, tmp_path, config_extra="[queue]\nmax_running = 1\n") as c:
        c.init()
        yield c


def test_same_instance_serialises_and_different_instances_overlap(cluster: TestCluster) -> None:
    ids = cluster.client.submit(
        {
            "jobs": [
                {"ops": [delay(0.4, lock_instances=["a"])]},
                {"ops": [delay(0.4, lock_instances=["a"])]},
                {"ops": [delay(0.4, lock_instances=["b"])]},
                {"ops": [delay(0.4, lock_instances=["c"])]},
            ]
        }
    )
    # While the first holds instance a, the second shows what it waits for.
    waiting = wait_status(cluster, ids[1], "waiting")
    assert f"instance/a (held by job {ids[0]})" in waiting["waiting_for"]
    jobs = [cluster.wait(i) for i in ids]
    assert all(j["status"] == "success" for j in jobs)
    a1, a2, b, c = (interval(j) for j in jobs)
    assert a1[1] <= a2[0], "two jobs on instance a overlapped"
    assert b[0] < c[1], "jobs on instances b and c did not overlap"
    assert c[0] < b[1], "jobs on instances b and c did not overlap"
    assert b[0] < a1[1], "jobs on instances a and b did not overlap"
    assert a1[0] < b[1], "jobs on instances a and b did not overlap"


def test_high_priority_overtakes_queued_normal_jobs(serial_cluster: TestCluster) -> None:
    c = serial_cluster
    blocker = hold(c)
    normal = [c.client.submit({"ops": [delay(0)]})[0] for _ in range(3)]
    low = c.client.submit({"ops": [delay(0)], "priority": 10})[0]
    high = c.client.submit({"ops": [delay(0)], "priority": "high"})[0]
    assert {c.client.job(i)["status"] for i in [*normal, low, high]} == {"queued"}
    release(c, blocker)
    jobs = {i: c.wait(i) for i in [blocker, *normal, low, high]}
    order = sorted(jobs, key=lambda i: jobs[i]["ops"][0]["started"])
    assert order == [blocker, high, *normal, low]


def test_dependencies_with_relative_ids(cluster: TestCluster) -> None:
    ids = cluster.client.submit(
        {
            "jobs": [
                {"ops": [delay(0.2)]},
                {"ops": [delay(0)], "depends": [[-1, ["success"]]]},
                {"ops": [delay(0)], "depends": [[-2, ["error", "canceled"]]]},
            ]
        }
    )
    first, second, third = (cluster.wait(i) for i in ids)
    assert first["status"] == "success"
    assert second["status"] == "success"
    assert second["ops"][0]["started"] >= first["ops"][0]["ended"]
    assert third["status"] == "error"
    message = third["ops"][0]["error"]["message"]
    assert f"dependency job {ids[0]} ended success" in message
    assert "error/canceled" in message
    # A dependency that is already met does not leave the job queued.
    later = cluster.run_job([delay(0)], depends=[[ids[0], ["success"]]])
    assert later["status"] == "success"


def test_bad_dependencies_are_refused(cluster: TestCluster) -> None:
    with pytest.raises(ApiError, match="points before the first job"):
        cluster.client.submit({"jobs": [{"ops": [delay(0)], "depends": [[-1, ["success"]]]}]})
    with pytest.raises(ApiError, match="not a final status"):
        cluster.client.submit({"ops": [delay(0)], "depends": [[1, ["running"]]]})
    with pytest.raises(ApiError, match="is not an earlier job"):
        cluster.client.submit({"ops": [delay(0)], "depends": [[10**6, ["success"]]]})


def test_cancel_queued_job_at_once(serial_cluster: TestCluster) -> None:
    c = serial_cluster
    blocker = hold(c)
    queued = c.client.submit({"ops": [delay(0)]})[0]
    out = c.cli("job", "cancel", str(queued))
    assert out.returncode == 0, out.stderr
    assert c.client.job(queued)["status"] == "canceled"
    release(c, blocker)
    assert c.client.job(queued)["ops"][0]["started"] is None


def test_cancel_running_job_kills_the_remote_script(cluster: TestCluster) -> None:
    marker = "313.25"
    job_id = cluster.client.submit(
        {"ops": [delay(float(marker), on_master=False, on_nodes=["node1"])]}
    )[0]
    remote = wait_processes(f"sleep {marker}")
    cluster.client.cancel(job_id)
    job = cluster.wait(job_id)
    assert job["status"] == "canceled"
    assert job["ops"][0]["status"] == "canceled"
    assert wait_gone(remote, f"sleep {marker}", timeout=10) == []
    messages = [e["message"] for e in job["log"]]
    assert "cancel requested" in messages
    assert any("canceled" in m and "node1" in m for m in messages)
    with pytest.raises(ApiError, match="already ended"):
        cluster.client.cancel(job_id)


def test_archive_and_list_filters(cluster: TestCluster) -> None:
    ok = cluster.run_job([delay(0)])
    bad = cluster.run_job([delay(0, on_nodes=["ghost"])])
    assert bad["status"] == "error"
    assert {j["id"] for j in cluster.client.jobs(statuses=["error"])} == {bad["id"]}
    out = cluster.cli("job", "archive", str(ok["id"]))
    assert out.returncode == 0, out.stderr
    assert ok["id"] not in {j["id"] for j in cluster.client.jobs()}
    archived = {j["id"]: j for j in cluster.client.jobs(archived=True)}
    assert archived[ok["id"]]["archived"] is True
    info = cluster.client.job(ok["id"])
    assert info["archived"] is True
    assert info["status"] == "success"
    assert info["log"] == ok["log"]
    running = hold(cluster)
    with pytest.raises(ApiError, match="only finished jobs"):
        cluster.client.archive(running)
    release(cluster, running)
    # Archived jobs stay archived and readable after a restart.
    cluster.restart_daemon(kill=True)
    assert cluster.client.job(ok["id"])["archived"] is True
    assert ok["id"] not in {j["id"] for j in cluster.client.jobs()}


def test_finished_jobs_are_archived_automatically(tmp_path: Path) -> None:
    with start_cluster("embedded", 1, tmp_path, config_extra="[queue]\narchive_after = 0.5\n") as c:
        c.init()
        job = c.run_job([delay(0)])
        deadline = time.monotonic() + 20
        while not c.client.job(job["id"])["archived"] and time.monotonic() < deadline:
            time.sleep(0.1)
        assert c.client.job(job["id"])["archived"] is True


def test_full_queue_refuses_submissions(tmp_path: Path) -> None:
    extra = "[queue]\nmax_running = 1\nmax_queued = 3\n"
    with start_cluster("embedded", 1, tmp_path, config_extra=extra) as c:
        c.init()
        blocker = hold(c)
        c.client.submit({"ops": [delay(0)]})
        before = len(c.client.jobs())
        with pytest.raises(ApiError, match="queue is full") as err:
            c.client.submit({"jobs": [{"ops": [delay(0)]}, {"ops": [delay(0)]}]})
        assert err.value.fields["status"] == 503
        assert len(c.client.jobs()) == before  # the refused batch left nothing behind
        release(c, blocker)


def test_restart_keeps_dependencies_priorities_and_waiting_jobs(tmp_path: Path) -> None:
    with start_cluster("embedded", 1, tmp_path, config_extra="[queue]\nmax_running = 1\n") as c:
        c.init()
        blocker = hold(c, lock_instances=["x"])
        ids = c.client.submit(
            {
                "jobs": [
                    {"ops": [delay(0)], "priority": 5},
                    {"ops": [delay(0)], "depends": [[-1, ["success"]]], "priority": -5},
                    {"ops": [delay(0)], "priority": -10},
                ]
            }
        )
        assert {c.client.job(i)["status"] for i in ids} == {"queued"}
        c.restart_daemon(kill=True)
        # The blocker is recovered first (run again) and holds the queue once more.
        wait_log(c, blocker, "recovery: interrupted by a daemon restart; running again")
        statuses = [c.client.job(i)["status"] for i in ids]
        assert statuses[0] == statuses[2] == "queued", statuses
        assert statuses[1] in ("queued", "waiting"), statuses  # for its dependency
        release(c, blocker)
        after = {i: c.wait(i) for i in ids}
        assert all(j["status"] == "success" for j in after.values())
        assert after[ids[1]]["depends"] == [[ids[0], ["success"]]]
        assert after[ids[1]]["priority"] == -5
        assert after[ids[1]]["ops"][0]["started"] >= after[ids[0]]["ops"][0]["ended"]
        # The high-priority job ran before the low one.
        assert after[ids[2]]["ops"][0]["started"] <= after[ids[0]]["ops"][0]["started"]
        assert not c.client.jobs(statuses=["running", "waiting", "queued"])


def test_cli_submits_a_list_of_jobs_with_relative_dependencies(cluster: TestCluster) -> None:
    batch = [
        [delay(0.1)],
        {"ops": [delay(0)], "depends": [[-1, ["success"]]]},
    ]
    out = cluster.cli("submit", "-", "--wait", stdin=json.dumps(batch))
    assert out.returncode == 0, out.stderr
    first, second = (int(x) for x in out.stdout.split()[:2])
    assert second == first + 1
    assert cluster.client.job(second)["depends"] == [[first, ["success"]]]
    assert cluster.client.job(second)["status"] == "success"
