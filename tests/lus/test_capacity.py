"""Provider capacity, in process: instance add refuses disks that do not fit before
creating anything, storage info asks a shared provider once per group, pools ask with
their parameters."""

from __future__ import annotations

import pytest

from extjobs.model.opcodes import (
    DiskSpec,
    OpExtStorageDiagnose,
    OpGroupSetParams,
    OpInstanceCreate,
    OpStoragePoolAdd,
    OpStoragePoolQuery,
)
from extjobs.model.remote import CommandResult
from tests.lus.scenario import error, ok, scripted_cluster

pytestmark = pytest.mark.usefixtures("engine_backend")

SHARED = CommandResult(0, "100 40\nshared\n")


def two_disks(size0: int, size1: int, **extra: object) -> OpInstanceCreate:
    return OpInstanceCreate(
        instance_name="web",
        pnode="node1",
        disks=(
            DiskSpec(size=size0, provider="sharedfile", params={"dir": "/vols"}),
            DiskSpec(size=size1, provider="sharedfile", params={"dir": "/vols"}),
        ),
        **extra,  # type: ignore[arg-type]
    )


async def test_disks_that_do_not_fit_are_refused_with_the_figures_before_any_create() -> None:
    async with scripted_cluster() as cluster:
        cluster.runner.on(kind="capacity", result=SHARED)
        job = await cluster.run(two_disks(30, 20))
        assert not ok(job)
        text = error(job)
        assert "disk 0, disk 1 need 50 MiB of provider sharedfile (dir=/vols)" in text
        assert "node node1 reports 40 MiB free of 100 MiB" in text
        assert "nothing was created" in text
        assert cluster.runner.select(kind="provider") == []
        assert "web" not in cluster.config.instances
        (asked,) = cluster.runner.select(kind="capacity")
        assert asked.node == "node1"
        assert asked.env["EXTP_DIR"] == "/vols"
        assert asked.env["EXTP_PROVIDER"] == "sharedfile"
        assert "VOL_NAME" not in asked.env


async def test_force_creates_them_anyway_with_a_warning() -> None:
    async with scripted_cluster() as cluster:
        cluster.runner.on(kind="capacity", result=SHARED)
        job = await cluster.run(two_disks(30, 20, force=True))
        assert ok(job), error(job)
        warnings = [e.message for e in cluster.engine.log(job.id) if e.kind.value == "warning"]  # type: ignore[union-attr]
        assert any("creating anyway (force)" in w for w in warnings)


async def test_disks_that_fit_are_created() -> None:
    async with scripted_cluster() as cluster:
        cluster.runner.on(kind="capacity", result=SHARED)
        assert ok(await cluster.run(two_disks(30, 10)))


async def test_a_provider_without_capacity_script_is_not_checked() -> None:
    async with scripted_cluster() as cluster:
        job = await cluster.run(two_disks(3000, 1000))
        assert ok(job), error(job)


async def test_storage_info_asks_one_node_of_a_group_when_the_provider_says_shared() -> None:
    async with scripted_cluster() as cluster:
        cluster.runner.on(kind="capacity", provider="sharedfile", result=SHARED)
        job = await cluster.run(OpExtStorageDiagnose(providers=("sharedfile",), capacity=True))
        assert ok(job), error(job)
        cap = job.ops[0].result["groups"]["default"]["sharedfile"]["capacity"]
        assert (cap["total"], cap["free"], cap["shared"]) == (100, 40, True)
        assert [c.node for c in cluster.runner.select(kind="capacity")] == ["node1"]


async def test_local_storage_is_asked_on_every_node_and_the_smallest_counts() -> None:
    async with scripted_cluster() as cluster:
        for node, free in (("node1", 50), ("node2", 20), ("node3", 70)):
            cluster.runner.on(kind="capacity", node=node, result=CommandResult(0, f"100 {free}\n"))
        job = await cluster.run(OpExtStorageDiagnose(providers=("sharedfile",), capacity=True))
        cap = job.ops[0].result["groups"]["default"]["sharedfile"]["capacity"]
        assert (cap["total"], cap["free"], cap["shared"]) == (100, 20, False)
        assert sorted(cap["nodes"]) == ["node1", "node2", "node3"]


async def test_unknown_capacity_says_why() -> None:
    async with scripted_cluster() as cluster:
        cluster.runner.on(kind="capacity", result=CommandResult(0, "lots\n"))
        job = await cluster.run(OpExtStorageDiagnose(providers=("sharedfile",), capacity=True))
        cap = job.ops[0].result["groups"]["default"]["sharedfile"]["capacity"]
        assert cap["free"] is None
        assert "expected 'TOTAL FREE'" in cap["nodes"]["node1"]["error"]


async def test_a_pool_is_asked_with_its_parameters() -> None:
    async with scripted_cluster() as cluster:
        cluster.runner.on(kind="capacity", result=SHARED)
        add = OpStoragePoolAdd(pool_name="fast", provider="sharedfile", params={"dir": "/pool"})
        assert ok(await cluster.run(add))
        assert ok(
            await cluster.run(OpGroupSetParams(group_name="default", connect_pools=("fast",)))
        )
        job = await cluster.run(OpStoragePoolQuery())
        assert ok(job), error(job)
        assert job.ops[0].result["pools"]["fast"]["capacity"]["default"]["free"] == 40
        assert cluster.runner.select(kind="capacity")[-1].env["EXTP_DIR"] == "/pool"


async def test_malformed_capacity_output_refuses_the_disks_quoting_it_before_any_create() -> None:
    async with scripted_cluster() as cluster:
        cluster.runner.on(kind="capacity", result=CommandResult(0, "plenty of room\n"))
        job = await cluster.run(two_disks(30, 20))
        assert not ok(job)
        text = error(job)
        assert "cannot tell the free space for disk 0, disk 1 on node node1" in text
        assert "capacity of provider sharedfile on node node1: expected 'TOTAL FREE'" in text
        assert "'plenty of room\\n'" in text
        assert "nothing was created" in text
        assert cluster.runner.select(kind="provider") == []
        assert "web" not in cluster.config.instances
        forced = await cluster.run(two_disks(30, 20, force=True))
        assert ok(forced), error(forced)


async def test_a_failing_capacity_script_passes_the_node_over_in_placement() -> None:
    async with scripted_cluster() as cluster:
        cluster.runner.on(
            kind="capacity", node="node1", result=CommandResult(2, stderr="df: no such dir\n")
        )
        disk = DiskSpec(size=8, provider="sharedfile", params={"dir": "/vols"})
        job = await cluster.run(OpInstanceCreate(instance_name="auto", disks=(disk,)))
        assert ok(job), error(job)
        assert cluster.config.instances["auto"].primary == "node2"
        log = "\n".join(e.message for e in cluster.engine.log(job.id))  # type: ignore[union-attr]
        assert "node1: not enough storage: cannot tell the free space for disk 0" in log
        assert "df: no such dir" in log
