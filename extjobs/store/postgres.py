"""The PostgreSQL backend of the store (psycopg 3): one database that several masters share.

The same documents as SQLite (JSON text made by the shared helpers of
:mod:`extjobs.store.base`), in the tables of :data:`extjobs.store.migrations.POSTGRES`.
What differs, and why:

- Job ids come from the sequence ``job_ids`` (``CACHE 1``): an id is never handed out
  twice, by this process after a crash or by another master writing at the same time.
  Ids of jobs whose first write never committed are skipped, never reused.
- Journal ids come from an identity column (``INSERT … RETURNING id``).
- The connection runs in autocommit: a write of one statement is its own transaction,
  one round trip. A write of several statements runs as ``BEGIN … COMMIT`` in a
  pipeline, also one round trip; either way it has committed when the method returns,
  and a failed write changes nothing.
- The connection is the only state. After it breaks (the server restarted, the network
  cut it), the call that noticed raises :class:`StoreError` — whether a write in flight
  committed is unknown, and not guessed — and the next call connects again.

Calls block the calling thread for their round trips (see the engine's notes on a
networked store). Errors of psycopg are translated here and nowhere else; messages never
carry the password of the URL.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg
import psycopg.conninfo

from extjobs.errors import FencedError, StoreError
from extjobs.model import codec
from extjobs.model.cluster import ClusterConfig
from extjobs.model.config import redact_url
from extjobs.model.jobquery import JobQuery
from extjobs.model.jobs import Job, LogEntry
from extjobs.model.journal import JournalRecord
from extjobs.model.masters import Lease, MasterInfo, Request, RequestKind
from extjobs.model.steps import StepKind
from extjobs.store import migrations
from extjobs.store.base import (
    _JOURNAL_COLUMNS,
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
from extjobs.store.migrations import pending

#: Seconds to wait for a connection unless the URL says (``?connect_timeout=``).
CONNECT_TIMEOUT = 10
#: Seconds to wait for a connection made again after one broke (libpq's least is 2).
RECONNECT_TIMEOUT = 3
#: How a connection whose network path died is noticed, unless the URL says: data
#: unacknowledged for this many milliseconds (Linux's ``TCP_USER_TIMEOUT``), and
#: keepalive probes on an idle connection. A call on such a path fails within seconds
#: instead of waiting for TCP's retransmissions (about a quarter of an hour).
NETWORK_DEFAULTS = {
    "tcp_user_timeout": 3000,
    "keepalives": 1,
    "keepalives_idle": 3,
    "keepalives_interval": 1,
    "keepalives_count": 3,
}

#: The advisory lock that serialises migrations of masters starting together.
_MIGRATION_LOCK = 0x6578746A6F6273  # "extjobs"

_INSERT_LOG = (
    "INSERT INTO log(job_id, serial, ts, kind, message, data) VALUES (%s, %s, %s, %s, %s, %s)"
)
_INSERT_JOURNAL = (
    "INSERT INTO journal(job_id, op_index, seq, node, kind, description, status, data, started) "
    "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)"
)
# Writing a batch again (Store.write): what is there already is kept.
_LOG_AGAIN = _INSERT_LOG + " ON CONFLICT (job_id, serial) DO NOTHING"
_JOURNAL_AGAIN = (
    _INSERT_JOURNAL + " ON CONFLICT (job_id, op_index, seq) DO UPDATE SET seq = EXCLUDED.seq"
)
_UPSERT_JOB = (
    "INSERT INTO jobs(id, status, archived, received, ended, doc) VALUES (%s, %s, %s, %s, %s, %s) "
    "ON CONFLICT (id) DO UPDATE SET status=EXCLUDED.status, archived=EXCLUDED.archived, "
    "received=EXCLUDED.received, ended=EXCLUDED.ended, doc=EXCLUDED.doc"
)
_INSERT_TAGS = "INSERT INTO job_tags(kind, name, job_id) VALUES (%s, %s, %s) ON CONFLICT DO NOTHING"
_UPSERT_CONFIG = (
    "INSERT INTO config(kind, name, doc) VALUES (%s, %s, %s) "
    "ON CONFLICT (kind, name) DO UPDATE SET doc=EXCLUDED.doc"
)


def _job_row(job: Job) -> tuple[Any, ...]:
    return (job.id, job.status.value, job.archived, job.received, job.ended, job_doc(job))


def _log_row(e: LogEntry) -> tuple[Any, ...]:
    data = None if e.data is None else codec.dumps(e.data)
    return (e.job_id, e.serial, e.timestamp, e.kind.value, e.message, data)


def _fetched(cur: psycopg.Cursor[tuple[Any, ...]]) -> tuple[Any, ...]:
    row = cur.fetchone()
    if row is None:  # pragma: no cover - RETURNING always gives the row
        raise StoreError("store write returned no journal id")
    return row


class PostgresStore(StoreBase):
    """PostgreSQL implementation of :class:`~extjobs.store.base.Store`.

    Opening connects and applies the missing migrations; it raises :class:`StoreError`
    (field ``setting="store.url"``) when the URL is malformed, the server cannot be
    reached or refuses the login, or the schema is newer than this code.
    """

    def __init__(self, url: str) -> None:
        self.url = url
        #: Ids of the jobs whose tags this handle wrote (or found written).
        self._tagged: set[int] = set()
        #: The URL without its password, for messages.
        self.where = redact_url(url)
        self._closed = False
        self._fence: int | None = None
        try:
            params = psycopg.conninfo.conninfo_to_dict(url)
        except psycopg.Error:
            # psycopg's own message quotes the whole URL, password included.
            raise StoreError(
                f"store.url {self.where!r} is not a valid PostgreSQL URL", setting="store.url"
            ) from None
        params.setdefault("connect_timeout", CONNECT_TIMEOUT)
        params.setdefault("application_name", "extjobs")
        if not str(params.get("host", "")).startswith("/"):  # TCP, not a Unix socket
            for key, value in NETWORK_DEFAULTS.items():
                params.setdefault(key, value)
        try:
            self._reconnect_timeout = min(int(str(params["connect_timeout"])), RECONNECT_TIMEOUT)
        except ValueError:
            raise StoreError(
                f"store.url {self.where!r}: connect_timeout is not a whole number of seconds",
                setting="store.url",
            ) from None
        self._password = str(params.get("password") or "")
        self._conninfo = psycopg.conninfo.make_conninfo("", **params)
        self._conn = self._connect()
        try:
            self._migrate()
        except BaseException:
            self._conn.close()
            raise

    # -- connection --------------------------------------------------------------------

    def _reason(self, exc: BaseException) -> str:
        """One line from a psycopg error, any password in it masked."""
        text = " ".join(str(exc).split())
        if self._password:
            text = text.replace(self._password, "***")
        return text.replace(self.url, self.where)

    def _connect(self, timeout: int | None = None) -> psycopg.Connection[tuple[Any, ...]]:
        conninfo = self._conninfo
        if timeout is not None:
            conninfo = psycopg.conninfo.make_conninfo(conninfo, connect_timeout=timeout)
        try:
            return psycopg.connect(conninfo, autocommit=True)
        except psycopg.Error as exc:
            raise StoreError(
                f"store.url: cannot connect to {self.where}: {self._reason(exc)}",
                setting="store.url",
            ) from None

    def _connection(self) -> psycopg.Connection[tuple[Any, ...]]:
        if self._closed:
            raise StoreError("the store is closed")
        if self._conn.closed:
            self._conn = self._connect(self._reconnect_timeout)
        return self._conn

    def _failed(self, what: str, exc: psycopg.Error) -> StoreError:
        return StoreError(f"store {what} failed ({self.where}): {self._reason(exc)}")

    @contextmanager
    def _write(self) -> Iterator[psycopg.Connection[tuple[Any, ...]]]:
        """A transaction of several statements, sent as one pipeline; committed at exit.

        With a fence set, the transaction first calls ``extjobs_fence``: it commits only
        while the lease carries this handle's epoch (:class:`FencedError` otherwise)."""
        conn = self._connection()
        try:
            with conn.pipeline(), conn.transaction():
                if self._fence is not None:
                    conn.execute("SELECT extjobs_fence(%s)", (self._fence,))
                yield conn
        except psycopg.Error as exc:
            if "extjobs fenced" in str(exc):
                raise FencedError(
                    f"store write refused: {self._reason(exc).split('extjobs fenced: ')[-1]}",
                    epoch=self._fence,
                ) from exc
            raise self._failed("write", exc) from exc

    def _write_one(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """One writing statement: alone in autocommit, or after the fence when set."""
        if self._fence is None:
            return self._one(sql, args)
        with self._write() as conn:
            cur = conn.execute(sql, args)
            # In a pipeline the result is not there yet: fetching waits for it.
            return cur.fetchall() if " RETURNING " in sql.upper() else []

    def _one(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """One statement in its own transaction (autocommit); its rows, if any."""
        conn = self._connection()
        try:
            cur = conn.execute(sql, args)
            return cur.fetchall() if cur.description is not None else []
        except psycopg.Error as exc:
            raise self._failed("call", exc) from exc

    def _read(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """A query that changes nothing: asked once more on a new connection when the
        connection it met had broken (the server restarted) — unlike a write, whose
        fate is then unknown, a read can be repeated."""
        try:
            return self._one(sql, args)
        except StoreError:
            if not self._conn.closed:
                raise
            return self._one(sql, args)

    def _migrate(self) -> None:
        conn = self._connection()
        try:
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
                version = self.schema_version()
                todo = pending(migrations.POSTGRES, version, where=self.where)
                for migration in todo:
                    if isinstance(migration.step, str):
                        conn.execute(migration.step)  # no parameters: several statements
                    else:
                        migration.step(conn)
                if todo:
                    conn.execute(
                        "INSERT INTO meta(key, value) VALUES ('schema_version', %s) "
                        "ON CONFLICT (key) DO UPDATE SET value=EXCLUDED.value",
                        (str(todo[-1].number),),
                    )
        except psycopg.Error as exc:
            raise StoreError(
                f"store.url: cannot prepare the database {self.where}: {self._reason(exc)}",
                setting="store.url",
            ) from exc

    def schema_version(self) -> int:
        """The number of the last migration applied to this database (0: none yet)."""
        if not self._one("SELECT to_regclass('meta') IS NOT NULL")[0][0]:
            return 0
        found = self._one("SELECT value FROM meta WHERE key='schema_version'")
        return int(found[0][0]) if found else 0

    # -- jobs ----------------------------------------------------------------------------

    def next_job_id(self) -> int:
        return int(self._one("SELECT nextval('job_ids')")[0][0])

    def next_job_ids(self, count: int) -> list[int]:
        """``count`` ids from the sequence in one round trip."""
        rows = self._one("SELECT nextval('job_ids') FROM generate_series(1, %s)", (count,))
        return sorted(int(r[0]) for r in rows)

    def write(self, batch: WriteBatch, *, again: bool = False) -> list[int]:
        """Commit ``batch`` as one pipelined transaction: one round trip, fenced when a
        fence is set (see :meth:`Store.write` for ``again``)."""
        insert_log, insert_journal = (
            (_LOG_AGAIN, _JOURNAL_AGAIN) if again else (_INSERT_LOG, _INSERT_JOURNAL)
        )
        untagged = [job for job in batch.jobs.values() if job.id not in self._tagged]
        with self._write() as conn, conn.cursor() as cur:
            if batch.jobs:
                cur.executemany(_UPSERT_JOB, [_job_row(job) for job in batch.jobs.values()])
                # A job's tags never change: written with its first version, kept after
                # (a rewrite of a job this handle tagged skips them).
                cur.executemany(_INSERT_TAGS, [row for job in untagged for row in tag_rows(job)])
            if batch.log:
                cur.executemany(insert_log, [_log_row(e) for e in batch.log])
            started = [
                conn.execute(insert_journal + " RETURNING id", started_row(s)) for s in batch.starts
            ]
            if batch.ends:
                cur.executemany(
                    "UPDATE journal SET status=%s, ended=%s, result=%s WHERE id=%s",
                    [
                        (e.status.value, e.ended, codec.dumps(e.result), e.record_id)
                        for e in batch.ends
                    ],
                )
            if batch.pgids:
                cur.executemany(
                    "UPDATE journal SET pgid=%s WHERE id=%s", [(g, r) for r, g in batch.pgids]
                )
            if batch.config is not None:
                upserts, deletes = config_changes(*batch.config)
                if deletes:
                    cur.executemany("DELETE FROM config WHERE kind=%s AND name=%s", deletes)
                cur.executemany(_UPSERT_CONFIG, upserts)
            # In a pipeline the results are not there yet: fetching waits for them.
            ids = [int(_fetched(c)[0]) for c in started]
        self._tagged.update(job.id for job in untagged)
        return ids

    def load_jobs(self, *, include_archived: bool = False) -> list[Job]:
        sql = "SELECT id, doc FROM jobs"
        if not include_archived:
            sql += " WHERE NOT archived"
        return [job_from_doc(r[1], r[0]) for r in self._read(sql + " ORDER BY id")]

    def load_job(self, job_id: int) -> Job | None:
        rows = self._read("SELECT doc FROM jobs WHERE id=%s", (job_id,))
        return job_from_doc(rows[0][0], job_id) if rows else None

    def search_jobs(self, query: JobQuery) -> list[Job]:
        sql, args = search_sql(query)
        rows = self._read(sql.replace("?", "%s"), args)
        return [job_from_doc(doc, job_id) for job_id, doc in rows]

    def purge_archived(self, before: float) -> int:
        """Delete the archived jobs that ended before ``before`` (epoch seconds), with
        their log lines and journal records, in one transaction; how many jobs."""
        rows = self._write_one(
            "WITH gone AS (DELETE FROM jobs WHERE archived AND ended < %s RETURNING id), "
            "log_gone AS (DELETE FROM log WHERE job_id IN (SELECT id FROM gone)), "
            "journal_gone AS (DELETE FROM journal WHERE job_id IN (SELECT id FROM gone)), "
            "tags_gone AS (DELETE FROM job_tags WHERE job_id IN (SELECT id FROM gone)) "
            "SELECT count(*) FROM gone",
            (before,),
        )
        return int(rows[0][0])

    # -- job log -------------------------------------------------------------------------

    def load_log(self, job_id: int, since: int = 0) -> list[LogEntry]:
        rows = self._read(
            "SELECT serial, ts, kind, message, data FROM log WHERE job_id=%s AND serial>%s "
            "ORDER BY serial",
            (job_id, since),
        )
        return [log_entry(job_id, r) for r in rows]

    def last_serial(self, job_id: int) -> int:
        rows = self._read("SELECT COALESCE(MAX(serial), 0) FROM log WHERE job_id=%s", (job_id,))
        return int(rows[0][0])

    # -- journal -------------------------------------------------------------------------

    def load_journal(self, job_id: int, op_index: int | None = None) -> list[JournalRecord]:
        sql = f"SELECT {_JOURNAL_COLUMNS} FROM journal WHERE job_id=%s"
        args: tuple[Any, ...] = (job_id,)
        if op_index is not None:
            sql += " AND op_index=%s"
            args += (op_index,)
        return [journal_record(r) for r in self._read(sql + " ORDER BY id", args)]

    def load_journal_kinds(self, kinds: tuple[StepKind, ...]) -> list[JournalRecord]:
        """Every journal record of these kinds, across all jobs, in the order written."""
        rows = self._read(
            f"SELECT {_JOURNAL_COLUMNS} FROM journal WHERE kind = ANY(%s) ORDER BY id",
            (list(stored_kinds(kinds)),),
        )
        records = [journal_record(r) for r in rows]
        return [r for r in records if r.kind in kinds]

    # -- cluster configuration -----------------------------------------------------------

    def load_config(self) -> ClusterConfig:
        return config_from_rows(self._read("SELECT kind, name, doc FROM config"))

    # -- several masters (see extjobs.store.shared) -----------------------------------------

    def _lease_row(self, rows: list[tuple[Any, ...]]) -> Lease | None:
        return Lease(str(rows[0][0]), int(rows[0][1]), float(rows[0][2])) if rows else None

    def acquire_lease(self, master: str, ttl: float) -> Lease | None:
        return self._lease_row(
            self._one(
                "INSERT INTO leader(id, holder, epoch, expires) "
                "VALUES (1, %s, 1, now() + make_interval(secs => %s)) "
                "ON CONFLICT (id) DO UPDATE SET holder=EXCLUDED.holder, "
                "epoch=leader.epoch + 1, expires=EXCLUDED.expires WHERE leader.expires < now() "
                "RETURNING holder, epoch, extract(epoch FROM expires - now())",
                (master, ttl),
            )
        )

    def renew_lease(self, master: str, epoch: int, ttl: float) -> Lease | None:
        return self._lease_row(
            self._one(
                "UPDATE leader SET expires = now() + make_interval(secs => %s) "
                "WHERE id = 1 AND holder = %s AND epoch = %s AND expires > now() "
                "RETURNING holder, epoch, extract(epoch FROM expires - now())",
                (ttl, master, epoch),
            )
        )

    def lease(self) -> Lease | None:
        return self._lease_row(
            self._one(
                "SELECT holder, epoch, extract(epoch FROM expires - now()) FROM leader WHERE id=1"
            )
        )

    def set_fence(self, epoch: int | None) -> None:
        self._fence = epoch

    def heartbeat(self, master: str, address: str) -> None:
        self._one(
            "INSERT INTO masters(name, address, seen) VALUES (%s, %s, now()) "
            "ON CONFLICT (name) DO UPDATE SET address=EXCLUDED.address, seen=now()",
            (master, address),
        )

    def masters(self) -> list[MasterInfo]:
        rows = self._read(
            "SELECT name, address, extract(epoch FROM now() - seen) FROM masters ORDER BY seen DESC"
        )
        return [MasterInfo(str(r[0]), str(r[1]), float(r[2])) for r in rows]

    def submit_jobs(self, jobs: Sequence[Job], log: Sequence[LogEntry]) -> None:
        rows = [_job_row(job) for job in jobs]
        with self._write() as conn, conn.cursor() as cur:
            cur.executemany(_UPSERT_JOB, rows)
            cur.executemany(_INSERT_TAGS, [row for job in jobs for row in tag_rows(job)])
            if log:
                cur.executemany(_INSERT_LOG, [_log_row(e) for e in log])
            cur.executemany(
                "INSERT INTO requests(kind, job_id) VALUES (%s, %s)",
                [(RequestKind.SUBMITTED.value, job.id) for job in jobs],
            )

    def add_requests(self, kind: RequestKind, job_ids: Sequence[int]) -> None:
        with self._write() as conn, conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO requests(kind, job_id) VALUES (%s, %s)",
                [(kind.value, job_id) for job_id in job_ids],
            )

    def take_requests(self) -> list[Request]:
        rows = self._write_one("DELETE FROM requests RETURNING id, kind, job_id")
        return sorted(
            (Request(int(r[0]), RequestKind(r[1]), int(r[2])) for r in rows), key=lambda r: r.id
        )

    def quarantine(self, table: str, key: str) -> bool:
        where, args = quarantine_where(table, key)
        where = where.replace("?", "%s")
        with self._write() as conn:
            cur = conn.execute(f"SELECT * FROM {table} WHERE {where} FOR UPDATE", args)
            row = cur.fetchone()
            if row is None:
                return False
            columns = [d.name for d in cur.description or ()]
            conn.execute(
                "INSERT INTO quarantine(tbl, key, row, at) VALUES (%s, %s, %s, %s)",
                (table, key, row_document(columns, row), time.time()),
            )
            conn.execute(f"DELETE FROM {table} WHERE {where}", args)
        return True

    def close(self) -> None:
        self._closed = True
        self._conn.close()
