"""Live migration of a fake-hypervisor instance, in process, with an exclusive-lock provider.

S is node1, T is node2; each instance has two disks of a provider whose attach fails
while another node holds the volume open exclusively (see ``tests/lus/scenario.py``).
"""

from __future__ import annotations

import pytest

from extjobs.errors import NodeUnreachableError
from extjobs.model.opcodes import OpInstanceMigrate
from extjobs.testing import Call
from tests.lus.scenario import add_instance, error, ok, scripted_cluster

pytestmark = pytest.mark.usefixtures("engine_backend")

SUCCESS = [
    "node1 open disk0 shared",
    "node1 open disk1 shared",
    "node2 attach disk0",
    "node2 open disk0 shared",
    "node2 attach disk1",
    "node2 open disk1 shared",
    "node2 hv start",
    "node1 hv stop",
    "node1 close disk1",
    "node1 detach disk1",
    "node1 close disk0",
    "node1 detach disk0",
    "node2 open disk0 exclusive",
    "node2 open disk1 exclusive",
]


async def test_success_order() -> None:
    async with scripted_cluster() as cluster:
        await add_instance(cluster)
        job = await cluster.run(OpInstanceMigrate(instance_name="web", target_node="node2"))
        assert ok(job), error(job)
        assert cluster.runner.trace() == SUCCESS
        assert cluster.config.instances["web"].primary == "node2"
        runner = cluster.runner
        assert set(runner.running()) == {"node2"}
        assert runner.storage.attached_anywhere() == {v: {"node2"} for v in runner.storage.volumes}


async def test_the_source_reopens_shared_before_any_step_on_the_target() -> None:
    async with scripted_cluster() as cluster:
        await add_instance(cluster)
        job = await cluster.run(OpInstanceMigrate(instance_name="web", target_node="node2"))
        assert ok(job), error(job)
        calls = cluster.runner.calls
        first_on_target = next(
            i for i, c in enumerate(calls) if c.node == "node2" and c.kind == "provider"
        )
        shared = [
            i
            for i, c in enumerate(calls)
            if c.node == "node1" and c.action == "open" and c.exclusive is False
        ]
        assert len(shared) == 2
        assert max(shared) < first_on_target


async def test_a_failure_on_the_target_releases_it_and_reopens_the_source_exclusive() -> None:
    async with scripted_cluster() as cluster:
        await add_instance(cluster)
        cluster.runner.fail("attach", node="node2", disk=1, stderr="no path to the SAN")
        job = await cluster.run(OpInstanceMigrate(instance_name="web", target_node="node2"))
        assert not ok(job)
        assert "no path to the SAN" in error(job)
        assert "web runs on node1" in error(job)
        trace = cluster.runner.trace()
        failed = trace.index("node2 attach disk1")
        assert trace[failed + 1 :] == [
            "node2 close disk1",
            "node2 detach disk1",
            "node2 close disk0",
            "node2 detach disk0",
            "node1 attach disk0",
            "node1 open disk0 exclusive",
            "node1 attach disk1",
            "node1 open disk1 exclusive",
        ]
        runner = cluster.runner
        assert cluster.config.instances["web"].primary == "node1"
        assert set(runner.running()) == {"node1"}
        for volume in runner.storage.volumes.values():
            assert volume.attached == {"node1"}
            assert volume.opened == {"node1": True}


async def test_a_guest_that_does_not_start_on_the_target_stays_on_the_source() -> None:
    async with scripted_cluster() as cluster:
        await add_instance(cluster)
        cluster.runner.fail("start", kind="hypervisor", node="node2", stderr="no memory")
        job = await cluster.run(OpInstanceMigrate(instance_name="web", target_node="node2"))
        assert not ok(job)
        runner = cluster.runner
        assert "node1 hv stop" not in runner.trace()
        assert set(runner.running()) == {"node1"}
        for volume in runner.storage.volumes.values():
            assert volume.attached == {"node1"}
            assert volume.opened == {"node1": True}


async def test_cleanup_finds_where_the_guest_runs_and_detaches_on_the_demoted_node() -> None:
    async with scripted_cluster() as cluster:
        inst = await add_instance(cluster)
        runner = cluster.runner
        # A migration that moved the guest and died before it could tell anyone: the
        # guest runs on node2 holding its disks, node1 still has them attached (shared).
        key = inst.uuid
        pid = runner.guests.pop(("node1", key))
        runner.guests[("node2", key)] = pid
        for volume in runner.storage.volumes.values():
            volume.attached.add("node2")
            volume.opened = {"node1": False, "node2": False}
        job = await cluster.run(OpInstanceMigrate(instance_name="web", cleanup=True))
        assert ok(job), error(job)
        trace = runner.trace()
        assert "node2 hv stop" not in trace
        assert trace.index("node1 detach disk0") < trace.index("node2 open disk0 exclusive")
        assert cluster.config.instances["web"].primary == "node2"
        assert set(runner.running()) == {"node2"}
        for volume in runner.storage.volumes.values():
            assert volume.attached == {"node2"}
            assert volume.opened == {"node2": True}
        assert job.ops[0].result["primary"] == "node2"


async def test_cleanup_after_a_migration_that_could_not_settle() -> None:
    async with scripted_cluster() as cluster:
        await add_instance(cluster)
        runner = cluster.runner

        def lose_the_target(call: Call) -> None:
            # The source guest cannot be stopped and then the target drops off the
            # network: the failed migration cannot settle and asks for --cleanup.
            runner.unreachable("node2")
            raise NodeUnreachableError("connection lost", node="node1")

        runner.on(kind="hypervisor", action="stop", node="node1", handler=lose_the_target, times=1)
        job = await cluster.run(OpInstanceMigrate(instance_name="web", target_node="node2"))
        assert not ok(job)
        assert "--cleanup" in error(job)
        runner.reachable("node2")
        runner.forget()
        job = await cluster.run(OpInstanceMigrate(instance_name="web", cleanup=True))
        assert ok(job), error(job)
        # Both guests ran; the primary's is kept and the other one stopped and released.
        assert runner.trace()[0] == "node2 hv stop"
        assert set(runner.running()) == {"node1"}
        for volume in runner.storage.volumes.values():
            assert volume.attached == {"node1"}
            assert volume.opened == {"node1": True}


async def test_a_source_guest_that_cannot_be_stopped_keeps_the_instance_on_the_source() -> None:
    async with scripted_cluster() as cluster:
        await add_instance(cluster)
        runner = cluster.runner
        runner.fail("stop", kind="hypervisor", node="node1", stderr="process does not die", times=1)
        job = await cluster.run(OpInstanceMigrate(instance_name="web", target_node="node2"))
        assert not ok(job)
        # The guest ran on both nodes for a moment; the source's is kept.
        trace = runner.trace()
        assert trace[trace.index("node1 hv stop") + 1] == "node2 hv stop"
        assert cluster.config.instances["web"].primary == "node1"
        assert set(runner.running()) == {"node1"}
        for volume in runner.storage.volumes.values():
            assert volume.attached == {"node1"}
            assert volume.opened == {"node1": True}
