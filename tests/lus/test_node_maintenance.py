"""node migrate / evacuate, instance reboot and activate/deactivate-disks, in process.

Three scripted nodes; instances have two disks of the exclusive-lock provider (see
``tests/lus/scenario.py``). node migrate submits one job per instance in one batch:
these tests wait for each of those jobs and look at where every instance ended.
"""

from __future__ import annotations

import pytest

from extjobs.errors import InputError
from extjobs.model.jobs import Job
from extjobs.model.opcodes import (
    OpInstanceActivateDisks,
    OpInstanceDeactivateDisks,
    OpInstanceReboot,
    OpInstanceShutdown,
    OpNodeEvacuate,
    OpNodeMigrate,
    OpNodeSetParams,
)
from extjobs.model.remote import CommandResult
from extjobs.testing import TestCluster
from tests.lus.scenario import add_instance, error, ok, scripted_cluster

pytestmark = pytest.mark.usefixtures("engine_backend")


async def children(cluster: TestCluster, job: Job) -> dict[str, Job]:
    """The per-instance jobs a node migrate/evacuate submitted, waited for, by instance."""
    assert ok(job), error(job)
    entries = job.ops[0].result["jobs"]
    return {e["instance"]: await cluster.wait(e["job_id"]) for e in entries}


def job_count(cluster: TestCluster) -> int:
    engine = cluster.engine
    assert engine is not None
    return len(engine.queue.list_jobs())


async def test_node_migrate_moves_every_instance_in_one_batch_spread_over_the_group() -> None:
    async with scripted_cluster() as cluster:
        for name in ("a", "b", "c"):
            await add_instance(cluster, name)
        await cluster.run(OpInstanceShutdown(instance_name="c"))
        job = await cluster.run(OpNodeMigrate(node_name="node1"))
        entries = job.ops[0].result["jobs"]
        ids = [e["job_id"] for e in entries]
        assert ids == list(range(ids[0], ids[0] + 3)), "one batch: consecutive ids"
        done = await children(cluster, job)
        assert all(ok(j) for j in done.values()), [error(j) for j in done.values()]
        cfg = cluster.config
        where = {n: cfg.instances[n].primary for n in ("a", "b", "c")}
        assert "node1" not in where.values()
        # Spread: the two running instances do not both land on the same node.
        assert where["a"] != where["b"]
        kinds = {e["instance"]: e["op"] for e in entries}
        assert kinds == {"a": "migrate", "b": "migrate", "c": "failover (stopped)"}
        # The stopped instance moved without being started.
        running = cluster.runner.running()
        assert cfg.instances["c"].uuid not in [k for keys in running.values() for k in keys]
        assert not cfg.instances["c"].admin_up
        assert "node1" not in running
        storage = cluster.runner.storage
        held = {n for v in storage.volumes.values() for n in v.attached}
        assert "node1" not in held


async def test_one_failing_migration_does_not_stop_the_others() -> None:
    async with scripted_cluster() as cluster:
        for name in ("a", "b", "c"):
            await add_instance(cluster, name)
        b = cluster.config.instances["b"]
        b_volumes = {d.volume_name for d in b.disks}
        cluster.runner.on(
            kind="provider",
            action="attach",
            where=lambda call: call.volume in b_volumes and call.node != "node1",
            result=CommandResult(exit_status=1, stderr="no path to the SAN\n"),
        )
        job = await cluster.run(OpNodeMigrate(node_name="node1"))
        done = await children(cluster, job)
        assert ok(done["a"])
        assert ok(done["c"])
        assert not ok(done["b"])
        assert "no path to the SAN" in error(done["b"])
        assert "b runs on node1" in error(done["b"])
        cfg = cluster.config
        assert cfg.instances["b"].primary == "node1"
        assert cfg.instances["a"].primary != "node1"
        assert cfg.instances["c"].primary != "node1"


async def test_no_valid_target_refuses_before_anything_moves_naming_the_instances() -> None:
    async with scripted_cluster() as cluster:
        for name in ("a", "b"):
            await add_instance(cluster, name)
        for node in ("node2", "node3"):
            assert ok(await cluster.run(OpNodeSetParams(node_name=node, drained=True)))
        before = job_count(cluster)
        cluster.runner.forget()
        job = await cluster.run(OpNodeMigrate(node_name="node1"))
        assert not ok(job)
        message = error(job)
        assert "cannot migrate node node1" in message
        assert "a: no node of group default can receive a" in message
        assert "b: no node of group default" in message
        assert "node2: it is drained" in message
        assert "nothing was moved" in message
        assert job_count(cluster) == before + 1, "no job was submitted"
        assert cluster.runner.trace() == [], "nothing ran on any node"
        assert {i.primary for i in cluster.config.instances.values()} == {"node1"}


async def test_an_offline_or_unknown_target_is_refused_and_nothing_is_submitted() -> None:
    async with scripted_cluster() as cluster:
        await add_instance(cluster, "a")
        assert ok(await cluster.run(OpNodeSetParams(node_name="node2", offline=True)))
        before = job_count(cluster)
        job = await cluster.run(OpNodeMigrate(node_name="node1", target_node="node2"))
        assert "node node2 cannot receive the instance: it is offline" in error(job)
        job = await cluster.run(OpNodeMigrate(node_name="node1", target_node="nodeX"))
        assert "unknown node 'nodeX'" in error(job)
        job = await cluster.run(OpNodeMigrate(node_name="nodeY"))
        assert "unknown node 'nodeY'" in error(job)
        assert job_count(cluster) == before + 3
        assert cluster.config.instances["a"].primary == "node1"
    with pytest.raises(InputError, match="cannot be its own target"):
        OpNodeMigrate(node_name="node1", target_node="node1")


async def test_node_evacuate_fails_everything_over_to_the_given_target() -> None:
    async with scripted_cluster() as cluster:
        for name in ("a", "b"):
            await add_instance(cluster, name)
        job = await cluster.run(OpNodeEvacuate(node_name="node1", target_node="node3"))
        done = await children(cluster, job)
        assert all(ok(j) for j in done.values())
        assert {e["op"] for e in job.ops[0].result["jobs"]} == {"failover"}
        assert {i.primary for i in cluster.config.instances.values()} == {"node3"}
        assert set(cluster.runner.running()) == {"node3"}


async def test_an_empty_node_has_nothing_to_move() -> None:
    async with scripted_cluster() as cluster:
        job = await cluster.run(OpNodeMigrate(node_name="node2"))
        assert ok(job)
        assert job.ops[0].result["jobs"] == []


async def test_reboot_of_a_fake_guest_is_hard_and_starts_it_again() -> None:
    async with scripted_cluster() as cluster:
        await add_instance(cluster, "a")
        job = await cluster.run(OpInstanceReboot(instance_name="a", timeout=1))
        assert ok(job), error(job)
        result = job.ops[0].result
        assert result["method"] == "hard"
        trace = cluster.runner.trace()
        assert trace.index("node1 hv stop") < trace.index("node1 hv start")
        assert "node1" in cluster.runner.running()


async def test_reboot_of_a_stopped_instance_is_refused() -> None:
    async with scripted_cluster() as cluster:
        await add_instance(cluster, "a")
        await cluster.run(OpInstanceShutdown(instance_name="a"))
        job = await cluster.run(OpInstanceReboot(instance_name="a"))
        assert "marked down" in error(job)
        assert "instance startup a" in error(job)


async def test_activate_then_deactivate_disks_of_a_stopped_instance() -> None:
    async with scripted_cluster() as cluster:
        await add_instance(cluster, "a")
        assert ok(await cluster.run(OpInstanceShutdown(instance_name="a")))
        storage = cluster.runner.storage
        assert all(not v.attached for v in storage.volumes.values())
        job = await cluster.run(OpInstanceActivateDisks(instance_name="a"))
        assert ok(job), error(job)
        disks = job.ops[0].result["disks"]
        assert [d["index"] for d in disks] == [0, 1]
        assert all(d["path"] for d in disks)
        assert all(v.attached == {"node1"} for v in storage.volumes.values())
        assert cluster.runner.running() == {}, "the guest was not started"
        job = await cluster.run(OpInstanceDeactivateDisks(instance_name="a"))
        assert ok(job), error(job)
        assert all(not v.attached for v in storage.volumes.values())


async def test_deactivate_disks_is_refused_while_the_guest_runs() -> None:
    async with scripted_cluster() as cluster:
        await add_instance(cluster, "a")
        job = await cluster.run(OpInstanceDeactivateDisks(instance_name="a"))
        assert "runs on node1" in error(job)
        assert "shut it down first" in error(job)
        storage = cluster.runner.storage
        assert all(v.attached == {"node1"} for v in storage.volumes.values())


async def test_evacuating_an_offline_node_fails_its_instances_over_and_migrate_refuses() -> None:
    async with scripted_cluster() as cluster:
        for name in ("a", "b"):
            await add_instance(cluster, name)
        # node1 died: its guests are gone and it holds no volume any more.
        cluster.runner.unreachable("node1")
        cluster.runner.power_off("node1")
        assert ok(await cluster.run(OpNodeSetParams(node_name="node1", offline=True)))
        job = await cluster.run(OpNodeMigrate(node_name="node1"))
        assert "node node1 is offline" in error(job)
        assert "node evacuate node1" in error(job)
        job = await cluster.run(OpNodeEvacuate(node_name="node1"))
        done = await children(cluster, job)
        assert all(ok(j) for j in done.values()), [error(j) for j in done.values()]
        primaries = {cluster.config.instances[n].primary for n in ("a", "b")}
        assert primaries == {"node2", "node3"}, "spread over the two other nodes"
        assert cluster.runner.trace(node="node1") == [], "nothing ran on the offline node"


async def test_allow_failover_moves_an_instance_whose_guest_died() -> None:
    async with scripted_cluster() as cluster:
        await add_instance(cluster, "a")
        await add_instance(cluster, "b")
        # The guest of b died on its own: the instance is still marked up.
        cluster.runner.guests.pop(("node1", cluster.config.instances["b"].uuid))
        job = await cluster.run(OpNodeMigrate(node_name="node1", target_node="node2"))
        done = await children(cluster, job)
        assert not ok(done["b"])
        assert "does not run on node1, so it cannot migrate" in error(done["b"])
        assert ok(done["a"])
        job = await cluster.run(
            OpNodeMigrate(node_name="node1", target_node="node2", allow_failover=True)
        )
        done = await children(cluster, job)
        assert ok(done["b"]), error(done["b"])
        assert done["b"].ops[0].result["mode"] == "failover"
        assert cluster.config.instances["b"].primary == "node2"
