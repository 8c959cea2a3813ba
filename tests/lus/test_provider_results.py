"""Providers that exit 0 after failing: the next check finds out, and its error quotes
what the script said on stderr; the job log never says "created" for a volume that
check proved missing."""

from __future__ import annotations

from extjobs.model.opcodes import OpInstanceGrowDisk
from extjobs.model.remote import CommandResult
from tests.lus.scenario import add_instance, create_op, error, ok, scripted_cluster

CREATE_SAID = "lvcreate: Volume group vg0 has insufficient free space (12 extents)"
GROW_SAID = "lvextend: quota of project web exceeded"


async def test_a_create_that_exits_0_but_made_nothing_is_named_with_its_stderr() -> None:
    async with scripted_cluster() as cluster:
        runner = cluster.runner
        runner.on(
            kind="provider", action="create", disk=0, result=CommandResult(0, stderr=CREATE_SAID)
        )
        # The provider printed a device path, but nothing is there.
        runner.on(kind="block-device-check", result=CommandResult(1))
        job = await cluster.run(create_op(disks=1))
        assert not ok(job)
        message = error(job)
        assert "is not a block device" in message
        assert "create had exited 0 but said on stderr" in message
        assert CREATE_SAID in message
        assert job.ops[0].error is not None
        assert job.ops[0].error["create_stderr_tail"] == CREATE_SAID
        log = [e.message for e in cluster.engine.log(job.id)]  # type: ignore[union-attr]
        assert not [m for m in log if "created" in m and "disk0" in m], log
        assert "web" not in cluster.config.instances


async def test_a_create_that_says_nothing_leaves_the_error_as_it_was() -> None:
    async with scripted_cluster() as cluster:
        cluster.runner.on(kind="block-device-check", result=CommandResult(1))
        job = await cluster.run(create_op(disks=1))
        assert not ok(job)
        assert "said on stderr" not in error(job)


async def test_created_is_logged_once_attach_found_the_volume() -> None:
    async with scripted_cluster() as cluster:
        job = await cluster.run(create_op(disks=1))
        assert ok(job), error(job)
        log = [e.message for e in cluster.engine.log(job.id)]  # type: ignore[union-attr]
        created = next(i for i, m in enumerate(log) if "disk0: created" in m)
        attach = next(i for i, m in enumerate(log) if "attach disk0" in m)
        check = next(i for i, m in enumerate(log) if "is a block device" in m)
        assert attach < check < created


async def test_a_grow_that_exits_0_but_did_not_grow_is_named_with_its_stderr() -> None:
    async with scripted_cluster() as cluster:
        inst = await add_instance(cluster, disks=1)
        runner = cluster.runner
        runner.on(kind="provider", action="grow", result=CommandResult(0, stderr=GROW_SAID))
        old = inst.disks[0].size
        runner.on(kind="size-check", result=CommandResult(0, f"{old * 1024 * 1024}\n"))
        job = await cluster.run(OpInstanceGrowDisk(instance_name="web", disk=0, amount=8))
        assert not ok(job)
        message = error(job)
        assert "grow reported success but" in message
        assert f"grow had exited 0 but said on stderr: {GROW_SAID!r}" in message
