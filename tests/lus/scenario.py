"""Shared set-up of the in-process LU tests: a scripted cluster and an instance on it."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from extjobs.model.cluster import Instance
from extjobs.model.jobs import Job
from extjobs.model.opcodes import DiskSpec, OpInstanceCreate
from extjobs.testing import FakeProvider, TestCluster, open_test_cluster

#: A provider with exclusive locks (like tests/data/providers/strict).
STRICT = FakeProvider("strict", exclusive=True)
PROVIDERS = ("sharedfile", STRICT)


@contextlib.asynccontextmanager
async def scripted_cluster(nodes: int = 3) -> AsyncIterator[TestCluster]:
    async with open_test_cluster(nodes, providers=PROVIDERS) as cluster:
        yield cluster


def create_op(
    name: str = "web",
    node: str = "node1",
    disks: int = 2,
    provider: str = "strict",
    **extra: object,
) -> OpInstanceCreate:
    specs = tuple(
        DiskSpec(size=8 >> i, provider=provider, params={"dir": "/vols"}) for i in range(disks)
    )
    return OpInstanceCreate(instance_name=name, pnode=node, disks=specs, **extra)  # type: ignore[arg-type]


async def add_instance(cluster: TestCluster, name: str = "web", **kwargs: object) -> Instance:
    """Add an instance (two strict disks on node1 by default), then forget the calls."""
    job = await cluster.run(create_op(name, **kwargs))  # type: ignore[arg-type]
    assert ok(job)
    cluster.runner.forget()
    return cluster.config.instances[name]


def ok(job: Job) -> bool:
    return job.status.value == "success"


def error(job: Job) -> str:
    return " ".join(str(op.error["message"]) for op in job.ops if op.error)
