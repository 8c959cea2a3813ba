"""The Store contract, run against every backend: SQLite, PostgreSQL (the harness's own
server, a database per test) and in memory; reopening and surviving a kill against the
durable ones."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import attrs
import psycopg
import pytest

from extjobs.errors import InputError, StoreError, UnreadableRowError
from extjobs.model.cluster import ClusterConfig, Node
from extjobs.model.jobs import Job, LogEntry, LogKind, OpState
from extjobs.model.journal import Entry, StepStatus
from extjobs.model.remote import Endpoint, RemoteCommand
from extjobs.model.states import OpStatus
from extjobs.model.steps import (
    FenceRun,
    HostKeyFetch,
    HypervisorAction,
    HypervisorCall,
    LocalRun,
    MoveTag,
    PlainCommand,
    ProviderCall,
    Step,
    StepKind,
    StreamOpen,
    TreeCopy,
)
from extjobs.model.volume import Action, Volume
from extjobs.store.base import JournalEnd, JournalStart, Store, WriteBatch
from extjobs.store.memory import MemoryStore
from extjobs.store.postgres import PostgresStore
from extjobs.store.sqlite import SqliteStore

VOLUME = Volume(
    name="u1.ext.disk0", uuid="u1", size=4, provider="strict", params={"dir": "/srv/a b"}
)

#: Backends that keep their state across a close (and a kill) of the process.
DURABLE = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
]
BACKENDS = [*DURABLE, pytest.param("memory", id="memory")]


@pytest.fixture(params=BACKENDS)
def location(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, str]:
    """(backend, where its state lives): a file, or a database URL (a new database)."""
    kind: str = request.param
    if kind == "postgres":
        return kind, str(request.getfixturevalue("pg_url"))
    return kind, str(tmp_path / "store.db")


def open_backend(kind: str, where: str) -> Store:
    if kind == "postgres":
        return PostgresStore(where)
    if kind == "sqlite":
        return SqliteStore(Path(where))
    return MemoryStore()


@pytest.fixture
def store(location: tuple[str, str]) -> Iterator[Store]:
    opened = open_backend(*location)
    yield opened
    opened.close()


def job(job_id: int, status: OpStatus = OpStatus.QUEUED) -> Job:
    return Job(id=job_id, ops=(OpState(0, {"OP_ID": "OP_TEST_DELAY"}, status=status),))


def start(job_id: int, seq: int) -> JournalStart:
    return JournalStart(job_id, 0, seq, "n1", f"step {seq}", Entry(PlainCommand()))


def entry(job_id: int, serial: int, message: str = "m") -> LogEntry:
    return LogEntry(job_id, serial, float(serial), LogKind.STATUS, message, {"serial": serial})


def test_a_job_and_its_log_lines_are_written_together_or_not_at_all(store: Store) -> None:
    store.save_jobs([job(1)], log=[entry(1, 1)])
    running = job(1, OpStatus.RUNNING)
    with pytest.raises(StoreError):
        # Serial 1 exists: the whole write is refused, the job included.
        store.save_jobs([running], log=[entry(1, 2), entry(1, 1, "again")])
    assert store.load_job(1) == job(1)
    assert [e.serial for e in store.load_log(1)] == [1]


def test_log_serials_continue_and_read_back_in_order(store: Store) -> None:
    store.save_jobs([job(1), job(2)], log=[entry(1, 1), entry(2, 1)])
    for serial in (2, 3, 4):
        store.append_log(entry(1, serial))
    assert store.last_serial(1) == 4
    assert store.last_serial(2) == 1
    assert store.last_serial(3) == 0
    assert [e.serial for e in store.load_log(1, since=2)] == [3, 4]
    assert store.load_log(1)[0] == entry(1, 1)
    assert store.load_log(1)[0].kind is LogKind.STATUS


def test_archived_jobs_are_kept_but_not_loaded_by_default(store: Store) -> None:
    store.save_jobs([job(1, OpStatus.SUCCESS), job(2)])
    store.save_jobs([attrs.evolve(job(1, OpStatus.SUCCESS), archived=True)])
    assert [j.id for j in store.load_jobs()] == [2]
    assert [j.id for j in store.load_jobs(include_archived=True)] == [1, 2]
    assert store.next_job_id() < store.next_job_id()


def finished(job_id: int, ended: float, *, archived: bool = True) -> Job:
    return attrs.evolve(job(job_id, OpStatus.SUCCESS), archived=archived, ended=ended)


def test_purge_deletes_old_archived_jobs_with_their_log_and_journal(store: Store) -> None:
    old, young, kept, running = (
        finished(1, 100.0),
        finished(2, 300.0),
        finished(3, 50.0, archived=False),
        job(4, OpStatus.RUNNING),
    )
    store.save_jobs([old, young, kept, running], log=[entry(n, 1) for n in (1, 2, 3, 4)])
    for job_id in (1, 2, 3, 4):
        store.journal_start(job_id, 0, 1, "n1", "step", Entry(FenceRun("n2")))
    assert store.purge_archived(before=200.0) == 1
    assert [j.id for j in store.load_jobs(include_archived=True)] == [2, 3, 4]
    assert store.load_job(1) is None
    assert store.load_log(1) == []
    assert store.last_serial(1) == 0
    assert store.load_journal(1) == []
    assert sorted(r.job_id for r in store.load_journal_kinds((StepKind.FENCE,))) == [2, 3, 4]
    # The boundary is strict, and nothing unarchived or unfinished goes, however old.
    assert store.purge_archived(before=300.0) == 0
    assert store.purge_archived(before=1e12) == 1
    assert [j.id for j in store.load_jobs(include_archived=True)] == [3, 4]


def test_sqlite_never_reuses_the_ids_of_purged_jobs(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    store = SqliteStore(path)
    store.save_jobs([finished(1, 1.0), finished(2, 2.0)])
    assert store.purge_archived(before=10.0) == 2
    store.close()
    store = SqliteStore(path)
    try:
        assert store.next_job_id() == 3
    finally:
        store.close()


def every_entry() -> list[Entry]:
    command = RemoteCommand(argv=("/srv/strict/attach",), env={"VOL_NAME": "x"}, timeout=5)
    call = ProviderCall("web", 0, Action.ATTACH, "/srv/strict", VOLUME, ("open", "close"))
    inverse = Step(
        node="n1",
        description="detach disk0 (strict)",
        command=RemoteCommand(argv=("/srv/strict/detach",)),
        payload=attrs.evolve(call, action=Action.DETACH),
    )
    move = MoveTag("failover", "n1", "n2")
    return [
        Entry(call, command, move, None, inverse),
        Entry(HypervisorCall("web", HypervisorAction.START, "fake", "k", "/run/x"), command),
        Entry(
            PlainCommand(),
            command,
            endpoint=Endpoint("n3", "127.0.0.1", 2222, "u", "ssh-ed25519 A"),
        ),
        Entry(HostKeyFetch("127.0.0.1", 2222)),
        Entry(FenceRun("n2"), command, move),
        Entry(LocalRun(), command),
        Entry(TreeCopy("/a", "/b")),
        Entry(StreamOpen("/run/qmp.sock", 30.0)),
    ]


def test_the_journal_round_trips_every_kind(store: Store) -> None:
    entries = every_entry()
    ids = [
        store.journal_start(7, 0, seq, f"n{seq}", f"step {seq}", e)
        for seq, e in enumerate(entries, start=1)
    ]
    store.journal_set_pgid(ids[0], 4242)
    store.journal_finish(ids[0], StepStatus.DONE, {"exit_status": 0})
    store.journal_finish(ids[4], StepStatus.FAILED, {"exit_status": 1})
    records = store.load_journal(7, 0)
    assert [r.id for r in records] == ids
    for record, original in zip(records, entries, strict=True):
        assert record.payload == original.payload
        assert record.kind is original.kind
        assert (record.command, record.move, record.inverse) == (
            original.command,
            original.move,
            original.inverse,
        )
    first = records[0]
    assert (first.status, first.pgid, first.result) == (StepStatus.DONE, 4242, {"exit_status": 0})
    assert records[1].status is StepStatus.STARTED
    assert store.load_journal(7, 1) == []
    fences = store.load_journal_kinds((StepKind.FENCE,))
    assert [r.payload for r in fences] == [FenceRun("n2")]
    assert {r.kind for r in store.load_journal_kinds((StepKind.PROVIDER, StepKind.LOCAL))} == {
        StepKind.PROVIDER,
        StepKind.LOCAL,
    }


def test_config_changes_are_written_as_differences(store: Store) -> None:
    empty = store.load_config()
    assert empty == ClusterConfig()
    one = attrs.evolve(empty.with_node(Node("n1", "10.0.0.1")).with_node(Node("n2", "h")), serial=1)
    store.save_config(empty, one)
    assert store.load_config() == one
    two = attrs.evolve(one.without_node("n1"), serial=2)
    store.save_config(one, two)
    assert store.load_config() == two
    assert set(store.load_config().nodes) == {"n2"}


def test_merged_batches_commit_as_one_and_leave_what_their_parts_would(store: Store) -> None:
    empty = store.load_config()
    one = attrs.evolve(empty.with_node(Node("n1", "h1")).with_node(Node("n2", "h2")), serial=1)
    two = attrs.evolve(one.without_node("n1"), serial=2)
    first = store.write(WriteBatch(starts=[start(5, 1)]))
    batch = WriteBatch(jobs={5: job(5)}, log=[entry(5, 1)], config=(empty, one))
    for later in (
        WriteBatch(jobs={5: job(5, OpStatus.RUNNING)}, log=[entry(5, 2)], starts=[start(5, 2)]),
        WriteBatch(ends=[JournalEnd(first[0], StepStatus.DONE, {"ok": True}, 12.5)]),
        WriteBatch(pgids=[(first[0], 77)], starts=[start(5, 3)], config=(one, two)),
    ):
        batch.merge(later)
    ids = store.write(batch)
    assert len(ids) == 2
    assert store.load_job(5) == job(5, OpStatus.RUNNING)
    assert [e.serial for e in store.load_log(5)] == [1, 2]
    records = store.load_journal(5)
    assert [r.id for r in records] == [first[0], *ids]
    assert [r.seq for r in records] == [1, 2, 3]
    assert (records[0].status, records[0].ended, records[0].pgid) == (StepStatus.DONE, 12.5, 77)
    assert records[0].result == {"ok": True}
    assert store.load_config() == two


def test_a_batch_written_again_keeps_what_committed_and_a_plain_rewrite_is_refused(
    store: Store,
) -> None:
    batch = WriteBatch(jobs={6: job(6)}, log=[entry(6, 1)], starts=[start(6, 1)])
    ids = store.write(batch)
    with pytest.raises(StoreError):
        store.write(batch)
    # Its commit's outcome was unknown to the writer: written again, nothing doubles.
    assert store.write(batch, again=True) == ids
    assert [e.serial for e in store.load_log(6)] == [1]
    assert [r.id for r in store.load_journal(6)] == ids
    # Written again with more in it, the new parts are added.
    batch.merge(WriteBatch(log=[entry(6, 2)], starts=[start(6, 2)]))
    again = store.write(batch, again=True)
    assert again[0] == ids[0]
    assert [e.serial for e in store.load_log(6)] == [1, 2]
    assert [r.id for r in store.load_journal(6)] == again


def test_job_ids_in_bulk_are_new_and_increasing(store: Store) -> None:
    first = store.next_job_id()
    bulk = store.next_job_ids(5)
    assert len(bulk) == 5
    assert bulk == sorted(set(bulk))
    assert bulk[0] > first
    assert store.next_job_id() > bulk[-1]


@pytest.mark.parametrize("location", DURABLE, indirect=True)
def test_a_reopened_store_holds_everything_written(location: tuple[str, str]) -> None:
    first = open_backend(*location)
    used = [first.next_job_id(), first.next_job_id()]
    jobs = [job(used[0], OpStatus.SUCCESS), job(used[1])]
    first.save_jobs(jobs, log=[entry(used[0], 1), entry(used[1], 1)])
    first.append_log(entry(used[0], 2))
    ids = [first.journal_start(used[0], 0, n, "n1", "s", e) for n, e in enumerate(every_entry())]
    first.journal_set_pgid(ids[0], 77)
    first.journal_finish(ids[0], StepStatus.DONE, {"exit_status": 0})
    config = attrs.evolve(ClusterConfig().with_node(Node("n1", "10.0.0.1")), serial=1)
    first.save_config(ClusterConfig(), config)
    before = (
        first.load_jobs(),
        first.load_log(used[0]),
        first.load_journal(used[0]),
        first.load_config(),
    )
    first.close()
    again = open_backend(*location)
    try:
        after = (
            again.load_jobs(),
            again.load_log(used[0]),
            again.load_journal(used[0]),
            again.load_config(),
        )
        assert after == before
        assert after[0] == jobs
        assert after[3] == config
        assert again.next_job_id() > max(used)
    finally:
        again.close()


WRITER = """
import os, signal, sys
from pathlib import Path
from extjobs.store.postgres import PostgresStore
from extjobs.store.sqlite import SqliteStore
from extjobs.model.jobs import Job, LogEntry, LogKind, OpState
from extjobs.model.journal import Entry
from extjobs.model.steps import PlainCommand
kind, where = sys.argv[1:]
store = PostgresStore(where) if kind == "postgres" else SqliteStore(Path(where))
job = Job(id=store.next_job_id(), ops=(OpState(0, {"OP_ID": "OP_TEST_DELAY"}),))
store.save_jobs([job], log=[LogEntry(job.id, 1, 1.0, LogKind.STATUS, "queued")])
store.journal_start(job.id, 0, 1, "n1", "sleep", Entry(PlainCommand()))
os.kill(os.getpid(), signal.SIGKILL)
"""


@pytest.mark.spawns
@pytest.mark.parametrize("location", DURABLE, indirect=True)
def test_every_returned_write_survives_a_kill(location: tuple[str, str]) -> None:
    for _ in range(2):
        done = subprocess.run([sys.executable, "-c", WRITER, *location], check=False)
        assert done.returncode == -9
    store = open_backend(*location)
    try:
        assert [j.id for j in store.load_jobs()] == [1, 2]
        assert store.last_serial(2) == 1
        [record] = store.load_journal(2)
        assert (record.status, record.payload) == (StepStatus.STARTED, PlainCommand())
        assert store.next_job_id() == 3
    finally:
        store.close()


# -- unreadable rows -------------------------------------------------------------------

#: Per table: a damaged document for one row, as (column, key columns).
DAMAGED = {
    "jobs": ("doc", '{"v": 2, "job": {"id": 1, "ops": "not a list"}}'),
    "log": ("data", "{not json"),
    "journal": ("data", '{"v": 2, "payload": {"kind": "no-such-kind"}}'),
    "config": ("doc", '{"name": "n1", "host":'),
}


def damage(location: tuple[str, str], store: Store, table: str, where: str, args: tuple) -> None:
    """Overwrite one stored document behind the store's back."""
    kind, at = location
    column, text = DAMAGED[table]
    if kind == "memory":
        assert isinstance(store, MemoryStore)
        if table == "jobs":
            store._jobs[args[0]] = (False, text)
        elif table == "journal":
            store._journal[args[0]][8] = text
        else:
            store._config[(args[0], args[1])] = text
        return
    sql = f"UPDATE {table} SET {column} = ? WHERE {where}"
    if kind == "sqlite":
        with sqlite3.connect(at) as db:
            db.execute(sql, (text, *args))
    else:
        with psycopg.connect(at, autocommit=True) as conn:
            conn.execute(sql.replace("?", "%s"), (text, *args))


def test_an_unreadable_row_is_named_and_setting_it_aside_lets_the_rest_load(
    location: tuple[str, str],
) -> None:
    store = open_backend(*location)
    try:
        job_id = store.next_job_id()
        store.save_jobs([job(job_id)], log=[entry(job_id, 1)])
        other = store.next_job_id()
        store.save_jobs([job(other)], log=[entry(other, 1)])
        [record] = store.write(WriteBatch(starts=[start(job_id, 1)]))
        empty = store.load_config()
        store.save_config(empty, attrs.evolve(empty.with_node(Node("n1", "h1")), serial=1))
        cases = [
            ("jobs", str(job_id), "id = ?", (job_id,), store.load_jobs),
            (
                "log",
                f"{other}/1",
                "job_id = ? AND serial = ?",
                (other, 1),
                lambda: store.load_log(other),
            ),
            ("journal", str(record), "id = ?", (record,), lambda: store.load_journal(job_id)),
            ("config", "nodes/n1", "kind = ? AND name = ?", ("nodes", "n1"), store.load_config),
        ]
        for table, key, where, args, load in cases:
            if location[0] == "memory" and table == "log":
                continue  # the memory store keeps log lines decoded: nothing to damage
            damage(location, store, table, where, args)
            with pytest.raises(UnreadableRowError) as caught:
                load()
            assert caught.value.fields == {"table": table, "key": key}
            assert f"--quarantine {table}:{key}" in caught.value.message
            assert store.quarantine(table, key) is True
            load()  # readable again, without that row
            assert store.quarantine(table, key) is False
        assert [j.id for j in store.load_jobs()] == [other]
        if location[0] != "memory":
            assert store.load_log(other) == []
        assert store.load_config().nodes == {}
        with pytest.raises(InputError, match="tables: jobs, log, journal, config"):
            store.quarantine("meta", "x")
        with pytest.raises(InputError, match="form JOB/SERIAL"):
            store.quarantine("log", "12")
    finally:
        store.close()
