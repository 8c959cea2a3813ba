"""The test kit itself: the scripted runner's rules and records, and the process modes."""

from __future__ import annotations

from pathlib import Path

import pytest

from extjobs.errors import NodeError, NodeUnreachableError
from extjobs.model.opcodes import OpNodeQuery, OpTestDelay
from extjobs.model.remote import CommandResult, Endpoint, RemoteCommand
from extjobs.testing import ScriptedRunner, open_test_cluster

NODE = Endpoint("node1", "127.0.0.1", 22)


async def test_rules_win_over_defaults_newest_first_and_run_out() -> None:
    runner = ScriptedRunner()
    command = RemoteCommand(argv=("uname", "-n"))
    assert (await runner.run(NODE, command)).stdout == "node1\n"
    runner.on(argv="uname", result=CommandResult(0, "old\n"))
    runner.on(node="node1", action="uname", result=CommandResult(0, "new\n"), times=1)
    assert (await runner.run(NODE, command)).stdout == "new\n"
    assert (await runner.run(NODE, command)).stdout == "old\n"
    assert [c.label for c in runner.calls] == ["uname"] * 3


async def test_an_unreachable_node_refuses_everything_and_is_still_recorded() -> None:
    runner = ScriptedRunner()
    runner.unreachable("node1")
    with pytest.raises(NodeUnreachableError):
        await runner.run(NODE, RemoteCommand(argv=("true",)))
    with pytest.raises(NodeUnreachableError):
        await runner.put_tree(NODE, Path("/tmp/p"), "/srv/p")
    runner.reachable("node1")
    await runner.put_tree(NODE, Path("/tmp/p"), "/srv/p")
    with pytest.raises(NodeError):
        async with runner.open_unix_stream(NODE, "/run/qmp.sock"):
            pass
    assert [c.kind for c in runner.calls] == ["command", "put-tree", "put-tree", "stream"]
    assert runner.calls[2].detail == {"local_dir": "/tmp/p", "remote_dir": "/srv/p"}
    assert runner.calls[3].detail == {"path": "/run/qmp.sock"}


async def test_a_scripted_cluster_runs_jobs_on_its_nodes() -> None:
    async with open_test_cluster(2) as cluster:
        job = await cluster.run(
            OpTestDelay(duration=0, on_master=False, on_nodes=("node1", "node2")), OpNodeQuery()
        )
        assert job.status.value == "success"
        assert sorted(n["name"] for n in job.ops[1].result) == ["node1", "node2"]
        assert {c.node for c in cluster.runner.select(kind="command", action="sleep")} == {
            "node1",
            "node2",
        }


@pytest.mark.spawns  # embedded SSH node processes
async def test_an_embedded_cluster_runs_jobs_over_ssh(tmp_path: Path) -> None:
    async with open_test_cluster(1, mode="embedded", base=tmp_path) as cluster:
        job = await cluster.run(OpTestDelay(duration=0, on_master=False, on_nodes=("node1",)))
        assert job.status.value == "success", job.ops[0].error
        node = cluster.node("node1")
        assert (node.search_path / "sharedfile" / "node-id").read_text() == "node1\n"
    assert node.process is None
