"""Numbered schema migrations of the SQLite store: which stores they meet, what they do to
each, and that a failed or unknown migration changes nothing."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest

from extjobs.errors import StoreError
from extjobs.model.journal import Entry, StepStatus
from extjobs.model.steps import PlainCommand
from extjobs.store import migrations
from extjobs.store.migrations import Migration, check_numbering, pending
from extjobs.store.sqlite import SqliteStore

LEGACY = Path(__file__).resolve().parents[1] / "data" / "stores" / "legacy-v1.db"
LATEST = migrations.SQLITE[-1].number

#: The schema of 0.1 before ``journal.pgid`` existed (0.1 still recorded version 1).
BEFORE_PGID = migrations.SQLITE_SCHEMA_1.replace(",\n    pgid INTEGER\n", "\n")


def columns(path: Path, table: str) -> list[str]:
    with sqlite3.connect(path) as db:
        return [row[1] for row in db.execute(f"PRAGMA table_info({table})")]


def stored_version(path: Path) -> str | None:
    db = sqlite3.connect(path)
    try:
        row = db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        return None if row is None else str(row[0])
    finally:
        db.close()


def make_store(path: Path, schema: str, version: int | None) -> None:
    """A store as an older release left it: ``schema``, one journal row, ``version``."""
    db = sqlite3.connect(path)
    db.executescript(schema)
    db.execute(
        "INSERT INTO journal(job_id, op_index, seq, node, kind, description, status, data, "
        "started) VALUES (1, 0, 1, 'n1', 'command', 'true', 'done', "
        """'{"v": 1, "payload": {}}', 1.0)"""
    )
    if version is not None:
        db.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(version),))
    db.commit()
    db.close()


def test_a_new_store_gets_every_migration(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "new.db")
    try:
        assert store.schema_version() == LATEST
        record = store.journal_start(1, 0, 1, "n1", "true", Entry(PlainCommand()))
        store.journal_set_pgid(record, 99)
        assert store.load_journal(1)[0].pgid == 99
    finally:
        store.close()


@pytest.mark.parametrize(
    ("schema", "version"),
    [
        pytest.param(BEFORE_PGID, 1, id="version-1-before-pgid"),
        pytest.param(migrations.SQLITE_SCHEMA_1, 1, id="version-1-with-pgid"),
    ],
)
def test_stores_of_0_1_gain_the_pgid_column_and_keep_their_rows(
    tmp_path: Path, schema: str, version: int | None
) -> None:
    path = tmp_path / "old.db"
    make_store(path, schema, version)
    store = SqliteStore(path)
    try:
        assert store.schema_version() == LATEST
        [record] = store.load_journal(1)
        assert (record.status, record.pgid) == (StepStatus.DONE, None)
        store.journal_set_pgid(record.id, 4242)
        assert store.load_journal(1)[0].pgid == 4242
    finally:
        store.close()
    assert columns(path, "journal").count("pgid") == 1
    assert stored_version(path) == str(LATEST)


def test_the_store_written_by_0_1_opens_with_its_tables_unchanged(tmp_path: Path) -> None:
    path = tmp_path / "legacy.db"
    shutil.copy(LEGACY, path)
    assert stored_version(path) == "1"
    before = {t: columns(path, t) for t in ("jobs", "log", "journal", "config", "meta")}
    SqliteStore(path).close()
    assert {t: columns(path, t) for t in before} == before
    assert stored_version(path) == str(LATEST)


def test_a_store_newer_than_this_code_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "future.db"
    make_store(path, migrations.SQLITE_SCHEMA_1, LATEST + 7)
    with pytest.raises(StoreError, match=f"schema version {LATEST + 7}, newer .*\\({LATEST}\\)"):
        SqliteStore(path)
    assert stored_version(path) == str(LATEST + 7)


def test_a_failing_migration_leaves_the_store_as_it_was(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "store.db"
    SqliteStore(path).close()
    broken = Migration(
        LATEST + 1, "half done", "CREATE TABLE extra (x); INSERT INTO nowhere VALUES (1);"
    )
    monkeypatch.setattr(migrations, "SQLITE", (*migrations.SQLITE, broken))
    with pytest.raises(StoreError, match="nowhere"):
        SqliteStore(path)
    with sqlite3.connect(path) as db:
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert "extra" not in tables
    assert stored_version(path) == str(LATEST)


def test_migrations_are_numbered_without_gaps() -> None:
    check_numbering(migrations.SQLITE)
    check_numbering(migrations.POSTGRES)
    with pytest.raises(ValueError, match="numbered"):
        check_numbering([Migration(1, "a", ""), Migration(3, "c", "")])
    assert [m.number for m in pending(migrations.SQLITE, 1, where="x")] == list(
        range(2, LATEST + 1)
    )
    assert pending(migrations.SQLITE, LATEST, where="x") == []


def test_a_store_with_tables_but_no_recorded_version_is_refused(tmp_path: Path) -> None:
    # Release 0.1 recorded the schema version the first time it opened a store, so a
    # file without one was not written by extjobs: it is refused, never migrated.
    path = tmp_path / "old.db"
    db = sqlite3.connect(path)
    db.executescript(BEFORE_PGID)
    db.close()
    with pytest.raises(StoreError, match="has no extjobs schema version"):
        SqliteStore(path)
