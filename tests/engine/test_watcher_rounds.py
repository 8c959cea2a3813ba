"""Watcher rounds in process, over the scripted runner: what a round observes and the
jobs it submits (restarts, backoff and giving up, pause, operators' work, nodes without
a fence command). Rounds are run one by one (``interval`` 0: no rounds of their own)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import attrs

from extjobs.engine.watcher import Watcher
from extjobs.hypervisors.base import instance_key
from extjobs.model.jobs import Dependency, Job
from extjobs.model.opcodes import (
    OpGroupSetParams,
    OpInstanceSetAutoRepair,
    OpInstanceShutdown,
    OpTestDelay,
    OpWatcherSetPause,
)
from extjobs.model.requests import JobRequest
from extjobs.model.states import JobStatus
from extjobs.testing import TestCluster, open_test_cluster
from extjobs.testing.cluster import engine_options
from tests.lus.scenario import PROVIDERS, add_instance, error, ok


@contextlib.asynccontextmanager
async def watched(tmp_path: Path, **watcher: Any) -> AsyncIterator[TestCluster]:
    options = engine_options(tmp_path / "state")
    settings = {"interval": 0.0, "restart_backoff": 0.0, "node_dead_after": 0.0, **watcher}
    options = attrs.evolve(options, watcher=attrs.evolve(options.watcher, **settings))
    async with open_test_cluster(3, providers=PROVIDERS, config=options) as cluster:
        yield cluster


def watcher_of(cluster: TestCluster) -> Watcher:
    assert cluster.engine is not None
    return cluster.engine.queue.watcher


def crash(cluster: TestCluster, name: str, node: str = "node1") -> None:
    """The guest of ``name`` dies on ``node`` (the scripted node forgets it)."""
    del cluster.runner.guests[(node, instance_key(cluster.config.instances[name]))]


def watcher_jobs(cluster: TestCluster) -> list[Job]:
    assert cluster.engine is not None
    return [j for j in cluster.engine.queue.list_jobs() if j.submitter == "watcher"]


async def settle(cluster: TestCluster) -> list[Job]:
    """Wait for every watcher job to end; all of them."""
    jobs = watcher_jobs(cluster)
    return [await cluster.wait(j.id) for j in jobs]


async def test_a_crashed_guest_is_seen_down_and_restarted_by_one_low_priority_job(
    tmp_path: Path,
) -> None:
    async with watched(tmp_path) as cluster:
        await add_instance(cluster)
        w = watcher_of(cluster)
        report = await w.run_round()
        assert report["instances"]["web"] == {"state": "running", "message": None}
        assert report["actions"] == []
        crash(cluster, "web")
        report = await w.run_round()
        (action,) = report["actions"]
        assert action["kind"] == "restart"
        assert action["reason"].startswith("watcher: guest of web found down on node1 at ")
        (job,) = await settle(cluster)
        assert ok(job), error(job)
        assert job.priority == 10
        assert job.reason == action["reason"]
        assert job.ops[0].input["only_if_marked_up"] is True
        report = await w.run_round()
        assert report["instances"]["web"]["state"] == "running"
        assert len(watcher_jobs(cluster)) == 1
        seen = w.observed()["web"]
        assert seen["running_on"] == ["node1"]
        assert seen["disks_attached_on"] == ["node1"]


async def test_restarts_back_off_then_the_watcher_gives_up_and_says_so(tmp_path: Path) -> None:
    async with watched(tmp_path, max_restarts=2) as cluster:
        await add_instance(cluster)
        w = watcher_of(cluster)
        for _ in range(2):
            crash(cluster, "web")
            report = await w.run_round()
            assert [a["kind"] for a in report["actions"]] == ["restart"]
            await settle(cluster)
        crash(cluster, "web")
        report = await w.run_round()
        (gave_up,) = report["actions"]
        assert gave_up["kind"] == "gave-up"
        assert "after 2 restarts" in gave_up["message"]
        assert report["instances"]["web"]["state"] == "ERROR_down"
        last = watcher_jobs(cluster)[-1]
        assert cluster.engine is not None
        assert gave_up["message"] in [e.message for e in cluster.engine.queue.log_since(last.id)]
        for _ in range(3):
            report = await w.run_round()
            assert report["actions"] == []
            assert "gave up" in report["instances"]["web"]["message"]
        assert len(watcher_jobs(cluster)) == 2


async def test_backoff_makes_the_next_restart_wait(tmp_path: Path) -> None:
    async with watched(tmp_path, restart_backoff=3600.0, restart_backoff_max=3600.0) as cluster:
        await add_instance(cluster)
        w = watcher_of(cluster)
        crash(cluster, "web")
        assert [a["kind"] for a in (await w.run_round())["actions"]] == ["restart"]
        await settle(cluster)
        crash(cluster, "web")
        report = await w.run_round()
        assert report["actions"] == []
        assert report["instances"]["web"]["message"].startswith("restart 2 backs off for ")


async def test_paused_watcher_observes_and_acts_on_nothing(tmp_path: Path) -> None:
    async with watched(tmp_path) as cluster:
        await add_instance(cluster)
        w = watcher_of(cluster)
        job = await cluster.run(OpWatcherSetPause(paused=True, duration=3600))
        assert ok(job), error(job)
        crash(cluster, "web")
        report = await w.run_round()
        assert report["acted"] is False
        assert report["paused"]["until"] is not None
        assert report["instances"]["web"]["state"] == "ERROR_down"
        assert watcher_jobs(cluster) == []
        assert w.status()["pause"] is not None
        job = await cluster.run(OpWatcherSetPause(paused=False))
        assert ok(job), error(job)
        report = await w.run_round()
        assert [a["kind"] for a in report["actions"]] == ["restart"]


async def test_operators_win_admin_down_opted_out_and_busy_instances(tmp_path: Path) -> None:
    async with watched(tmp_path) as cluster:
        await add_instance(cluster, "down")
        await add_instance(cluster, "optout")
        await add_instance(cluster, "busy")
        assert ok(await cluster.run(OpInstanceShutdown(instance_name="down")))
        job = await cluster.run(OpInstanceSetAutoRepair(instance_name="optout", auto_restart=False))
        assert ok(job), error(job)
        assert job.ops[0].result["auto_restart"] is False
        assert cluster.engine is not None
        queue = cluster.engine.queue
        (delay,) = queue.submit([JobRequest(ops=(OpTestDelay(duration=600, on_master=True),))])
        (waiting,) = queue.submit(
            [
                JobRequest(
                    ops=(OpInstanceShutdown(instance_name="busy"),),
                    depends=(Dependency(delay, (JobStatus.SUCCESS, JobStatus.CANCELED)),),
                )
            ]
        )
        crash(cluster, "optout")
        crash(cluster, "busy")
        w = watcher_of(cluster)
        report = await w.run_round()
        assert report["actions"] == []
        assert report["instances"]["down"] == {"state": "stopped", "message": None}
        assert report["instances"]["optout"] == {
            "state": "ERROR_down",
            "message": "auto-restart is off for this instance",
        }
        assert report["instances"]["busy"]["state"] == "ERROR_down"
        assert report["instances"]["busy"]["message"] == (
            "a job is working on the instance; left alone this round"
        )
        queue.cancel(delay)
        await cluster.wait(waiting)
        report = await w.run_round()
        assert report["actions"] == []
        assert report["instances"]["busy"]["state"] == "stopped"


async def test_a_dead_node_without_a_fence_command_moves_nothing(tmp_path: Path) -> None:
    async with watched(tmp_path) as cluster:
        await add_instance(cluster)
        assert ok(await cluster.run(OpGroupSetParams(group_name="default", auto_failover=True)))
        cluster.runner.unreachable("node1")
        w = watcher_of(cluster)
        # One silent round is not a death.
        report = await w.run_round()
        assert report["actions"] == []
        assert report["nodes"]["node1"]["state"] == "unreachable"
        report = await w.run_round()
        (action,) = report["actions"]
        assert action["kind"] == "not-fenced"
        assert "node node1 has no fence command" in action["message"]
        node = report["nodes"]["node1"]
        assert node["state"] == "unreachable, not fenced"
        assert report["instances"]["web"]["state"] == "unknown"
        # Said once, reported every round; nothing is submitted.
        report = await w.run_round()
        assert report["actions"] == []
        assert report["nodes"]["node1"]["state"] == "unreachable, not fenced"
        assert watcher_jobs(cluster) == []
        # Back: reachable, nothing pending.
        cluster.runner.reachable("node1")
        report = await w.run_round()
        assert report["nodes"]["node1"]["state"] == "ok"
        assert report["instances"]["web"]["state"] == "running"


async def test_a_fresh_observation_can_be_asked_for(tmp_path: Path) -> None:
    async with watched(tmp_path) as cluster:
        await add_instance(cluster)
        w = watcher_of(cluster)
        assert w.observed() == {}
        # interval 0: no rounds of their own, but one when a fresh observation is asked for.
        assert await w.wait_observation(30) is True
        assert w.observed()["web"]["state"] == "running"
        crash(cluster, "web")
        assert await w.wait_observation(30) is True
        assert w.observed()["web"]["state"] == "ERROR_down"
        # Such a round only observes.
        assert watcher_jobs(cluster) == []


async def test_a_round_asks_at_most_probes_in_flight_nodes_at_once(tmp_path: Path) -> None:
    async with watched(tmp_path, probes_in_flight=2) as cluster:
        runner = cluster.runner
        inner = runner.run
        running = most = 0

        async def run(endpoint: Any, command: Any, **kwargs: Any) -> Any:
            nonlocal running, most
            running += 1
            most = max(most, running)
            try:
                await anyio.sleep(0.05)  # long enough for every probe to have started
                return await inner(endpoint, command, **kwargs)
            finally:
                running -= 1

        runner.run = run  # type: ignore[method-assign]
        report = await watcher_of(cluster).run_round()
        runner.run = inner  # type: ignore[method-assign]
    assert most == 2
    assert sorted(report["nodes"]) == ["node1", "node2", "node3"]
    assert all(n["state"] == "ok" for n in report["nodes"].values()), report["nodes"]
