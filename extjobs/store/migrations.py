"""Numbered schema migrations, per backend, and the rule that applies them.

A store records in its ``meta`` table the number of the last migration applied to it
(``schema_version``). Opening a store applies, in one transaction, every migration with
a higher number, in order, and records the new number; a store whose number is higher
than the last migration this code knows was written by a newer extjobs and is refused
(:class:`~extjobs.errors.StoreError`) before anything is written to it.

A migration is never edited once released: a change of schema is a new migration at the
end of its list. A step is SQL text, or — where SQLite's SQL cannot say "if" (it has no
``ADD COLUMN IF NOT EXISTS``) — a function of the open connection.

SQLite history:

1. the schema of release 0.1 exactly as it was written then (``CREATE … IF NOT EXISTS``,
   so it is also safe on a store made before ``meta`` existed);
2. ``journal.pgid``. Release 0.1 wrote schema version 1 both before and after the
   column was added, and added it ad hoc at every open: a version-1 store may or may not
   have it, so this migration adds it only where it is missing;
3. the log table rebuilt ``WITHOUT ROWID`` (write amplification, ``bench/amplification.py``);
4. ``quarantine``: rows set aside as unreadable (``extjobs daemon --quarantine``);
5. ``job_tags``: the index a job search walks (:mod:`extjobs.model.jobquery`), filled
   from the stored jobs.

PostgreSQL history starts with one migration: the same tables, with a ``SEQUENCE`` for
job ids (durable, and safe with several writers) and an identity column for journal ids;
2 adds what several masters share (lease, fence, masters, requests); 3 makes a step's
journal record unique, so that a batch is safely written again (``Store.write``); 4 and
5 are SQLite's 4 and 5.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import attrs

from extjobs.errors import StoreError
from extjobs.model import codec
from extjobs.model.jobquery import job_tags


@attrs.frozen
class Migration:
    """Migration ``number`` (1, 2, …): what it does, in words, and the step itself."""

    number: int
    description: str
    step: str | Callable[[Any], None]


def pending(migrations: Sequence[Migration], version: int, *, where: str) -> list[Migration]:
    """The migrations to apply to a store at ``version`` (0: a new store), in order.

    Raises :class:`StoreError` when the store is newer than the last migration known here,
    naming both numbers and ``where`` the store is.
    """
    latest = migrations[-1].number
    if version > latest:
        raise StoreError(
            f"store {where} has schema version {version}, newer than this extjobs knows "
            f"({latest}): upgrade extjobs, or restore a backup made by this version",
            store=where,
            version=version,
            supported=latest,
        )
    return [m for m in migrations if m.number > version]


def check_numbering(migrations: Sequence[Migration]) -> None:
    """Raise ``ValueError`` unless the migrations are numbered 1, 2, … without gaps."""
    numbers = [m.number for m in migrations]
    if numbers != list(range(1, len(numbers) + 1)):
        raise ValueError(f"migrations must be numbered 1..n in order, not {numbers}")


# -- SQLite ------------------------------------------------------------------------------

#: Migration 1: the schema of release 0.1, unchanged (its stores open as they are).
SQLITE_SCHEMA_1 = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY,
    status TEXT NOT NULL,
    archived INTEGER NOT NULL DEFAULT 0,
    received REAL NOT NULL,
    ended REAL,
    doc TEXT NOT NULL
);
-- No query selects jobs by status (the queue filters in memory), and keeping such an
-- index cost a third of every job write; stores made before are relieved of it here.
DROP INDEX IF EXISTS jobs_status;
CREATE TABLE IF NOT EXISTS log (
    job_id INTEGER NOT NULL,
    serial INTEGER NOT NULL,
    ts REAL NOT NULL,
    kind TEXT NOT NULL,
    message TEXT NOT NULL,
    data TEXT,
    PRIMARY KEY (job_id, serial)
);
CREATE TABLE IF NOT EXISTS journal (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id INTEGER NOT NULL,
    op_index INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    node TEXT NOT NULL,
    kind TEXT NOT NULL,
    description TEXT NOT NULL,
    status TEXT NOT NULL,
    data TEXT NOT NULL,
    started REAL NOT NULL,
    ended REAL,
    result TEXT,
    pgid INTEGER
);
CREATE INDEX IF NOT EXISTS journal_job ON journal(job_id, op_index);
CREATE TABLE IF NOT EXISTS config (
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    doc TEXT NOT NULL,
    PRIMARY KEY (kind, name)
);
"""


def _sqlite_add_pgid(db: Any) -> None:
    columns = {row[1] for row in db.execute("PRAGMA table_info(journal)")}
    if "pgid" not in columns:
        db.execute("ALTER TABLE journal ADD COLUMN pgid INTEGER")


# Rows that could not be read, set aside by 'extjobs daemon --quarantine' (the row as
# JSON, its table and key, why, when).
QUARANTINE_SCHEMA = """
CREATE TABLE quarantine (
    id SERIAL_ID,
    tbl TEXT NOT NULL,
    key TEXT NOT NULL,
    row TEXT NOT NULL,
    at REAL NOT NULL
);
"""

# The log as a table clustered on its key: a line written updates one b-tree, not a
# table and its primary-key index (about 10 % fewer bytes written per job).
SQLITE_SCHEMA_3 = """
CREATE TABLE log_clustered (
    job_id INTEGER NOT NULL,
    serial INTEGER NOT NULL,
    ts REAL NOT NULL,
    kind TEXT NOT NULL,
    message TEXT NOT NULL,
    data TEXT,
    PRIMARY KEY (job_id, serial)
) WITHOUT ROWID;
INSERT INTO log_clustered SELECT job_id, serial, ts, kind, message, data FROM log;
DROP TABLE log;
ALTER TABLE log_clustered RENAME TO log;
"""

# What a job search walks: one row per (tag, job), clustered on the tag, newest job last;
# written once, with a job's first version (extjobs.model.jobquery).
JOB_TAGS_SCHEMA = """
CREATE TABLE job_tags (
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    job_id BIGINT NOT NULL,
    PRIMARY KEY (kind, name, job_id)
) WITHOUT_ROWID;
CREATE INDEX job_tags_job ON job_tags(job_id);
"""


def stored_job_tags(doc: str, job_id: int) -> list[tuple[str, str, int]]:
    """The tag rows of a stored job document (read as JSON: a migration must not depend
    on today's model classes); none for a document that cannot be read."""
    try:
        job = codec.loads(doc)["job"]
        ops = [op["input"] for op in job["ops"]]
        tags = job_tags(ops, job.get("submitter"), job.get("touches") or ())
    except (ValueError, KeyError, TypeError):
        return []
    return sorted((kind.value, name, job_id) for kind, name in tags)


def _sqlite_job_tags(db: Any) -> None:
    for statement in JOB_TAGS_SCHEMA.replace("WITHOUT_ROWID", "WITHOUT ROWID").split(";"):
        if statement.strip():
            db.execute(statement)
    for job_id, doc in db.execute("SELECT id, doc FROM jobs").fetchall():
        db.executemany(
            "INSERT OR IGNORE INTO job_tags(kind, name, job_id) VALUES (?, ?, ?)",
            stored_job_tags(doc, job_id),
        )


def _postgres_job_tags(conn: Any) -> None:
    conn.execute(JOB_TAGS_SCHEMA.replace("WITHOUT_ROWID", ""))
    with conn.cursor() as cur:
        for job_id, doc in conn.execute("SELECT id, doc FROM jobs").fetchall():
            rows = stored_job_tags(doc, job_id)
            if rows:
                cur.executemany(
                    "INSERT INTO job_tags(kind, name, job_id) VALUES (%s, %s, %s) "
                    "ON CONFLICT DO NOTHING",
                    rows,
                )


SQLITE = (
    Migration(1, "the schema of release 0.1", SQLITE_SCHEMA_1),
    Migration(2, "journal.pgid, where a store of 0.1 made before it lacks it", _sqlite_add_pgid),
    Migration(3, "the log clustered on (job, serial)", SQLITE_SCHEMA_3),
    Migration(
        4,
        "rows set aside as unreadable",
        QUARANTINE_SCHEMA.replace("SERIAL_ID", "INTEGER PRIMARY KEY AUTOINCREMENT"),
    ),
    Migration(5, "the job tags a search walks, filled from the stored jobs", _sqlite_job_tags),
)

# -- PostgreSQL --------------------------------------------------------------------------

POSTGRES_SCHEMA_1 = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE SEQUENCE job_ids AS BIGINT START 1 CACHE 1;
CREATE TABLE jobs (
    id BIGINT PRIMARY KEY,
    status TEXT NOT NULL,
    archived BOOLEAN NOT NULL DEFAULT FALSE,
    received DOUBLE PRECISION NOT NULL,
    ended DOUBLE PRECISION,
    doc TEXT NOT NULL
);
CREATE TABLE log (
    job_id BIGINT NOT NULL,
    serial INTEGER NOT NULL,
    ts DOUBLE PRECISION NOT NULL,
    kind TEXT NOT NULL,
    message TEXT NOT NULL,
    data TEXT,
    PRIMARY KEY (job_id, serial)
);
CREATE TABLE journal (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job_id BIGINT NOT NULL,
    op_index INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    node TEXT NOT NULL,
    kind TEXT NOT NULL,
    description TEXT NOT NULL,
    status TEXT NOT NULL,
    data TEXT NOT NULL,
    started DOUBLE PRECISION NOT NULL,
    ended DOUBLE PRECISION,
    result TEXT,
    pgid INTEGER
);
CREATE INDEX journal_job ON journal(job_id, op_index);
CREATE TABLE config (
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    doc TEXT NOT NULL,
    PRIMARY KEY (kind, name)
);
"""

POSTGRES_SCHEMA_2 = """
CREATE TABLE leader (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    holder TEXT NOT NULL,
    epoch BIGINT NOT NULL,
    expires TIMESTAMPTZ NOT NULL
);
CREATE TABLE masters (
    name TEXT PRIMARY KEY,
    address TEXT NOT NULL,
    seen TIMESTAMPTZ NOT NULL
);
CREATE TABLE requests (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind TEXT NOT NULL,
    job_id BIGINT NOT NULL
);
-- The fence: called first in every transaction of a leader's store handle. It holds the
-- lease row (FOR SHARE) until the transaction ends, so a takeover waits for it, and
-- refuses the whole transaction unless the lease still carries the caller's epoch.
CREATE FUNCTION extjobs_fence(wanted BIGINT) RETURNS VOID LANGUAGE plpgsql AS $$
DECLARE
    current BIGINT;
BEGIN
    SELECT epoch INTO current FROM leader WHERE id = 1 FOR SHARE;
    IF current IS DISTINCT FROM wanted THEN
        RAISE EXCEPTION 'extjobs fenced: this master led at epoch %, the lease is at epoch %',
            wanted, current;
    END IF;
END
$$;
"""

# A step is journalled once: a batch written again after a commit whose outcome was
# unknown finds its record by (job, opcode, step number) instead of adding a second one.
POSTGRES_SCHEMA_3 = """
CREATE UNIQUE INDEX journal_step ON journal(job_id, op_index, seq);
"""

POSTGRES = (
    Migration(1, "jobs, log, journal, config; job ids from a sequence", POSTGRES_SCHEMA_1),
    Migration(
        2, "the leader's lease and its fence, masters, requests to the leader", POSTGRES_SCHEMA_2
    ),
    Migration(3, "one journal record per step, so a batch can be written again", POSTGRES_SCHEMA_3),
    Migration(
        4,
        "rows set aside as unreadable",
        QUARANTINE_SCHEMA.replace(
            "SERIAL_ID", "BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY"
        ).replace("at REAL", "at DOUBLE PRECISION"),
    ),
    Migration(5, "the job tags a search walks, filled from the stored jobs", _postgres_job_tags),
)

check_numbering(SQLITE)
check_numbering(POSTGRES)
