"""verify, in process: what it asks the nodes, and what it finds."""

from __future__ import annotations

import pytest

from extjobs.model.opcodes import OpClusterVerify
from tests.lus.scenario import add_instance, error, ok, scripted_cluster

pytestmark = pytest.mark.usefixtures("engine_backend")


async def test_an_unreachable_node_without_instances_is_found() -> None:
    async with scripted_cluster(3) as cluster:
        cluster.runner.unreachable("node3")
        job = await cluster.run(OpClusterVerify())
        assert ok(job), error(job)
        result = job.ops[0].result
        assert not result["clean"]
        [finding] = result["findings"]
        assert finding["kind"] == "unreachable"
        assert "node node3 could not be checked" in finding["message"]


async def test_a_clean_cluster_asks_every_online_node() -> None:
    async with scripted_cluster(3) as cluster:
        await add_instance(cluster)
        job = await cluster.run(OpClusterVerify())
        assert ok(job), error(job)
        assert job.ops[0].result == {"findings": [], "clean": True}
        asked = {c.node for c in cluster.runner.calls}
        assert asked == {"node1", "node2", "node3"}
