"""Grow disk, remove, startup, shutdown and rename, in process: which scripts run where,
in order."""

from __future__ import annotations

import attrs
import pytest

from extjobs.model.opcodes import (
    OpInstanceGrowDisk,
    OpInstanceRemove,
    OpInstanceRename,
    OpInstanceShutdown,
    OpInstanceStartup,
)
from extjobs.model.remote import CommandResult
from extjobs.testing import Call
from tests.lus.scenario import add_instance, error, ok, scripted_cluster

pytestmark = pytest.mark.usefixtures("engine_backend")

RELEASE = ["close disk1", "detach disk1", "close disk0", "detach disk0"]
ACTIVATE = ["attach disk0", "open disk0 exclusive", "attach disk1", "open disk1 exclusive"]


async def test_grow_of_a_running_instance_attaches_grows_and_checks_the_size() -> None:
    async with scripted_cluster() as cluster:
        await add_instance(cluster)
        job = await cluster.run(OpInstanceGrowDisk(instance_name="web", disk=0, amount=24))
        assert ok(job), error(job)
        runner = cluster.runner
        assert runner.labels("node1", "provider", "size-check") == [
            "attach disk0",
            "grow disk0",
            "size",
        ]
        (grow,) = runner.select(action="grow")
        assert (grow.env["VOL_SIZE"], grow.env["VOL_NEW_SIZE"]) == ("8", "32")
        assert cluster.config.instances["web"].disks[0].size == 32
        assert job.ops[0].result["size_on_node"] == 32 * 1024 * 1024


async def test_grow_of_a_stopped_instance_detaches_the_disk_again() -> None:
    async with scripted_cluster() as cluster:
        await add_instance(cluster, start=False)
        job = await cluster.run(
            OpInstanceGrowDisk(instance_name="web", disk=1, amount=16, absolute=True)
        )
        assert ok(job), error(job)
        assert cluster.runner.labels("node1") == ["attach disk1", "grow disk1", "detach disk1"]
        assert cluster.runner.storage.attached_anywhere() == {}


async def test_grow_that_did_not_grow_fails_and_leaves_the_size_alone() -> None:
    async with scripted_cluster() as cluster:
        await add_instance(cluster)
        cluster.runner.on(kind="size-check", result=CommandResult(0, f"{8 * 1024 * 1024}\n"))
        job = await cluster.run(OpInstanceGrowDisk(instance_name="web", disk=0, amount=8))
        assert not ok(job)
        assert "not the" in error(job)
        assert cluster.config.instances["web"].disks[0].size == 8


async def test_a_grow_cancelled_after_the_provider_grew_records_the_new_size() -> None:
    async with scripted_cluster() as cluster:
        await add_instance(cluster, start=False)
        queue = cluster.engine.queue
        job_id = cluster.engine.submit(OpInstanceGrowDisk(instance_name="web", disk=0, amount=24))

        def cancel_now(call: Call) -> None:
            queue.cancel(job_id)  # the grow has run on the node; the cancel lands after it

        cluster.runner.on(kind="provider", action="grow", handler=cancel_now, times=1)
        job = await cluster.engine.wait(job_id, timeout=10)
        assert job.status.value == "canceled"
        # The storage says 32 MiB, and so does the configuration: a later grow to 24 MiB
        # is refused as a shrink instead of shrinking the view of the disk.
        assert cluster.config.instances["web"].disks[0].size == 32
        assert cluster.runner.storage.attached_anywhere() == {}
        messages = [e.message for e in cluster.engine.log(job_id)]
        assert any("had grown to 32 MiB before the grow was stopped" in m for m in messages)


async def test_shrinking_is_refused_before_any_step() -> None:
    async with scripted_cluster() as cluster:
        await add_instance(cluster)
        job = await cluster.run(
            OpInstanceGrowDisk(instance_name="web", disk=0, amount=4, absolute=True)
        )
        assert not ok(job)
        assert "shrink" in error(job)
        assert cluster.runner.calls == []


async def test_remove_stops_the_guest_then_detaches_and_removes_each_disk() -> None:
    async with scripted_cluster() as cluster:
        await add_instance(cluster)
        job = await cluster.run(OpInstanceRemove(instance_name="web"))
        assert ok(job), error(job)
        assert cluster.runner.labels("node1") == [
            "hv stop",
            "close disk1",
            "detach disk1",
            "remove disk1",
            "close disk0",
            "detach disk0",
            "remove disk0",
        ]
        assert cluster.runner.storage.volumes == {}
        assert cluster.runner.guests == {}
        assert "web" not in cluster.config.instances


async def test_remove_whose_detach_fails_keeps_that_volume_for_cleanup() -> None:
    async with scripted_cluster() as cluster:
        inst = await add_instance(cluster)
        cluster.runner.fail("detach", disk=1, stderr="device busy")
        job = await cluster.run(OpInstanceRemove(instance_name="web"))
        assert not ok(job)
        assert "device busy" in error(job)
        labels = cluster.runner.labels("node1")
        assert "remove disk1" not in labels
        assert labels[-3:] == ["close disk0", "detach disk0", "remove disk0"]
        left = cluster.config.instances["web"]
        assert [d.index for d in left.disks] == [1]
        assert set(left.cleanup) == {inst.disks[1].uuid}
        assert list(cluster.runner.storage.volumes) == [inst.disks[1].volume_name]


async def test_shutdown_stops_the_guest_then_releases_the_disks() -> None:
    async with scripted_cluster() as cluster:
        await add_instance(cluster)
        job = await cluster.run(OpInstanceShutdown(instance_name="web"))
        assert ok(job), error(job)
        assert cluster.runner.labels("node1") == ["hv stop", *RELEASE]
        assert cluster.runner.storage.attached_anywhere() == {}
        assert cluster.config.instances["web"].admin_up is False


async def test_startup_attaches_and_opens_every_disk_before_the_guest_starts() -> None:
    async with scripted_cluster() as cluster:
        await add_instance(cluster, start=False)
        job = await cluster.run(OpInstanceStartup(instance_name="web"))
        assert ok(job), error(job)
        assert cluster.runner.labels("node1") == [*ACTIVATE, "hv start"]
        assert cluster.config.instances["web"].admin_up is True


async def test_startup_whose_guest_fails_to_start_releases_the_disks_again() -> None:
    async with scripted_cluster() as cluster:
        await add_instance(cluster, start=False)
        cluster.runner.fail("start", kind="hypervisor", stderr="no memory")
        job = await cluster.run(OpInstanceStartup(instance_name="web"))
        assert not ok(job)
        assert cluster.runner.labels("node1") == [*ACTIVATE, "hv start", "hv stop", *RELEASE]
        assert cluster.runner.storage.attached_anywhere() == {}
        assert cluster.config.instances["web"].admin_up is False


async def test_rename_of_a_stopped_instance_sets_the_metadata_and_keeps_the_volumes() -> None:
    async with scripted_cluster() as cluster:
        before = await add_instance(cluster, start=False)
        job = await cluster.run(OpInstanceRename(instance_name="web", new_name="db"))
        assert ok(job), error(job)
        assert job.ops[0].result == {"instance": "db", "old_name": "web"}
        runner = cluster.runner
        assert runner.labels("node1") == ["setinfo disk0", "setinfo disk1"]
        calls = runner.select(action="setinfo")
        assert [c.env["VOL_METADATA"] for c in calls] == ["originstname+db"] * 2
        # VOL_NAME comes from the disk's uuid: the volumes on the storage keep their names.
        assert [c.env["VOL_NAME"] for c in calls] == [d.volume_name for d in before.disks]
        assert sorted(runner.storage.volumes) == sorted(d.volume_name for d in before.disks)
        after = cluster.config.instances["db"]
        assert "web" not in cluster.config.instances
        assert after == attrs.evolve(before, name="db")
        assert runner.storage.attached_anywhere() == {}


async def test_rename_of_a_running_instance_leaves_the_guest_alone() -> None:
    async with scripted_cluster() as cluster:
        await add_instance(cluster)
        guests = dict(cluster.runner.guests)
        job = await cluster.run(OpInstanceRename(instance_name="web", new_name="db"))
        assert ok(job), error(job)
        # No hypervisor call: the guest's files on the node are keyed by the uuid.
        assert cluster.runner.labels("node1") == ["setinfo disk0", "setinfo disk1"]
        assert cluster.runner.guests == guests
        assert cluster.config.instances["db"].admin_up is True


@pytest.mark.parametrize(
    ("old", "new", "text"),
    [
        pytest.param("web", "app", "instance 'app' already exists", id="taken"),
        pytest.param("ghost", "db", "ghost", id="unknown"),
    ],
)
async def test_rename_is_refused_before_any_step(old: str, new: str, text: str) -> None:
    async with scripted_cluster() as cluster:
        await add_instance(cluster, start=False)
        await add_instance(cluster, "app", start=False)
        job = await cluster.run(OpInstanceRename(instance_name=old, new_name=new))
        assert not ok(job)
        assert text in error(job)
        assert cluster.runner.calls == []
        assert sorted(cluster.config.instances) == ["app", "web"]
