"""Memory: placement, migrate and failover count what a node's hypervisor reports minus
what the instances marked up there hold; a pinned target without room needs force."""

from __future__ import annotations

import pytest

from extjobs.model.opcodes import (
    DiskSpec,
    OpInstanceCreate,
    OpInstanceFailover,
    OpInstanceMigrate,
    OpInstanceShutdown,
)
from extjobs.model.remote import CommandResult
from extjobs.testing import TestCluster
from tests.lus.scenario import add_instance, error, ok, scripted_cluster

pytestmark = pytest.mark.usefixtures("engine_backend")


def unplaced(name: str = "new", memory: int = 512, **extra: object) -> OpInstanceCreate:
    disk = DiskSpec(size=8, provider="sharedfile", params={"dir": "/vols"})
    return OpInstanceCreate(instance_name=name, disks=(disk,), memory=memory, **extra)  # type: ignore[arg-type]


def messages(cluster: TestCluster, job_id: int) -> str:
    return "\n".join(e.message for e in cluster.engine.log(job_id))  # type: ignore[union-attr]


async def test_placement_passes_over_nodes_without_room_and_says_why() -> None:
    async with scripted_cluster() as cluster:
        cluster.runner.memory.update(node1=1024, node2=1024, node3=1024)
        # node1 holds 768 MiB for a running instance; node2 reports too little
        await add_instance(cluster, "big", node="node1", memory=768)
        cluster.runner.memory["node2"] = 256
        await add_instance(cluster, "other", node="node3", memory=64, start=False)
        job = await cluster.run(unplaced(memory=512))
        assert ok(job), error(job)
        # node3 is primary of one instance (stopped: it holds no memory) and has room
        assert cluster.config.instances["new"].primary == "node3"
        log = messages(cluster, job.id)
        assert "primary node node3 chosen" in log
        assert (
            "node1: not enough memory: needs 512 MiB, node has 256 MiB free of 1024 MiB "
            "(768 MiB held by instances)" in log
        )
        assert "node2: not enough memory: needs 512 MiB, node has 256 MiB free of 256 MiB" in log
        assert {c.node for c in cluster.runner.select(kind="provider")} == {"node3"}


async def test_no_node_with_room_refuses_before_anything_is_created() -> None:
    async with scripted_cluster() as cluster:
        cluster.runner.memory.update(node1=128, node2=128, node3=128)
        job = await cluster.run(unplaced(memory=512))
        assert not ok(job)
        text = error(job)
        assert "no node can take instance new" in text
        for node in ("node1", "node2", "node3"):
            assert f"{node}: not enough memory: needs 512 MiB" in text
        assert cluster.runner.select(kind="provider") == []
        assert "new" not in cluster.config.instances
        forced = await cluster.run(unplaced("forced", memory=512, force=True))
        assert ok(forced), error(forced)
        assert "may be chosen anyway (force)" in messages(cluster, forced.id)


async def test_a_node_that_cannot_tell_its_memory_is_passed_over() -> None:
    async with scripted_cluster() as cluster:
        cluster.runner.on(kind="node-info", node="node1", result=CommandResult(0, "garbage\n"))
        cluster.runner.on(
            kind="node-info", node="node2", result=CommandResult(1, stderr="no meminfo\n")
        )
        job = await cluster.run(unplaced(memory=64))
        assert ok(job), error(job)
        assert cluster.config.instances["new"].primary == "node3"
        log = messages(cluster, job.id)
        assert "node1: cannot tell its memory: node info of node 'node1' printed" in log
        assert "node2: cannot tell its memory:" in log


async def test_a_pinned_add_that_starts_needs_room_unless_forced() -> None:
    async with scripted_cluster() as cluster:
        cluster.runner.memory["node1"] = 256
        job = await cluster.run(
            OpInstanceCreate(
                instance_name="web",
                pnode="node1",
                memory=512,
                disks=(DiskSpec(size=8, provider="sharedfile", params={"dir": "/v"}),),
            )
        )
        assert not ok(job)
        assert "node node1 cannot run web: not enough memory: needs 512 MiB" in error(job)
        assert "256 MiB free of 256 MiB" in error(job)
        assert cluster.runner.select(kind="provider", action="create") == []
        # not started: nothing to hold, nothing checked
        await add_instance(cluster, "cold", node="node1", memory=512, start=False)


async def test_migrate_chooses_the_node_with_room() -> None:
    async with scripted_cluster() as cluster:
        await add_instance(cluster, "web", node="node1", memory=512)
        cluster.runner.memory["node2"] = 256
        job = await cluster.run(OpInstanceMigrate(instance_name="web"))
        assert ok(job), error(job)
        assert cluster.config.instances["web"].primary == "node3"
        log = messages(cluster, job.id)
        assert "target node node3 chosen" in log
        assert "node2: not enough memory: needs 512 MiB, node has 256 MiB free" in log


async def test_a_pinned_migrate_target_without_room_is_refused_unless_forced() -> None:
    async with scripted_cluster() as cluster:
        await add_instance(cluster, "web", node="node1", memory=512)
        await add_instance(cluster, "fat", node="node2", memory=3800)
        job = await cluster.run(OpInstanceMigrate(instance_name="web", target_node="node2"))
        assert not ok(job)
        text = error(job)
        assert "node node2 cannot receive web: not enough memory: needs 512 MiB" in text
        assert "296 MiB free of 4096 MiB (3800 MiB held by instances)" in text
        assert "--force" in text
        assert cluster.runner.trace() == []  # nothing touched a disk or a guest
        assert cluster.config.instances["web"].primary == "node1"
        forced = OpInstanceMigrate(instance_name="web", target_node="node2", force=True)
        job = await cluster.run(forced)
        assert ok(job), error(job)
        assert cluster.config.instances["web"].primary == "node2"
        assert "going on (force)" in messages(cluster, job.id)


async def test_failover_checks_memory_only_for_an_instance_that_runs() -> None:
    async with scripted_cluster() as cluster:
        await add_instance(cluster, "web", node="node1", memory=512)
        cluster.runner.memory["node2"] = 128
        job = await cluster.run(OpInstanceFailover(instance_name="web", target_node="node2"))
        assert not ok(job)
        assert "node node2 cannot receive web: not enough memory" in error(job)
        assert cluster.config.instances["web"].primary == "node1"
        assert ok(await cluster.run(OpInstanceShutdown(instance_name="web")))
        job = await cluster.run(OpInstanceFailover(instance_name="web", target_node="node2"))
        assert ok(job), error(job)
        assert cluster.config.instances["web"].primary == "node2"
