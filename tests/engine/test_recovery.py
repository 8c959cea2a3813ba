"""Recovery's two halves without a daemon: what a job found in the store becomes, and
killing what a crashed daemon left running (through the scripted node runner)."""

from __future__ import annotations

from extjobs.engine.recovery import kill_leftovers, requeue_at_load
from extjobs.engine.writer import SyncWriter
from extjobs.model.cluster import ClusterConfig, Node
from extjobs.model.jobs import Job, LogKind, OpState
from extjobs.model.journal import Entry, StepStatus
from extjobs.model.remote import CommandResult, RemoteCommand
from extjobs.model.states import OpStatus
from extjobs.model.steps import PlainCommand
from extjobs.store.memory import MemoryStore
from extjobs.testing import ScriptedRunner


def job(*statuses: OpStatus) -> Job:
    ops = tuple(OpState(i, {"OP_ID": "OP_TEST_DELAY"}, status=s) for i, s in enumerate(statuses))
    return Job(id=1, ops=ops, waiting_for="lock cluster (held by job 7)")


def test_waiting_goes_back_to_queued_and_running_needs_recovery() -> None:
    waiting, recovering = requeue_at_load(job(OpStatus.SUCCESS, OpStatus.WAITING))
    assert [op.status for op in waiting.ops] == [OpStatus.SUCCESS, OpStatus.QUEUED]
    assert waiting.waiting_for is None
    assert not recovering
    running, recovering = requeue_at_load(job(OpStatus.RUNNING, OpStatus.QUEUED))
    assert [op.status for op in running.ops] == [OpStatus.RUNNING, OpStatus.QUEUED]
    assert recovering
    assert requeue_at_load(job(OpStatus.CANCELING))[1]
    done = job(OpStatus.SUCCESS)
    assert requeue_at_load(done) == (done, False)


async def test_leftovers_are_killed_where_known_and_every_started_step_is_interrupted() -> None:
    store = MemoryStore()
    config = ClusterConfig()
    for name, offline in (("n1", False), ("n2", False), ("n3", True)):
        config = config.with_node(
            Node(name, "127.0.0.1", host_key="ssh-ed25519 AAAA", offline=offline)
        )
    command = RemoteCommand(argv=("/srv/p/create",), timeout=5)
    ids = {}
    for seq, node in enumerate(("n1", "n2", "n3", "n1"), start=1):
        ids[seq] = store.journal_start(
            9, 0, seq, node, f"step {seq}", Entry(PlainCommand(), command)
        )
        store.journal_set_pgid(ids[seq], 100 + seq)
    store.journal_finish(ids[4], StepStatus.DONE, {})
    runner = ScriptedRunner()
    runner.on(kind="kill-leftover", node="n1", result=CommandResult(0, "killed\n"))
    runner.unreachable("n2")
    logged: list[tuple[str, LogKind]] = []
    await kill_leftovers(
        store.load_journal(9, 0),
        config=config,
        runner=runner,
        writer=SyncWriter(store),
        log=lambda message, kind: logged.append((message, kind)),
    )
    asked = [(c.node, c.detail) for c in runner.select(kind="kill-leftover")]
    # The finished step and the offline node are not asked; the unreachable one is tried.
    assert asked == [
        ("n1", {"pgid": "101", "program": "/srv/p/create"}),
        ("n2", {"pgid": "102", "program": "/srv/p/create"}),
    ]
    assert [kind for _, kind in logged] == [LogKind.RECOVERY, LogKind.WARNING]
    assert "killed 'step 1' left running" in logged[0][0]
    assert "could not check for a leftover 'step 2'" in logged[1][0]
    statuses = [r.status for r in store.load_journal(9, 0)]
    assert statuses == [StepStatus.INTERRUPTED] * 3 + [StepStatus.DONE]
    [first] = [r for r in store.load_journal(9, 0) if r.seq == 1]
    assert first.result is not None
    assert first.result["error"]["kind"] == "interrupted"
