"""Change-group: an instance moves to a node of another group when every disk's pool is
connected and its provider valid there (a running one live-migrates), else nothing
changes and the error names the disk.

Groups: ``default`` (node1…node3) and ``other`` (node4, node5). Pool ``shared`` is
connected to both, pool ``local`` to ``default`` only.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import pytest

from extjobs.extstorage.diagnose import FORMAT_HEADER
from extjobs.model.opcodes import (
    DiskSpec,
    OpGroupAdd,
    OpGroupSetParams,
    OpInstanceChangeGroup,
    OpInstanceCreate,
    OpNodeAdd,
    OpStoragePoolAdd,
)
from extjobs.model.remote import CommandResult
from extjobs.testing import TestCluster
from tests.lus.scenario import error, ok, scripted_cluster

pytestmark = pytest.mark.usefixtures("engine_backend")


@contextlib.asynccontextmanager
async def two_groups() -> AsyncIterator[TestCluster]:
    async with scripted_cluster() as cluster:
        ops = [
            OpGroupAdd(group_name="other"),
            OpNodeAdd(node_name="node4", group="other", accept_new_host_key=True),
            OpNodeAdd(node_name="node5", group="other", accept_new_host_key=True),
            OpStoragePoolAdd(pool_name="shared", provider="strict", params={"dir": "/s"}),
            OpStoragePoolAdd(pool_name="local", provider="sharedfile", params={"dir": "/l"}),
            OpGroupSetParams(group_name="default", connect_pools=("shared", "local")),
            OpGroupSetParams(group_name="other", connect_pools=("shared",)),
        ]
        for op in ops:
            job = await cluster.run(op)
            assert ok(job), error(job)
        yield cluster


async def add(cluster: TestCluster, name: str, *pools: str, start: bool = True) -> None:
    disks = tuple(DiskSpec(size=8, pool=p) for p in pools)
    job = await cluster.run(
        OpInstanceCreate(instance_name=name, pnode="node1", disks=disks, start=start)
    )
    assert ok(job), error(job)
    cluster.runner.forget()


async def test_a_running_instance_live_migrates_into_the_other_group() -> None:
    async with two_groups() as cluster:
        await add(cluster, "web", "shared", "shared")
        job = await cluster.run(OpInstanceChangeGroup(instance_name="web", group_name="other"))
        assert ok(job), error(job)
        assert cluster.config.instances["web"].primary == "node4"
        assert job.ops[0].result["group"] == "other"
        # the migrate order: the source re-opens shared before the target touches anything
        assert cluster.runner.trace() == [
            "node1 open disk0 shared",
            "node1 open disk1 shared",
            "node4 attach disk0",
            "node4 open disk0 shared",
            "node4 attach disk1",
            "node4 open disk1 shared",
            "node4 hv start",
            "node1 hv stop",
            "node1 close disk1",
            "node1 detach disk1",
            "node1 close disk0",
            "node1 detach disk0",
            "node4 open disk0 exclusive",
            "node4 open disk1 exclusive",
        ]
        storage = cluster.runner.storage
        assert storage.attached_anywhere() == {v: {"node4"} for v in storage.volumes}
        assert set(cluster.runner.running()) == {"node4"}


async def test_a_stopped_instance_moves_its_primary_and_holds_its_disks_nowhere() -> None:
    async with two_groups() as cluster:
        await add(cluster, "cold", "shared", start=False)
        op = OpInstanceChangeGroup(instance_name="cold", group_name="other", target_node="node5")
        job = await cluster.run(op)
        assert ok(job), error(job)
        assert cluster.config.instances["cold"].primary == "node5"
        assert job.ops[0].result["mode"] == "stopped"
        assert cluster.runner.storage.attached_anywhere() == {}
        assert cluster.runner.running() == {}
        assert not [c for c in cluster.runner.select(kind="provider") if c.node == "node5"]


async def test_a_disk_whose_pool_is_not_connected_there_is_named_and_nothing_changes() -> None:
    async with two_groups() as cluster:
        await add(cluster, "web", "shared", "local")
        job = await cluster.run(OpInstanceChangeGroup(instance_name="web", group_name="other"))
        assert not ok(job)
        text = error(job)
        assert "disk 1 (pool local) not connected there" in text
        assert "'extjobs storage pool connect local other'" in text
        assert cluster.config.instances["web"].primary == "node1"
        assert cluster.runner.trace() == []


async def test_a_provider_broken_on_one_node_of_the_group_is_refused_naming_the_disk() -> None:
    async with two_groups() as cluster:
        await add(cluster, "web", "shared")
        broken = f"{FORMAT_HEADER}\nprovider strict\nreason script attach is missing\nend\ndone"
        cluster.runner.on(kind="diagnose", node="node5", result=CommandResult(0, broken + "\n"))
        job = await cluster.run(OpInstanceChangeGroup(instance_name="web", group_name="other"))
        assert not ok(job)
        text = error(job)
        assert "cannot move web to node group other: disk 0 (provider strict)" in text
        assert "node5: script attach is missing" in text
        assert cluster.config.instances["web"].primary == "node1"
        assert cluster.runner.trace() == []


@pytest.mark.parametrize(
    ("group", "target", "says"),
    [
        pytest.param("default", None, "already in node group default", id="same-group"),
        pytest.param("nosuch", None, "unknown node group 'nosuch'", id="unknown-group"),
        pytest.param("other", "node2", "it is in node group default, not other", id="target"),
    ],
)
async def test_bad_requests_are_refused(group: str, target: str | None, says: str) -> None:
    async with two_groups() as cluster:
        await add(cluster, "web", "shared")
        op = OpInstanceChangeGroup(instance_name="web", group_name=group, target_node=target)
        job = await cluster.run(op)
        assert not ok(job)
        assert says in error(job)
        assert cluster.config.instances["web"].primary == "node1"
        assert cluster.runner.trace() == []
