"""Shared set-up of the in-process LU tests: a scripted cluster and an instance on it."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import attrs

from extjobs.model.cluster import Instance
from extjobs.model.config import Config
from extjobs.model.jobs import Job
from extjobs.model.opcodes import DiskSpec, OpInstanceCreate
from extjobs.testing import FakeProvider, TestCluster, open_test_cluster
from extjobs.testing.engine import StoreKind

#: A provider with exclusive locks (like tests/data/providers/strict).
STRICT = FakeProvider("strict", exclusive=True)
PROVIDERS = ("sharedfile", STRICT)


@attrs.frozen
class EngineSetting:
    """How :func:`scripted_cluster` builds its engine (set by ``tests/lus/conftest.py``)."""

    config: Config | None = None
    store: StoreKind = "memory"
    group_commit: bool = False


ENGINE = EngineSetting()


@contextlib.asynccontextmanager
async def scripted_cluster(nodes: int = 3) -> AsyncIterator[TestCluster]:
    async with open_test_cluster(
        nodes,
        providers=PROVIDERS,
        config=ENGINE.config,
        store=ENGINE.store,
        group_commit=ENGINE.group_commit,
    ) as cluster:
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
