"""Migration settings from the cluster and node group configuration, in process: each
setting comes from the opcode, else the instance's group, else the cluster, else the
daemon's ``[migration]`` section, and the job log says which."""

from __future__ import annotations

import pytest

from extjobs.errors import InputError
from extjobs.model.config import MigrationOptions
from extjobs.model.opcodes import OpClusterSetParams, OpGroupSetParams, OpInstanceMigrate
from extjobs.testing import TestCluster
from tests.lus.scenario import add_instance, error, ok, scripted_cluster

pytestmark = pytest.mark.usefixtures("engine_backend")


def _log(cluster: TestCluster, job_id: int) -> str:
    return "\n".join(e.message for e in cluster.engine.log(job_id))  # type: ignore[union-attr]


async def _migrate(cluster: TestCluster, target: str, **settings: float) -> tuple[dict, str]:  # type: ignore[type-arg]
    job = await cluster.run(
        OpInstanceMigrate(instance_name="web", target_node=target, **settings)  # type: ignore[arg-type]
    )
    assert ok(job), error(job)
    result = job.ops[0].result
    return (
        {k: result[k] for k in ("max_downtime", "bandwidth", "converge_timeout")},
        _log(cluster, job.id),
    )


async def test_without_defaults_the_daemon_section_gives_every_setting() -> None:
    async with scripted_cluster() as cluster:
        await add_instance(cluster)
        migration = MigrationOptions()  # the test daemon's section sets none
        values, log = await _migrate(cluster, "node2")
        assert values == {
            "max_downtime": migration.max_downtime,
            "bandwidth": migration.bandwidth,
            "converge_timeout": migration.converge_timeout,
        }
        assert (
            f"max downtime {migration.max_downtime} ms (from [migration]), bandwidth "
            f"{migration.bandwidth} MiB/s (from [migration])"
        ) in log


async def test_opcode_then_group_then_cluster_then_daemon() -> None:
    async with scripted_cluster() as cluster:
        await add_instance(cluster)
        job = await cluster.run(OpClusterSetParams(max_downtime=50, bandwidth=200))
        assert ok(job), error(job)
        assert job.ops[0].result["migration"] == {
            "max_downtime": 50,
            "bandwidth": 200,
            "converge_timeout": None,
        }
        assert "cluster: migration max downtime 50" in _log(cluster, job.id)
        job = await cluster.run(OpGroupSetParams(group_name="default", bandwidth=77))
        assert ok(job), error(job)
        group = cluster.config.groups["default"]
        assert (group.max_downtime, group.bandwidth, group.converge_timeout) == (None, 77, None)

        values, log = await _migrate(cluster, "node2", converge_timeout=60.0)
        assert values == {"max_downtime": 50, "bandwidth": 77, "converge_timeout": 60.0}
        assert (
            "migration settings: max downtime 50 ms (from the cluster), bandwidth 77 MiB/s "
            "(from node group default), converge timeout 60 s (from the opcode)"
        ) in log

        # 0 clears the group's value: the cluster's applies again.
        job = await cluster.run(OpGroupSetParams(group_name="default", bandwidth=0))
        assert ok(job), error(job)
        assert cluster.config.groups["default"].bandwidth is None
        assert "node group default: migration bandwidth not set (from the cluster's)" in _log(
            cluster, job.id
        )
        values, log = await _migrate(cluster, "node1", max_downtime=10)
        assert values["max_downtime"] == 10
        assert values["bandwidth"] == 200
        assert "bandwidth 200 MiB/s (from the cluster)" in log
        # Changing the defaults left the other cluster settings alone.
        assert cluster.config.cluster is not None
        assert cluster.config.cluster.max_downtime == 50


@pytest.mark.parametrize(
    ("fields", "says"),
    [
        pytest.param({"max_downtime": -1}, "max_downtime must be a whole number >= 0", id="neg"),
        pytest.param({"bandwidth": 1.5}, "bandwidth must be a whole number", id="fraction"),
        pytest.param(
            {"converge_timeout": float("inf")}, "converge_timeout must be a number", id="inf"
        ),
    ],
)
async def test_bad_defaults_are_refused(fields: dict[str, float], says: str) -> None:
    with pytest.raises(InputError, match=says):
        OpGroupSetParams(group_name="default", **fields)  # type: ignore[arg-type]
    with pytest.raises(InputError, match=says):
        OpClusterSetParams(**fields)  # type: ignore[arg-type]


async def test_an_unknown_group_is_refused_and_nothing_changes() -> None:
    async with scripted_cluster() as cluster:
        before = cluster.config
        job = await cluster.run(OpGroupSetParams(group_name="nosuch", max_downtime=5))
        assert not ok(job)
        assert "unknown node group 'nosuch'" in error(job)
        assert cluster.config.groups == before.groups
