"""When no node of a group can say whether a provider is usable, the error says which
node failed how; a diagnose that ran over its timeout is named as the diagnose it was,
not as the ``/bin/sh`` it ran."""

from __future__ import annotations

from extjobs.errors import CommandTimeoutError
from extjobs.model.opcodes import OpExtStorageDiagnose
from extjobs.model.remote import CommandResult
from extjobs.testing import ScriptedRunner
from tests.lus.scenario import create_op, error, ok, scripted_cluster


def diagnose_times_out(runner: ScriptedRunner, node: str) -> None:
    """What the SSH runner raises when the diagnose command is killed at its timeout."""
    runner.on(
        kind="diagnose",
        node=node,
        error=CommandTimeoutError(
            f"/bin/sh on node {node} timed out after 30s and was killed",
            node=node,
            argv=["/bin/sh", "-c", "..."],
            timeout=30.0,
        ),
    )


async def test_no_node_answered_names_each_node_and_why() -> None:
    async with scripted_cluster() as cluster:
        runner = cluster.runner
        diagnose_times_out(runner, "node1")
        runner.unreachable("node2")
        runner.on(kind="diagnose", node="node3", result=CommandResult(0, "hello\n"))
        job = await cluster.run(create_op(disks=1))
        assert not ok(job)
        message = error(job)
        assert "no node of group default answered (" in message
        assert (
            "node1: diagnose ExtStorage provider(s) strict on node node1 timed out after 30s "
            "and was killed" in message
        )
        assert "node2: node node2 is unreachable (scripted)" in message
        assert "node3: diagnose output from node 'node3' is garbled" in message
        assert "/bin/sh" not in message
        assert job.ops[0].error is not None
        assert set(job.ops[0].error["node_errors"]) == {"node1", "node2", "node3"}


async def test_storage_diagnose_names_the_diagnose_that_timed_out() -> None:
    async with scripted_cluster(nodes=2) as cluster:
        diagnose_times_out(cluster.runner, "node2")
        job = await cluster.run(OpExtStorageDiagnose())
        assert ok(job), error(job)
        result = job.ops[0].result
        assert result is not None
        assert result["nodes"]["node2"]["error"] == (
            "diagnose ExtStorage providers on node node2 timed out after 30s and was killed"
        )
        reasons = result["groups"]["default"]["sharedfile"]["reasons"]
        assert "/bin/sh" not in reasons["node2"]
        assert "diagnose ExtStorage providers on node node2 timed out" in reasons["node2"]
