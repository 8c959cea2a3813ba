"""Purging archived jobs keeps what verify knows about volumes (the ledger checkpoint)."""

from __future__ import annotations

import time
from typing import Any

import attrs

from extjobs.engine.purge import CHECKPOINT_OP, purge_old
from extjobs.lus.ledger import LEDGER_KINDS, build_ledger
from extjobs.model.jobs import Job, OpState
from extjobs.model.journal import Entry, StepStatus
from extjobs.model.opcodes import OpClusterVerify, OpInstanceRemove
from extjobs.model.states import OpStatus
from extjobs.model.steps import LedgerCheckpoint, ProviderCall
from extjobs.model.volume import Action, Volume
from extjobs.store.memory import MemoryStore
from extjobs.testing import TestCluster
from tests.lus.scenario import add_instance, create_op, error, ok, scripted_cluster

DAY = 24 * 3600.0
JOB = Job(id=0, ops=(OpState(0, {"OP_ID": "OP_TEST_DELAY"}),))


async def findings(cluster: TestCluster) -> list[tuple[str, str]]:
    job = await cluster.run(OpClusterVerify())
    assert ok(job), error(job)
    result: dict[str, Any] = job.ops[0].result
    return sorted((f["kind"], f["message"].split()[1]) for f in result["findings"])


def archive_and_purge(cluster: TestCluster, now: float) -> int:
    assert cluster.engine is not None
    queue = cluster.engine.queue
    queue.archive_old(now)
    return queue.purge_old(now)


async def test_purged_add_and_remove_jobs_leave_verify_as_it_was() -> None:
    async with scripted_cluster() as cluster:
        assert cluster.engine is not None
        store = cluster.engine.queue._store
        web = await add_instance(cluster, "web")
        # A leak: setinfo fails, and so does the remove that undoes the create.
        cluster.runner.fail("setinfo", times=1)
        cluster.runner.fail("remove", times=1)
        leak = await cluster.run(create_op("leak", disks=1))
        assert not ok(leak)
        leaked = [
            v
            for v in build_ledger(store.load_journal_kinds(LEDGER_KINDS))
            if v.endswith("disk0") and v not in {d.volume_name for d in web.disks}
        ]
        assert len(leaked) == 1
        before = await findings(cluster)
        assert before == [("leaked-volume", leaked[0])]
        ledger_before = build_ledger(store.load_journal_kinds(LEDGER_KINDS))

        # Everything old is archived and purged, but the newest job (the verify above),
        # which hosts the checkpoint.
        later = time.time() + 31 * DAY
        jobs_before = store.load_jobs(include_archived=True)
        assert archive_and_purge(cluster, later) == len(jobs_before) - 1
        [host] = store.load_jobs(include_archived=True)
        [record] = store.load_journal(host.id, CHECKPOINT_OP)
        assert isinstance(record.payload, LedgerCheckpoint)
        add_job = min(j.id for j in jobs_before)
        assert store.load_journal(add_job) == []
        # The ledger replayed from the checkpoint is the one replayed from everything.
        assert build_ledger(store.load_journal_kinds(LEDGER_KINDS)) == ledger_before
        assert await findings(cluster) == before

        # The removal of web, purged in turn with the first checkpoint's host: web's
        # volumes are gone from the ledger, the leak is still found.
        removed = await cluster.run(OpInstanceRemove(instance_name="web"))
        assert ok(removed), error(removed)
        assert await findings(cluster) == before
        assert archive_and_purge(cluster, later + 31 * DAY) == 3
        assert store.load_job(host.id) is None
        ledger = build_ledger(store.load_journal_kinds(LEDGER_KINDS))
        assert sorted(ledger) == leaked
        assert await findings(cluster) == before


def test_a_purge_never_deletes_what_a_checkpoint_cannot_cover_yet() -> None:
    store = MemoryStore()
    volume = Volume(name="u1.ext.disk0", uuid="u1", size=4, provider="p")

    def call(action: Action) -> Entry:
        return Entry(ProviderCall("web", 0, action, "/srv/p", volume))

    done = attrs.evolve(JOB, ops=(attrs.evolve(JOB.ops[0], status=OpStatus.SUCCESS),))
    store.save_jobs([attrs.evolve(JOB, id=2)])
    # Job 2 is still running a detach (its outcome is open) when job 1 creates and ends.
    open_step = store.journal_start(2, 0, 1, "n1", "detach", call(Action.DETACH))
    created = store.journal_start(1, 0, 1, "n1", "create", call(Action.CREATE))
    store.journal_finish(created, StepStatus.DONE, {})
    store.save_jobs([attrs.evolve(done, id=1, archived=True, ended=100.0)])
    now = 100.0 + 60 * DAY
    assert purge_old(store, now=now, purge_after=30 * DAY) == 0
    assert purge_old(store, now=now, purge_after=0) == 0
    store.journal_finish(open_step, StepStatus.DONE, {})
    store.save_jobs([attrs.evolve(done, id=2, ended=200.0)])
    assert purge_old(store, now=now, purge_after=30 * DAY) == 1
    assert [j.id for j in store.load_jobs(include_archived=True)] == [2]
    [state] = build_ledger(store.load_journal_kinds(LEDGER_KINDS)).values()
    assert (state.exists, state.attached) == (True, set())
