"""Storage pools, in process: add and connect check the provider on the nodes, pool
parameters reach the disks (the disk's own win), modify and remove of a pool in use."""

from __future__ import annotations

import pytest

from extjobs.model.cluster import NodeGroup
from extjobs.model.opcodes import (
    DiskSpec,
    OpClusterSetParams,
    OpGroupSetParams,
    OpInstanceCreate,
    OpStoragePoolAdd,
    OpStoragePoolModify,
    OpStoragePoolQuery,
)
from extjobs.model.remote import CommandResult
from extjobs.testing import TestCluster
from tests.lus.scenario import error, ok, scripted_cluster

pytestmark = pytest.mark.usefixtures("engine_backend")

#: What a node says when its copy of sharedfile has no create script.
BROKEN = CommandResult(
    0,
    "extjobs-diagnose 1\nprovider sharedfile\npath /srv/extjobs/extstorage/sharedfile\n"
    "reason script create is missing\nend\ndone\n",
)


async def add_pool(cluster: TestCluster, **params: str) -> None:
    job = await cluster.run(
        OpStoragePoolAdd(pool_name="fast", provider="sharedfile", params=params)
    )
    assert ok(job), error(job)


def pool_disk(size: int = 8, **params: str) -> OpInstanceCreate:
    return OpInstanceCreate(
        instance_name="web", pnode="node1", disks=(DiskSpec(size=size, pool="fast", params=params),)
    )


async def test_add_refuses_a_provider_valid_in_no_group_and_says_what_to_run() -> None:
    async with scripted_cluster() as cluster:
        job = await cluster.run(OpStoragePoolAdd(pool_name="p", provider="nosuch"))
        assert not ok(job)
        text = error(job)
        assert "valid in no node group" in text
        assert "node1: not found in" in text
        assert "extjobs storage install" in text
        assert "extjobs storage diagnose nosuch" in text
        assert cluster.config.cluster is not None
        assert "p" not in cluster.config.cluster.pools


async def test_add_refuses_parameters_the_provider_does_not_declare() -> None:
    async with scripted_cluster() as cluster:
        job = await cluster.run(
            OpStoragePoolAdd(pool_name="p", provider="sharedfile", params={"colour": "blue"})
        )
        assert not ok(job)
        assert "colour" in error(job)
        assert cluster.config.cluster is not None
        assert cluster.config.cluster.pools == {}


async def test_connect_refuses_a_group_where_a_node_lacks_the_provider_naming_it() -> None:
    async with scripted_cluster() as cluster:
        await add_pool(cluster, dir="/pool")
        cluster.runner.on(kind="diagnose", node="node2", result=BROKEN)
        job = await cluster.run(OpGroupSetParams(group_name="default", connect_pools=("fast",)))
        assert not ok(job)
        text = error(job)
        assert "cannot connect storage pool 'fast' to node group default" in text
        assert "node2: script create is missing" in text
        assert "extjobs storage install DIR --group default" in text
        assert cluster.config.group("default").pools == ()


async def test_pool_parameters_reach_the_scripts_under_the_disks_own() -> None:
    async with scripted_cluster() as cluster:
        await add_pool(cluster, dir="/pool")
        assert ok(
            await cluster.run(OpGroupSetParams(group_name="default", connect_pools=("fast",)))
        )
        job = await cluster.run(pool_disk())
        assert ok(job), error(job)
        disk = cluster.config.instances["web"].disks[0]
        assert (disk.pool, disk.provider, disk.params) == ("fast", "sharedfile", {"dir": "/pool"})
        create = cluster.runner.select(kind="provider", action="create")[0]
        assert create.env["EXTP_DIR"] == "/pool"
        # The disk's own value wins over the pool's.
        cluster.runner.forget()
        job = await cluster.run(
            OpInstanceCreate(
                instance_name="db",
                pnode="node1",
                disks=(DiskSpec(size=8, pool="fast", params={"dir": "/own"}),),
            )
        )
        assert ok(job), error(job)
        assert cluster.runner.select(kind="provider", action="create")[0].env["EXTP_DIR"] == "/own"


async def test_modify_of_a_pool_in_use_changes_only_future_disks_and_says_so() -> None:
    async with scripted_cluster() as cluster:
        await add_pool(cluster, dir="/pool")
        assert ok(
            await cluster.run(OpGroupSetParams(group_name="default", connect_pools=("fast",)))
        )
        assert ok(await cluster.run(pool_disk()))
        job = await cluster.run(OpStoragePoolModify(pool_name="fast", params={"dir": "/new"}))
        assert ok(job), error(job)
        result = job.ops[0].result
        assert result["in_use"] == ["web/disk0"]
        assert "only disks created from now on" in result["note"]
        assert cluster.config.instances["web"].disks[0].params == {"dir": "/pool"}
        query = await cluster.run(OpStoragePoolQuery(names=("fast",)))
        summary = query.ops[0].result["pools"]["fast"]
        # No capacity script in the scripted sharedfile: unknown.
        assert summary.pop("capacity")["default"]["free"] is None
        assert summary == {
            "pool": "fast",
            "provider": "sharedfile",
            "params": {"dir": "/new"},
            "groups": ["default"],
            "disks": ["web/disk0"],
        }
        bad = await cluster.run(OpStoragePoolModify(pool_name="fast", params={"colour": "x"}))
        assert not ok(bad)
        assert "colour" in error(bad)


async def test_remove_of_a_pool_in_use_is_refused_naming_the_disk() -> None:
    async with scripted_cluster() as cluster:
        await add_pool(cluster, dir="/pool")
        assert ok(
            await cluster.run(OpGroupSetParams(group_name="default", connect_pools=("fast",)))
        )
        assert ok(await cluster.run(pool_disk()))
        job = await cluster.run(OpClusterSetParams(remove_pools=("fast",)))
        assert not ok(job)
        assert "web/disk0" in error(job)
        assert cluster.config.cluster is not None
        assert cluster.config.cluster.pool_params == {"fast": {"dir": "/pool"}}


async def test_remove_drops_the_pools_parameters_and_its_connections() -> None:
    async with scripted_cluster() as cluster:
        await add_pool(cluster, dir="/pool")
        assert ok(
            await cluster.run(OpGroupSetParams(group_name="default", connect_pools=("fast",)))
        )
        assert ok(await cluster.run(OpClusterSetParams(remove_pools=("fast",))))
        cfg = cluster.config
        assert cfg.cluster is not None
        assert (cfg.cluster.pools, cfg.cluster.pool_params) == ({}, {})
        assert cfg.group("default") == NodeGroup("default")


def test_a_cluster_stored_before_pool_parameters_still_reads() -> None:
    from extjobs.model import codec
    from extjobs.model.cluster import Cluster

    old = {
        "name": "c",
        "created": 0.0,
        "search_path": None,
        "pools": {"p": "sharedfile"},
        "default_group": "default",
        "hv_run_dir": None,
    }
    cluster = codec.structure(old, Cluster)
    assert (cluster.pools, cluster.pool_params) == ({"p": "sharedfile"}, {})


async def test_a_group_without_online_nodes_can_be_connected_without_asking_anyone() -> None:
    from extjobs.model.opcodes import OpGroupAdd

    async with scripted_cluster() as cluster:
        await add_pool(cluster, dir="/pool")
        assert ok(await cluster.run(OpGroupAdd(group_name="empty")))
        asked = cluster.runner.mark()
        job = await cluster.run(OpGroupSetParams(group_name="empty", connect_pools=("fast",)))
        assert ok(job), error(job)
        assert cluster.config.group("empty").pools == ("fast",)
        assert cluster.runner.calls[asked:] == []
