"""verify, in process: every configured disk is attached on its primary and measured."""

from __future__ import annotations

from typing import Any

from extjobs.errors import CommandTimeoutError
from extjobs.model.opcodes import (
    OpClusterVerify,
    OpInstanceActivateDisks,
    OpInstanceDeactivateDisks,
    OpInstanceFailover,
    OpInstanceShutdown,
    OpNodeMigrate,
)
from extjobs.testing import TestCluster
from tests.lus.scenario import add_instance, error, ok, scripted_cluster


async def _findings(cluster: TestCluster) -> list[dict[str, Any]]:
    job = await cluster.run(OpClusterVerify())
    assert ok(job), error(job)
    return list(job.ops[0].result["findings"])


async def test_each_disk_is_attached_on_the_primary_and_measured() -> None:
    async with scripted_cluster(2) as cluster:
        await add_instance(cluster)
        assert await _findings(cluster) == []
        # The guest runs: its disks stay attached (attach is idempotent), nothing detached.
        assert cluster.runner.labels("node1", "provider") == ["attach disk0", "attach disk1"]
        assert len(cluster.runner.select(kind="size-check", node="node1")) == 2


async def test_a_size_other_than_the_configured_one_is_a_finding() -> None:
    async with scripted_cluster(2) as cluster:
        web = await add_instance(cluster)
        cluster.runner.storage.volumes[web.disks[1].volume_name].size = 6
        [found] = await _findings(cluster)
        assert found["kind"] == "size-mismatch"
        assert found["message"].startswith(f"disk 1 of web ({web.disks[1].volume_name}) is ")
        assert "(6 MiB) on node1" in found["message"]
        assert "the configuration says 4 MiB" in found["message"]


async def test_a_volume_the_provider_cannot_attach_is_missing() -> None:
    async with scripted_cluster(2) as cluster:
        await add_instance(cluster)
        cluster.runner.fail("attach", disk=0, stderr="volume web0 does not exist")
        [found] = await _findings(cluster)
        assert found["kind"] == "missing-volume"
        assert "disk 0 of web" in found["message"]
        assert "volume web0 does not exist" in found["message"]


async def test_the_disks_of_a_down_instance_are_detached_again() -> None:
    async with scripted_cluster(2) as cluster:
        await add_instance(cluster, start=False)
        assert await _findings(cluster) == []
        assert cluster.runner.labels("node1", "provider") == [
            "attach disk0",
            "detach disk0",
            "attach disk1",
            "detach disk1",
        ]
        assert cluster.runner.storage.attached_anywhere() == {}


async def test_the_activated_disks_of_a_down_instance_stay_attached() -> None:
    async with scripted_cluster(2) as cluster:
        web = await add_instance(cluster, start=False)
        job = await cluster.run(OpInstanceActivateDisks(instance_name="web"))
        assert ok(job), error(job)
        assert cluster.config.instance("web").disks_active is True
        before = cluster.runner.storage.attached_anywhere()
        assert set(before) == {d.volume_name for d in web.disks}
        assert await _findings(cluster) == []
        # Checked (attach is idempotent), never detached: the repair keeps its disks.
        labels = cluster.runner.labels("node1", "provider")
        assert "detach disk0" not in labels
        assert "detach disk1" not in labels
        assert cluster.runner.storage.attached_anywhere() == before
        job = await cluster.run(OpInstanceDeactivateDisks(instance_name="web"))
        assert ok(job), error(job)
        assert cluster.config.instance("web").disks_active is False
        assert cluster.runner.storage.attached_anywhere() == {}


async def test_a_stopped_instance_with_activated_disks_does_not_move() -> None:
    async with scripted_cluster(2) as cluster:
        await add_instance(cluster, start=False)
        assert ok(await cluster.run(OpInstanceActivateDisks(instance_name="web")))
        for op in (
            OpInstanceFailover(instance_name="web", target_node="node2"),
            OpNodeMigrate(node_name="node1", target_node="node2"),
        ):
            job = await cluster.run(op)
            assert not ok(job)
            assert "deactivate them first" in error(job), error(job)
        assert cluster.config.instance("web").primary == "node1"
        # A shutdown releases them too.
        assert ok(await cluster.run(OpInstanceShutdown(instance_name="web")))
        assert cluster.config.instance("web").disks_active is False
        assert cluster.runner.storage.attached_anywhere() == {}


async def test_a_provider_invalid_on_the_primary_is_reported() -> None:
    async with scripted_cluster(2) as cluster:
        await add_instance(cluster)
        cluster.runner.providers.pop("strict")
        [found] = await _findings(cluster)
        assert found["kind"] == "provider-unusable"
        assert "provider strict is not usable on node1" in found["message"]
        assert "the disks of web there were not checked" in found["message"]


async def test_a_check_that_times_out_is_reported_unchecked() -> None:
    async with scripted_cluster(2) as cluster:
        await add_instance(cluster)
        timeout = CommandTimeoutError("size check timed out after 30s", node="node1")
        cluster.runner.on(kind="size-check", node="node1", error=timeout, times=1)
        [found] = await _findings(cluster)
        assert found["kind"] == "disk-unchecked"
        assert found["message"].startswith("disk 0 of web")
        assert "could not be checked on node1: size check timed out" in found["message"]
