"""The SQLite backend of the store: the embedded default, one file in the state directory.

SQLite in WAL mode; every method commits before it returns (a write that returned
survives SIGKILL of the daemon). Calls are short and made from the event loop thread,
so the engine decides and records in one synchronous step.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from extjobs.errors import StoreError
from extjobs.model import codec
from extjobs.model.cluster import ClusterConfig
from extjobs.model.jobquery import JobQuery
from extjobs.model.jobs import Job, LogEntry
from extjobs.model.journal import JournalRecord
from extjobs.model.steps import StepKind
from extjobs.store import migrations
from extjobs.store.base import (
    _JOURNAL_COLUMNS,
    JournalStart,
    StoreBase,
    WriteBatch,
    config_changes,
    config_from_rows,
    job_doc,
    job_from_doc,
    journal_record,
    log_entry,
    quarantine_where,
    row_document,
    search_sql,
    started_row,
    stored_kinds,
    tag_rows,
)
from extjobs.store.files import check_store_header, check_store_schema
from extjobs.store.migrations import pending


def _statements(script: str) -> list[str]:
    """The statements of an SQL script, one by one (``executescript`` would commit the
    transaction a migration runs in). A ``;`` ends a statement where SQLite says the text
    so far is complete, so that one inside a string or a comment does not."""
    found, start = [], 0
    for end, char in enumerate(script):
        if char == ";" and sqlite3.complete_statement(script[start : end + 1]):
            found.append(script[start : end + 1].strip())
            start = end + 1
    if script[start:].strip():
        raise ValueError(f"incomplete SQL statement in a migration: {script[start:].strip()!r}")
    return found


def schema_version(db: sqlite3.Connection) -> int:
    """The number of the last migration applied to the store ``db`` (0: none yet)."""
    if not db.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='meta'").fetchone():
        return 0
    row = db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
    return 0 if row is None else int(row[0])


def migrate(db: sqlite3.Connection, where: str) -> None:
    """Apply the missing migrations of :data:`~extjobs.store.migrations.SQLITE` in one
    transaction (another process opening the same file waits for it)."""
    db.execute("BEGIN IMMEDIATE")
    try:
        todo = pending(migrations.SQLITE, schema_version(db), where=where)
        for migration in todo:
            if isinstance(migration.step, str):
                for statement in _statements(migration.step):
                    db.execute(statement)
            else:
                migration.step(db)
        if todo:
            db.execute(
                "INSERT OR REPLACE INTO meta(key, value) VALUES ('schema_version', ?)",
                (str(todo[-1].number),),
            )
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def _create_store(path: Path) -> None:
    """Make a new, empty store at ``path`` (which does not exist): built under a
    temporary name with its whole schema in one transaction, then renamed into place, so
    a crash never leaves a half-made store at ``path``. Mode 0600."""
    wal = Path(f"{path}-wal")
    if wal.exists() and wal.stat().st_size > 0:
        raise StoreError(
            f"store file {path} is missing but its write-ahead log {wal.name} is there: the "
            "store was moved or deleted without it; restore a backup (extjobs daemon "
            f"--restore BACKUP), or, to start a new and empty cluster on purpose, move "
            f"{wal.name} away",
            path=str(path),
        )
    tmp = path.with_name(f".{path.name}.new")
    tmp.unlink(missing_ok=True)
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    try:
        db = sqlite3.connect(str(tmp), isolation_level=None)
        try:
            migrate(db, str(path))
        finally:
            db.close()
        with tmp.open("rb") as f:
            os.fsync(f.fileno())
        tmp.rename(path)
    except sqlite3.Error as exc:
        raise StoreError(f"cannot create the store at {path}: {exc}", path=str(path)) from exc
    finally:
        tmp.unlink(missing_ok=True)


def _insert_log(db: sqlite3.Connection, entries: Sequence[LogEntry], *, again: bool) -> None:
    verb = "INSERT OR IGNORE" if again else "INSERT"
    _each(
        db,
        f"{verb} INTO log(job_id, serial, ts, kind, message, data) VALUES (?,?,?,?,?,?)",
        [
            (
                e.job_id,
                e.serial,
                e.timestamp,
                e.kind,
                e.message,
                None if e.data is None else codec.dumps(e.data),
            )
            for e in entries
        ],
    )


_INSERT_JOURNAL = (
    "INSERT INTO journal(job_id, op_index, seq, node, kind, description, status, data, started) "
    "VALUES (?,?,?,?,?,?,?,?,?)"
)


def _journal_start(db: sqlite3.Connection, start: JournalStart, *, again: bool) -> int:
    if again:
        found = db.execute(
            "SELECT id FROM journal WHERE job_id=? AND op_index=? AND seq=?",
            (start.job_id, start.op_index, start.seq),
        ).fetchone()
        if found is not None:
            return int(found[0])
    return int(db.execute(_INSERT_JOURNAL, started_row(start)).lastrowid or 0)


def _each(db: sqlite3.Connection, sql: str, rows: Sequence[Sequence[Any]]) -> None:
    """``executemany`` where there are rows (most writes touch two or three tables of
    the six a batch may hold; an empty ``executemany`` still costs a statement)."""
    if rows:
        db.executemany(sql, rows)


def _upsert_jobs(db: sqlite3.Connection, jobs: Iterable[Job], untagged: Iterable[Job]) -> None:
    _each(
        db,
        "INSERT OR REPLACE INTO jobs(id, status, archived, received, ended, doc) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        [
            (job.id, job.status.value, int(job.archived), job.received, job.ended, job_doc(job))
            for job in jobs
        ],
    )
    # A job's tags never change: written with its first version, kept after that.
    _each(
        db,
        "INSERT OR IGNORE INTO job_tags(kind, name, job_id) VALUES (?, ?, ?)",
        [row for job in untagged for row in tag_rows(job)],
    )


def _write_config(db: sqlite3.Connection, old: ClusterConfig, new: ClusterConfig) -> None:
    upserts, deletes = config_changes(old, new)
    db.executemany("DELETE FROM config WHERE kind=? AND name=?", deletes)
    db.executemany("INSERT OR REPLACE INTO config(kind, name, doc) VALUES (?, ?, ?)", upserts)


class SqliteStore(StoreBase):
    """SQLite (WAL) implementation of :class:`Store`."""

    def __init__(self, path: Path) -> None:
        """Open the store at ``path``, creating a new one only where no file exists.

        Raises :class:`StoreError` naming the file when it exists but is empty, is not
        SQLite, or has no extjobs schema (see :mod:`extjobs.store.files`): what is left of
        a store is never taken for a new one.
        """
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists():
            check_store_header(path)
        else:
            _create_store(path)
        try:
            self._db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open the store at {path}: {exc}", path=str(path)) from exc
        try:
            # Before anything writes (even a pragma): what is refused stays untouched.
            check_store_schema(self._db, path)
            self._db.execute("PRAGMA journal_mode=WAL")
            # NORMAL in WAL mode: a commit survives a crash of the process; only an OS
            # crash or power loss can lose the last transactions.
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA busy_timeout=5000")
        except sqlite3.Error as exc:
            self._db.close()
            raise StoreError(f"cannot open the store at {path}: {exc}", path=str(path)) from exc
        except StoreError:
            self._db.close()
            raise
        try:
            migrate(self._db, str(path))
        except sqlite3.Error as exc:
            self._db.close()
            raise StoreError(f"cannot migrate the store at {path}: {exc}", path=str(path)) from exc
        except BaseException:
            self._db.close()
            raise
        self.path = path
        #: Ids of the jobs whose tags this handle wrote (or found written).
        self._tagged: set[int] = set()
        try:
            row = self._read_one("SELECT COALESCE(MAX(id), 0) FROM jobs")
            # A purge may have deleted the newest jobs: their ids are never handed out again.
            self._next_id = max(int(row[0]), int(self._meta("purged_max_id") or 0)) + 1
        except StoreError:
            self._db.close()
            raise

    # -- helpers -------------------------------------------------------------

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        try:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            raise StoreError(f"store write failed: {exc}") from exc

    def _read(self, sql: str, args: Sequence[Any] = ()) -> list[Any]:
        """The rows of a query; a damaged file is named, with what to do about it."""
        try:
            return self._db.execute(sql, args).fetchall()
        except sqlite3.DatabaseError as exc:
            raise StoreError(
                f"the store {self.path} cannot be read ({exc}); restore a backup "
                "('extjobs daemon --restore FILE'), or copy what is readable with "
                f"'sqlite3 {self.path} .recover | sqlite3 NEW.db' and restore that, then "
                "run 'extjobs verify'",
                path=str(self.path),
            ) from exc

    def _read_one(self, sql: str, args: Sequence[Any] = ()) -> Any:
        rows = self._read(sql, args)
        return rows[0] if rows else None

    def _meta(self, key: str) -> str | None:
        row = self._read_one("SELECT value FROM meta WHERE key=?", (key,))
        return None if row is None else str(row[0])

    def _set_meta(self, key: str, value: str) -> None:
        with self._tx() as db:
            db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (key, value))

    def schema_version(self) -> int:
        """The number of the last migration applied to this store (0: none yet)."""
        try:
            return schema_version(self._db)
        except sqlite3.Error as exc:
            raise StoreError(f"store read failed: {exc}") from exc

    # -- jobs ----------------------------------------------------------------

    def next_job_id(self) -> int:
        job_id = self._next_id
        self._next_id += 1
        return job_id

    def write(self, batch: WriteBatch, *, again: bool = False) -> list[int]:
        """Commit ``batch`` in one transaction (see :meth:`Store.write`)."""
        # Jobs this handle has not tagged yet (tags are written once; a rewrite of a
        # job, at each change of its status, skips them).
        untagged = [job for job in batch.jobs.values() if job.id not in self._tagged]
        with self._tx() as db:
            _upsert_jobs(db, batch.jobs.values(), untagged)
            if batch.log:
                _insert_log(db, batch.log, again=again)
            ids = [_journal_start(db, start, again=again) for start in batch.starts]
            _each(
                db,
                "UPDATE journal SET status=?, ended=?, result=? WHERE id=?",
                [(e.status.value, e.ended, codec.dumps(e.result), e.record_id) for e in batch.ends],
            )
            _each(db, "UPDATE journal SET pgid=? WHERE id=?", [(g, r) for r, g in batch.pgids])
            if batch.config is not None:
                _write_config(db, *batch.config)
        self._tagged.update(job.id for job in untagged)
        return ids

    def load_jobs(self, *, include_archived: bool = False) -> list[Job]:
        sql = "SELECT id, doc FROM jobs"
        if not include_archived:
            sql += " WHERE archived = 0"
        return [job_from_doc(r[1], r[0]) for r in self._read(sql + " ORDER BY id")]

    def load_job(self, job_id: int) -> Job | None:
        row = self._read_one("SELECT doc FROM jobs WHERE id=?", (job_id,))
        return None if row is None else job_from_doc(row[0], job_id)

    def search_jobs(self, query: JobQuery) -> list[Job]:
        sql, args = search_sql(query)
        return [job_from_doc(doc, job_id) for job_id, doc in self._read(sql, args)]

    def purge_archived(self, before: float) -> int:
        with self._tx() as db:
            db.execute("CREATE TEMP TABLE IF NOT EXISTS purged(id INTEGER PRIMARY KEY)")
            db.execute("DELETE FROM temp.purged")
            db.execute(
                "INSERT INTO temp.purged SELECT id FROM jobs "
                "WHERE archived = 1 AND ended IS NOT NULL AND ended < ?",
                (before,),
            )
            for table in ("log", "journal", "job_tags"):
                db.execute(f"DELETE FROM {table} WHERE job_id IN (SELECT id FROM temp.purged)")
            db.execute(
                "INSERT OR REPLACE INTO meta(key, value) SELECT 'purged_max_id', "
                "MAX(COALESCE((SELECT CAST(value AS INTEGER) FROM meta "
                "WHERE key = 'purged_max_id'), 0), COALESCE(MAX(id), 0)) FROM temp.purged"
            )
            count = db.execute("DELETE FROM jobs WHERE id IN (SELECT id FROM temp.purged)")
            return int(count.rowcount)

    # -- job log -------------------------------------------------------------

    def load_log(self, job_id: int, since: int = 0) -> list[LogEntry]:
        rows = self._read(
            "SELECT serial, ts, kind, message, data FROM log WHERE job_id=? AND serial>? "
            "ORDER BY serial",
            (job_id, since),
        )
        return [log_entry(job_id, r) for r in rows]

    def last_serial(self, job_id: int) -> int:
        row = self._read_one("SELECT COALESCE(MAX(serial), 0) FROM log WHERE job_id=?", (job_id,))
        return int(row[0])

    # -- journal -------------------------------------------------------------

    def load_journal_kinds(self, kinds: tuple[StepKind, ...]) -> list[JournalRecord]:
        """Every journal record of these kinds, across all jobs, in the order written."""
        columns = stored_kinds(kinds)
        marks = ",".join("?" for _ in columns)
        records = self._journal_rows(
            f"SELECT {_JOURNAL_COLUMNS} FROM journal WHERE kind IN ({marks})", columns
        )
        return [r for r in records if r.kind in kinds]

    def _journal_rows(self, sql: str, args: tuple[Any, ...]) -> list[JournalRecord]:
        return [journal_record(r) for r in self._read(sql + " ORDER BY id", args)]

    def load_journal(self, job_id: int, op_index: int | None = None) -> list[JournalRecord]:
        sql = f"SELECT {_JOURNAL_COLUMNS} FROM journal WHERE job_id=?"
        args: tuple[Any, ...] = (job_id,)
        if op_index is not None:
            sql += " AND op_index=?"
            args += (op_index,)
        return self._journal_rows(sql, args)

    # -- cluster configuration ------------------------------------------------

    def load_config(self) -> ClusterConfig:
        return config_from_rows(self._read("SELECT kind, name, doc FROM config"))

    def quarantine(self, table: str, key: str) -> bool:
        where, args = quarantine_where(table, key)
        with self._tx() as db:
            cur = db.execute(f"SELECT * FROM {table} WHERE {where}", args)
            row = cur.fetchone()
            if row is None:
                return False
            columns = [d[0] for d in cur.description]
            db.execute(
                "INSERT INTO quarantine(tbl, key, row, at) VALUES (?, ?, ?, ?)",
                (table, key, row_document(columns, row), time.time()),
            )
            db.execute(f"DELETE FROM {table} WHERE {where}", args)
        return True

    def close(self) -> None:
        self._db.close()
