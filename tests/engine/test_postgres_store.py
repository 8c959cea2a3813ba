"""What only the PostgreSQL store has: logins that fail, migrations that several masters
may race, writers sharing one database, a server that restarts, purging — and a whole
job of the in-process engine run over it. (The contract it shares with the other
backends is in ``test_store_contract.py``.)"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import attrs
import pytest

from extjobs.errors import ConfigError, StoreError
from extjobs.model.cluster import ClusterConfig
from extjobs.model.config import Config, StoreOptions, config_from_dict
from extjobs.model.jobs import Job, LogEntry, LogKind, OpState
from extjobs.model.journal import Entry
from extjobs.model.opcodes import OpInstanceMigrate
from extjobs.model.states import JobStatus, OpStatus
from extjobs.model.steps import PlainCommand
from extjobs.store import migrations, open_store
from extjobs.store.postgres import PostgresStore
from extjobs.store.sqlite import SqliteStore
from extjobs.testing import open_test_cluster
from extjobs.testing.cluster import engine_options
from tests.harness.postgres import PASSWORD, PostgresServer
from tests.harness.procs import free_port
from tests.lus.scenario import PROVIDERS, create_op

pytestmark = pytest.mark.postgres


def config_with(url: str, state_dir: Path) -> Config:
    return config_from_dict({"store": {"url": url}}, state_dir=state_dir)


def finished(job_id: int, ended: float, *, archived: bool) -> Job:
    op = OpState(0, {"OP_ID": "OP_TEST_DELAY"}, OpStatus.SUCCESS, None, None, ended, ended)
    return Job(id=job_id, ops=(op,), received=ended, ended=ended, archived=archived)


# -- opening from the configuration --------------------------------------------------------


def test_the_configuration_picks_the_backend(pg_url: str, tmp_path: Path) -> None:
    sqlite = open_store(config_with("", tmp_path))
    postgres = open_store(config_with(pg_url, tmp_path))
    try:
        assert isinstance(sqlite, SqliteStore)
        assert sqlite.path == tmp_path / "extjobs.db"
        assert isinstance(postgres, PostgresStore)
    finally:
        sqlite.close()
        postgres.close()


def test_a_wrong_password_is_named_and_not_shown(
    postgres_server: PostgresServer, pg_url: str, tmp_path: Path
) -> None:
    wrong = pg_url.replace(PASSWORD, "not-the-password-42")
    with pytest.raises(StoreError) as caught:
        open_store(config_with(wrong, tmp_path))
    message = caught.value.message
    assert message.startswith("store.url: cannot connect to postgresql://extjobs:***@127.0.0.1")
    assert "password authentication failed" in message
    assert "not-the-password-42" not in message
    assert caught.value.fields == {"setting": "store.url"}


def test_a_database_that_does_not_answer_is_named(tmp_path: Path) -> None:
    url = f"postgresql://extjobs:{PASSWORD}@127.0.0.1:{free_port()}/extjobs"
    started = time.monotonic()
    with pytest.raises(StoreError, match=r"^store.url: cannot connect to .*refused") as caught:
        open_store(config_with(url, tmp_path))
    assert PASSWORD not in caught.value.message
    assert time.monotonic() - started < 5


def test_a_missing_database_is_named(postgres_server: PostgresServer) -> None:
    with pytest.raises(StoreError, match='database "nosuchdb" does not exist'):
        PostgresStore(postgres_server.url("nosuchdb"))


@pytest.mark.parametrize(
    "url",
    [
        pytest.param("mysql://u:sekrit@h/db", id="other-scheme"),
        pytest.param("postgresql://u:sekrit@h:port/db", id="bad-port"),
        pytest.param("postgresql://u:sekrit@[::1/db", id="bad-host"),
    ],
)
def test_a_malformed_url_is_a_configuration_error(url: str) -> None:
    with pytest.raises(ConfigError, match=r"^store.url") as caught:
        config_from_dict({"store": {"url": url}})
    assert "sekrit" not in caught.value.message


def test_a_url_libpq_refuses_is_named_without_its_password() -> None:
    with pytest.raises(StoreError, match=r"^store\.url") as caught:
        PostgresStore("postgresql://u:sekrit@[::1/db")
    assert "sekrit" not in caught.value.message


# -- migrations ----------------------------------------------------------------------------


def test_masters_starting_together_migrate_once(pg_url: str) -> None:
    opened: list[PostgresStore] = []
    failed: list[BaseException] = []

    def open_one() -> None:
        try:
            opened.append(PostgresStore(pg_url))
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            failed.append(exc)

    threads = [threading.Thread(target=open_one) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failed == []
    assert {s.schema_version() for s in opened} == {migrations.POSTGRES[-1].number}
    for store in opened:
        store.close()


def test_a_database_newer_than_this_code_is_refused_untouched(
    postgres_server: PostgresServer, pg_url: str
) -> None:
    PostgresStore(pg_url).close()
    dbname = pg_url.rpartition("/")[2]
    with postgres_server.admin(dbname) as conn:
        conn.execute("UPDATE meta SET value='99' WHERE key='schema_version'")
    with pytest.raises(StoreError, match=r"schema version 99, newer than this extjobs knows"):
        PostgresStore(pg_url)
    with postgres_server.admin(dbname) as conn:
        row = conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
    assert row == ("99",)


# -- several writers, restarts, purging ----------------------------------------------------


def test_two_writers_share_job_ids_and_see_each_others_writes(pg_url: str) -> None:
    one, two = PostgresStore(pg_url), PostgresStore(pg_url)
    try:
        ids = [store.next_job_id() for _ in range(3) for store in (one, two)]
        assert ids == sorted(set(ids))
        one.save_jobs([Job(id=ids[0], ops=(OpState(0, {"OP_ID": "OP_TEST_DELAY"}),))])
        two.append_log(LogEntry(ids[0], 1, 1.0, LogKind.STATUS, "from two"))
        assert [j.id for j in two.load_jobs()] == [ids[0]]
        assert [e.message for e in one.load_log(ids[0])] == ["from two"]
        record = two.journal_start(ids[0], 0, 1, "n1", "true", Entry(PlainCommand()))
        assert [r.id for r in one.load_journal(ids[0])] == [record]
    finally:
        one.close()
        two.close()


def test_after_a_server_restart_the_next_call_reconnects(
    postgres_server: PostgresServer, pg_url: str
) -> None:
    store = PostgresStore(pg_url)
    try:
        job_id = store.next_job_id()
        store.save_jobs([Job(id=job_id, ops=(OpState(0, {"OP_ID": "OP_TEST_DELAY"}),))])
        postgres_server.restart("immediate")
        # A read that meets the dead connection is asked again on a new one: it finds
        # everything committed before.
        assert [j.id for j in store.load_jobs()] == [job_id]
        postgres_server.restart("immediate")
        # A write that meets it fails (its fate would be unknown, so it is not repeated);
        # the next call connects again.
        with pytest.raises(StoreError, match="failed"):
            store.save_jobs([Job(id=job_id + 1, ops=(OpState(0, {"OP_ID": "OP_TEST_DELAY"}),))])
        assert store.next_job_id() > job_id
    finally:
        store.close()


def test_purge_removes_old_archived_jobs_with_their_log_and_journal(pg_url: str) -> None:
    store = PostgresStore(pg_url)
    try:
        jobs = [
            finished(1, 100.0, archived=True),
            finished(2, 200.0, archived=True),
            finished(3, 100.0, archived=False),
        ]
        store.save_jobs(jobs, log=[LogEntry(j.id, 1, 1.0, LogKind.STATUS, "x") for j in jobs])
        for job in jobs:
            store.journal_start(job.id, 0, 1, "n1", "true", Entry(PlainCommand()))
        assert store.purge_archived(150.0) == 1
        assert [j.id for j in store.load_jobs(include_archived=True)] == [2, 3]
        assert (store.load_log(1), store.load_journal(1)) == ([], [])
        assert len(store.load_log(2)) == len(store.load_journal(2)) == 1
        assert store.purge_archived(150.0) == 0
    finally:
        store.close()


# -- the engine over it --------------------------------------------------------------------


async def test_the_engine_runs_jobs_over_postgres(pg_url: str, tmp_path: Path) -> None:
    options = attrs.evolve(engine_options(tmp_path / "state"), store=StoreOptions(pg_url))
    async with open_test_cluster(
        3, providers=PROVIDERS, config=options, store="config", base=tmp_path
    ) as cluster:
        created = await cluster.run(create_op("web", node="node1"))
        assert created.status is JobStatus.SUCCESS, created.ops[0].error
        moved = await cluster.run(OpInstanceMigrate(instance_name="web", target_node="node2"))
        assert moved.status is JobStatus.SUCCESS, moved.ops[0].error
    # Everything the engine knows came from, and is in, the database.
    store = PostgresStore(pg_url)
    try:
        jobs = store.load_jobs()
        assert [j.status for j in jobs[-2:]] == [JobStatus.SUCCESS] * 2
        assert store.load_config().instances["web"].primary == "node2"
        assert store.load_config() != ClusterConfig()
        records = store.load_journal(moved.id)
        assert records
        assert {r.node for r in records} >= {"node1", "node2"}
        assert store.last_serial(moved.id) == len(store.load_log(moved.id))
    finally:
        store.close()
