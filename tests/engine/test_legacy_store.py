"""A store written by release 0.1 opens with this one: its untyped journal reads as typed
records, the ledger is what 0.1 computed from it, and recovery understands the failover
that 0.1 left interrupted.

``tests/data/stores/legacy-v1.db`` was made by 0.1 on embedded nodes: instances added,
grown, migrated and failed over, then a failover of ``legacy2`` killed (SIGKILL) after
its source released the disks and its target had attached and opened them (job 12).
``legacy-v1.ledger.json`` is the ledger 0.1 built from that journal.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from extjobs.lus.failover import source_released
from extjobs.lus.journal import Journal
from extjobs.lus.ledger import LEDGER_KINDS, build_ledger
from extjobs.model import codec
from extjobs.model.config import Config
from extjobs.model.journal import StepStatus
from extjobs.model.states import JobStatus, OpStatus
from extjobs.model.steps import MoveTag, ProviderCall, StepKind
from extjobs.model.volume import Action
from extjobs.store.sqlite import SqliteStore
from extjobs.testing import ScriptedRunner, open_engine
from extjobs.testing.runner import VolumeState

DATA = Path(__file__).resolve().parents[1] / "data" / "stores"
INTERRUPTED_JOB = 12


@pytest.fixture
def legacy(tmp_path: Path) -> Iterator[SqliteStore]:
    path = tmp_path / "extjobs.db"
    shutil.copy(DATA / "legacy-v1.db", path)
    store = SqliteStore(path)
    yield store
    store.close()


def test_every_record_of_0_1_reads_as_a_typed_record(legacy: SqliteStore) -> None:
    rows = sqlite3.connect(legacy.path).execute("SELECT kind, COUNT(*) FROM journal GROUP BY kind")
    stored = dict(rows.fetchall())
    records = legacy.load_journal_kinds(tuple(StepKind))
    assert len(records) == sum(stored.values())
    kinds = {r.kind for r in records}
    assert {StepKind.PROVIDER, StepKind.HYPERVISOR, StepKind.COMMAND} <= kinds
    calls = [r.payload for r in records if isinstance(r.payload, ProviderCall)]
    assert len(calls) == stored["provider"]
    grows = [c for c in calls if c.action is Action.GROW]
    assert [(g.volume.size, g.volume.new_size) for g in grows] == [(4, 8)]
    # Every step of 0.1 had its command journalled: recovery can still kill leftovers.
    assert all(r.command is not None and r.command.argv for r in records)


def test_the_ledger_is_the_one_0_1_built(legacy: SqliteStore) -> None:
    ledger = build_ledger(legacy.load_journal_kinds(LEDGER_KINDS))
    expected = json.loads((DATA / "legacy-v1.ledger.json").read_text())
    assert set(ledger) == set(expected)
    for name, state in ledger.items():
        want = expected[name]
        assert sorted(state.attached) == sorted(want["attached"]), name
        assert state.opened == want["opened"], name
        assert (state.created, state.removed) == (want["created"], want["removed"]), name
        assert (state.instance, state.disk) == (want["instance"], want["disk"]), name
        assert {n: [p, list(o)] for n, (p, o) in state.providers.items()} == want["providers"]
        assert codec.unstructure(state.volume) == want["volume"], name


def test_the_interrupted_failover_is_understood(legacy: SqliteStore) -> None:
    [job] = [j for j in legacy.load_jobs() if j.id == INTERRUPTED_JOB]
    assert job.ops[0].status is OpStatus.RUNNING
    journal = Journal(legacy.load_journal(INTERRUPTED_JOB, 0))
    assert journal.move("failover") == MoveTag("failover", "node1", "node2")
    assert journal.move("migrate") is None
    assert journal.done("node1", Action.DETACH, disk=0)
    assert not journal.done("node2", Action.DETACH, disk=0)
    assert not journal.fenced("node1")
    assert journal.moved_on("node2")
    inst = legacy.load_config().instance("legacy2")
    assert source_released(journal, inst, "node1", "node2")
    # 0.1 journalled no inverses: they are rebuilt from the payloads, newest last.
    undo = journal.undo_log(Config())
    steps = undo.steps
    assert [(s.node, s.payload.action) for s in steps if isinstance(s.payload, ProviderCall)] == [
        ("node2", Action.DETACH),
        ("node2", Action.CLOSE),
    ]
    provider_dir = next(c.provider_dir for _, c in journal.provider_calls(node="node2"))
    assert [s.command.argv[0] for s in steps] == [
        f"{provider_dir}/detach",
        f"{provider_dir}/close",
    ]
    assert all(r.status is StepStatus.DONE for r in journal)


async def test_the_engine_finishes_the_failover_0_1_left_interrupted(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    shutil.copy(DATA / "legacy-v1.db", state / "extjobs.db")
    runner = ScriptedRunner(["strict"])
    # The shared storage holds the volumes of the instances 0.1 created.
    stored = SqliteStore(state / "extjobs.db")
    for inst in stored.load_config().instances.values():
        for disk in inst.disks:
            runner.storage.volumes[disk.volume_name] = VolumeState(disk.size)
    stored.close()
    async with open_engine(Config(state_dir=state), runner) as engine:
        job = await engine.wait(INTERRUPTED_JOB, timeout=30)
        log = [e.message for e in engine.log(INTERRUPTED_JOB)]
        assert job.status is JobStatus.SUCCESS, log[-5:]
        assert engine.config.instance("legacy2").primary == "node2"
    assert any("released the disks; finished on node2" in m for m in log), log
    # Nothing touched the source again; the target's disk was taken over and the guest
    # started there. (Attach and open are idempotent: done again on the target.)
    assert runner.trace(node="node1") == []
    assert runner.labels("node2") == ["attach disk0", "open disk0 exclusive", "hv start"]
