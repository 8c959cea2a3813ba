"""Instance add without a node: the primary is chosen, and the job log says why."""

from __future__ import annotations

import pytest

from extjobs.model.opcodes import DiskSpec, OpInstanceCreate, OpNodeSetParams, OpStoragePoolAdd
from extjobs.model.remote import CommandResult
from extjobs.testing import TestCluster
from tests.lus.scenario import add_instance, error, ok, scripted_cluster

pytestmark = pytest.mark.usefixtures("engine_backend")


def unplaced(name: str = "new", size: int = 8, **disk: object) -> OpInstanceCreate:
    spec = {"provider": "sharedfile", "params": {"dir": "/vols"}, **disk}
    return OpInstanceCreate(instance_name=name, disks=(DiskSpec(size=size, **spec),))  # type: ignore[arg-type]


def messages(cluster: TestCluster, job_id: int) -> str:
    return "\n".join(e.message for e in cluster.engine.log(job_id))  # type: ignore[union-attr]


async def test_the_node_with_fewest_instances_is_chosen_ties_by_name() -> None:
    async with scripted_cluster() as cluster:
        await add_instance(cluster, "web", node="node1", disks=1)
        job = await cluster.run(unplaced())
        assert ok(job), error(job)
        assert cluster.config.instances["new"].primary == "node2"
        log = messages(cluster, job.id)
        assert "primary node node2 chosen" in log
        assert "node1: primary of 1 instance(s)" in log
        assert {c.node for c in cluster.runner.select(kind="provider")} == {"node2"}


async def test_offline_drained_and_too_small_nodes_are_passed_over_with_reasons() -> None:
    async with scripted_cluster() as cluster:
        assert ok(await cluster.run(OpNodeSetParams(node_name="node1", drained=True)))
        cluster.runner.on(kind="capacity", node="node2", result=CommandResult(0, "100 4\n"))
        cluster.runner.on(kind="capacity", node="node3", result=CommandResult(0, "100 50\n"))
        job = await cluster.run(unplaced(size=8))
        assert ok(job), error(job)
        assert cluster.config.instances["new"].primary == "node3"
        log = messages(cluster, job.id)
        assert "node1: drained" in log
        assert "node2: not enough storage: disk 0 needs 8 MiB" in log


async def test_no_node_fits_refuses_naming_each_and_creates_nothing() -> None:
    async with scripted_cluster() as cluster:
        cluster.runner.on(kind="capacity", result=CommandResult(0, "100 4\nshared\n"))
        job = await cluster.run(unplaced(size=8))
        assert not ok(job)
        text = error(job)
        assert "no node can take instance new" in text
        for node in ("node1", "node2", "node3"):
            assert f"{node}: not enough storage" in text
        assert cluster.runner.select(kind="provider") == []
        job = await cluster.run(
            OpInstanceCreate(
                instance_name="forced",
                disks=(DiskSpec(size=8, provider="sharedfile", params={"dir": "/vols"}),),
                force=True,
            )
        )
        assert ok(job), error(job)


async def test_a_pool_connected_nowhere_places_nothing() -> None:
    async with scripted_cluster() as cluster:
        add = OpStoragePoolAdd(pool_name="fast", provider="sharedfile", params={"dir": "/p"})
        assert ok(await cluster.run(add))
        job = await cluster.run(
            OpInstanceCreate(instance_name="new", disks=(DiskSpec(size=8, pool="fast"),))
        )
        assert not ok(job)
        assert "storage pool 'fast' is not connected to node group 'default'" in error(job)
