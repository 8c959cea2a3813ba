"""Failover of a fake-hypervisor instance, in process: S is node1, T is node2."""

from __future__ import annotations

from pathlib import Path

import pytest

from extjobs.model.opcodes import OpInstanceFailover, OpNodeSetParams
from extjobs.model.remote import CommandResult
from extjobs.testing import Call
from tests.lus.scenario import add_instance, error, ok, scripted_cluster

pytestmark = pytest.mark.usefixtures("engine_backend")

SUCCESS = [
    "node1 hv stop",
    "node1 close disk1",
    "node1 detach disk1",
    "node1 close disk0",
    "node1 detach disk0",
    "node2 attach disk0",
    "node2 open disk0 exclusive",
    "node2 attach disk1",
    "node2 open disk1 exclusive",
    "node2 hv start",
]


def first(trace: list[str], node: str, action: str) -> int:
    return next(i for i, t in enumerate(trace) if t.startswith(f"{node} {action}"))


def last(trace: list[str], node: str, action: str) -> int:
    return max(i for i, t in enumerate(trace) if t.startswith(f"{node} {action}"))


async def test_success_order_and_the_target_never_attaches_before_the_source_detached() -> None:
    async with scripted_cluster() as cluster:
        await add_instance(cluster)
        job = await cluster.run(OpInstanceFailover(instance_name="web", target_node="node2"))
        assert ok(job), error(job)
        trace = cluster.runner.trace()
        assert trace == SUCCESS
        assert last(trace, "node1", "detach") < first(trace, "node2", "attach")
        assert cluster.config.instances["web"].primary == "node2"
        assert set(cluster.runner.running()) == {"node2"}


async def test_a_failed_target_attach_undoes_only_the_target_and_restores_the_source() -> None:
    async with scripted_cluster() as cluster:
        await add_instance(cluster)
        runner = cluster.runner
        runner.fail("attach", node="node2", disk=1, stderr="no path to the SAN")
        job = await cluster.run(OpInstanceFailover(instance_name="web", target_node="node2"))
        assert not ok(job)
        assert "no path to the SAN" in error(job)
        trace = runner.trace()
        failed = trace.index("node2 attach disk1")
        undo, restore = trace[failed + 1 : failed + 4], trace[failed + 4 :]
        assert undo == ["node2 detach disk1", "node2 close disk0", "node2 detach disk0"]
        assert restore == [
            "node1 attach disk0",
            "node1 open disk0 exclusive",
            "node1 attach disk1",
            "node1 open disk1 exclusive",
            "node1 hv start",
        ]
        assert not any(" remove " in t for t in trace)
        assert cluster.config.instances["web"].primary == "node1"
        assert set(runner.running()) == {"node1"}
        for volume in runner.storage.volumes.values():
            assert volume.attached == {"node1"}


async def test_an_unreachable_source_refuses_the_failover_and_touches_nothing() -> None:
    async with scripted_cluster() as cluster:
        await add_instance(cluster)
        cluster.runner.unreachable("node1")
        job = await cluster.run(OpInstanceFailover(instance_name="web", target_node="node2"))
        assert not ok(job)
        assert "ignore-consistency" in error(job)
        assert cluster.runner.trace(node="node2") == []
        assert cluster.config.instances["web"].primary == "node1"


@pytest.mark.spawns  # the fence command runs on the master
async def test_ignore_consistency_fences_the_unreachable_source_before_the_target_attaches(
    tmp_path: Path,
) -> None:
    async with scripted_cluster() as cluster:
        await add_instance(cluster)
        fenced = tmp_path / "fenced"
        job = await cluster.run(
            OpNodeSetParams(node_name="node1", fence_command=("touch", str(fenced)))
        )
        assert ok(job), error(job)
        runner = cluster.runner
        runner.unreachable("node1")
        seen: list[bool] = []

        def note(call: Call) -> CommandResult | None:
            seen.append(fenced.exists())
            if fenced.exists():
                runner.power_off("node1")  # what the fence did to the storage
            return None  # the default answer

        runner.on(node="node2", action="attach", handler=note)
        job = await cluster.run(
            OpInstanceFailover(instance_name="web", target_node="node2", ignore_consistency=True)
        )
        assert ok(job), error(job)
        assert seen == [True, True]
        assert runner.trace(node="node2") == SUCCESS[5:]
        assert cluster.config.instances["web"].primary == "node2"


@pytest.mark.spawns  # the fence command runs on the master
async def test_a_failing_fence_stops_the_failover_before_the_target_is_touched() -> None:
    async with scripted_cluster() as cluster:
        await add_instance(cluster)
        job = await cluster.run(OpNodeSetParams(node_name="node1", fence_command=("false",)))
        assert ok(job), error(job)
        cluster.runner.unreachable("node1")
        job = await cluster.run(
            OpInstanceFailover(instance_name="web", target_node="node2", ignore_consistency=True)
        )
        assert not ok(job)
        assert "fencing node node1 failed" in error(job)
        assert cluster.runner.trace(node="node2") == []
        assert cluster.config.instances["web"].primary == "node1"
