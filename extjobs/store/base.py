"""The store port: what the engine needs from durable storage, and what every backend
must keep.

Backends: :mod:`.sqlite` (the embedded default), :mod:`.postgres` (shared by several
masters), :mod:`.memory` (the test kit); :func:`extjobs.store.open_store` picks SQLite
or PostgreSQL from the configuration. Schemas change by :mod:`.migrations` only. Every
backend passes ``tests/engine/test_store_contract.py``. Documents are JSON produced by
:mod:`extjobs.model.codec` and :mod:`extjobs.model.journal`; nothing is pickled.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Protocol

import attrs

from extjobs.errors import InputError, StoreError, UnreadableRowError
from extjobs.model import codec
from extjobs.model.cluster import ClusterConfig
from extjobs.model.jobquery import JobQuery, job_tags
from extjobs.model.jobs import Job, LogEntry, LogKind
from extjobs.model.journal import Entry, JournalRecord, StepStatus, decode_entry, encode_entry
from extjobs.model.steps import StepKind


@attrs.frozen
class JournalStart:
    """A step journalled as started (see :meth:`Store.journal_start`)."""

    job_id: int
    op_index: int
    seq: int
    node: str
    description: str
    entry: Entry


@attrs.frozen
class JournalEnd:
    """A journalled step's end (see :meth:`Store.journal_finish`)."""

    record_id: int
    status: StepStatus
    result: dict[str, Any]
    ended: float


@attrs.define
class WriteBatch:
    """Writes that commit together (:meth:`Store.write`): one transaction.

    Batches merge in order — a later version of a job replaces an earlier one, log lines,
    journal starts, ends and process groups accumulate, and configuration changes chain
    (the first ``old`` to the last ``new``) — so a merged batch leaves the store exactly
    as its parts written one after the other would."""

    jobs: dict[int, Job] = attrs.Factory(dict)
    log: list[LogEntry] = attrs.Factory(list)
    starts: list[JournalStart] = attrs.Factory(list)
    ends: list[JournalEnd] = attrs.Factory(list)
    pgids: list[tuple[int, int]] = attrs.Factory(list)
    config: tuple[ClusterConfig, ClusterConfig] | None = None

    def merge(self, later: WriteBatch) -> None:
        """Add ``later``'s writes after this batch's."""
        self.jobs.update(later.jobs)
        self.log.extend(later.log)
        self.starts.extend(later.starts)
        self.ends.extend(later.ends)
        self.pgids.extend(later.pgids)
        if later.config is not None:
            first = later.config[0] if self.config is None else self.config[0]
            self.config = (first, later.config[1])

    def __bool__(self) -> bool:
        return bool(self.jobs or self.log or self.starts or self.ends or self.pgids or self.config)


class Store(Protocol):
    """What the engine needs from durable storage.

    Every write commits before it returns, and a write that raises
    :class:`~extjobs.errors.StoreError` changed nothing. The durability points the engine
    relies on: a step's journal entry is written (``journal_start``, or a
    :class:`WriteBatch` holding it) before the step runs, and a job's new status is
    written (with the log line announcing it) before anyone is told of it. Between those
    points the engine may keep decisions in memory and write them later, in order
    (:mod:`extjobs.engine.writer`), so the store always holds a prefix of what was decided.
    """

    def write(self, batch: WriteBatch, *, again: bool = False) -> list[int]:
        """Commit ``batch`` in one transaction; the journal record ids of its
        ``starts``, in order. A log line whose serial exists makes the whole write fail.

        ``again``: this batch was written before and that write raised, so whether it
        committed is unknown (a connection that broke during the commit). Then what is
        there already is kept, not refused: a log line with an existing serial is
        skipped, and a step already journalled (same job, opcode and step number) keeps
        its record, whose id is returned."""
        ...

    def load_jobs(self, *, include_archived: bool = False) -> list[Job]: ...
    def load_job(self, job_id: int) -> Job | None: ...
    def search_jobs(self, query: JobQuery) -> list[Job]:
        """At most ``query.limit`` jobs matching ``query``, newest (highest id) first.

        Answered from the index of job tags (written with a job's first version, see
        :func:`tag_rows`) and the ``status``, ``archived`` and ``received`` columns; only
        the documents of the jobs returned are read."""
        ...

    def next_job_id(self) -> int: ...
    def next_job_ids(self, count: int) -> list[int]: ...
    def save_jobs(self, jobs: list[Job], log: Sequence[LogEntry] = ()) -> None: ...
    def append_log(self, entry: LogEntry) -> None: ...
    def load_log(self, job_id: int, since: int = 0) -> list[LogEntry]: ...
    def last_serial(self, job_id: int) -> int: ...
    def journal_start(
        self, job_id: int, op_index: int, seq: int, node: str, description: str, entry: Entry
    ) -> int: ...
    def journal_finish(
        self, record_id: int, status: StepStatus, result: dict[str, Any]
    ) -> None: ...
    def journal_set_pgid(self, record_id: int, pgid: int) -> None: ...
    def load_journal(self, job_id: int, op_index: int | None = None) -> list[JournalRecord]: ...
    def load_journal_kinds(self, kinds: tuple[StepKind, ...]) -> list[JournalRecord]: ...
    def purge_archived(self, before: float) -> int:
        """Delete every archived job whose ``ended`` < ``before``, with its log lines and
        its journal records, in one transaction; return how many jobs were deleted.

        Jobs that are not archived, or have no ``ended``, are never deleted, whatever their
        age. Purging forgets what the journal said about the deleted jobs' steps: the
        caller keeps what must outlive them (the engine writes a ledger checkpoint first,
        :mod:`extjobs.engine.purge`). Job ids are not reused after a purge.
        """
        ...

    def load_config(self) -> ClusterConfig: ...
    def save_config(self, old: ClusterConfig, new: ClusterConfig) -> None: ...
    def quarantine(self, table: str, key: str) -> bool:
        """Move row ``key`` of ``table`` (see :data:`QUARANTINE_KEYS`) into the
        ``quarantine`` table, whole, in one transaction; whether there was such a row."""
        ...

    def close(self) -> None: ...


_JOURNAL_COLUMNS = (
    "id, job_id, op_index, seq, node, kind, description, status, data, started, ended, result, pgid"
)

CONFIG_KINDS = ("groups", "nodes", "instances")


def tag_rows(job: Job) -> list[tuple[str, str, int]]:
    """The ``(kind, name, job_id)`` rows of the job tag index for ``job``."""
    tags = job_tags([op.input for op in job.ops], job.submitter, job.touches)
    return sorted((kind.value, name, job.id) for kind, name in tags)


def search_sql(query: JobQuery) -> tuple[str, list[Any]]:
    """The ``SELECT id, doc`` (``?`` placeholders) and its arguments answering ``query``
    (see :meth:`Store.search_jobs`): driven by the tag index when a tag filter is given
    (walked from the newest job down), else by the jobs' primary key."""
    tags = query.tags
    args: list[Any] = []
    if tags:
        kind, name = tags[0]
        sql = (
            "SELECT j.id, j.doc FROM job_tags t JOIN jobs j ON j.id = t.job_id "
            "WHERE t.kind = ? AND t.name = ?"
        )
        args += [kind.value, name]
        key = "t.job_id"
    else:
        sql = "SELECT j.id, j.doc FROM jobs j WHERE 1 = 1"
        key = "j.id"
    for kind, name in tags[1:]:
        sql += (
            " AND EXISTS (SELECT 1 FROM job_tags o WHERE o.kind = ? AND o.name = ? "
            "AND o.job_id = j.id)"
        )
        args += [kind.value, name]
    if query.before is not None:
        sql += f" AND {key} < ?"
        args.append(query.before)
    if query.statuses:
        sql += f" AND j.status IN ({','.join('?' for _ in query.statuses)})"
        args += [s.value for s in query.statuses]
    if not query.archived:
        sql += " AND j.archived = ?"
        args.append(False)
    if query.since is not None:
        sql += " AND j.received >= ?"
        args.append(query.since)
    sql += f" ORDER BY {key} DESC LIMIT ?"
    args.append(query.limit)
    return sql, args


def job_doc(job: Job) -> str:
    """The stored document of ``job`` (versioned)."""
    return codec.dumps({"v": codec.FORMAT_VERSION, "job": codec.unstructure(job)})


#: What decoding a damaged document raises (cattrs reports structure errors as
#: exception groups).
_DECODE_ERRORS = (ValueError, TypeError, KeyError, AttributeError, ExceptionGroup)


@contextmanager
def reading(table: str, key: object) -> Iterator[None]:
    """Turn a failure to decode the row ``key`` of ``table`` into an
    :class:`UnreadableRowError` that names it and says how to start anyway."""
    try:
        yield
    except UnreadableRowError:
        raise
    except (*_DECODE_ERRORS, StoreError) as exc:
        reason = " ".join(str(exc).split())[:200] or type(exc).__name__
        raise UnreadableRowError(
            f"the store's {table} row {key} cannot be read ({reason}); restore a backup "
            f"('extjobs daemon --restore FILE'), or set the row aside and start with "
            f"'extjobs daemon --quarantine {table}:{key}'",
            table=table,
            key=str(key),
        ) from exc


#: The tables whose rows can be set aside, and how a key names a row in each.
QUARANTINE_KEYS = {
    "jobs": ("id", ("id",)),
    "log": ("JOB/SERIAL", ("job_id", "serial")),
    "journal": ("id", ("id",)),
    "config": ("KIND/NAME", ("kind", "name")),
}


def quarantine_where(table: str, key: str) -> tuple[str, tuple[Any, ...]]:
    """The ``WHERE`` clause (``?`` placeholders) and arguments naming row ``key`` of
    ``table``; raises InputError for a table or key that names no row."""
    if table not in QUARANTINE_KEYS:
        raise InputError(
            f"cannot quarantine rows of {table!r}; tables: {', '.join(QUARANTINE_KEYS)}",
            field="quarantine",
        )
    shape, columns = QUARANTINE_KEYS[table]
    parts = key.split("/", len(columns) - 1) if len(columns) > 1 else [key]
    args: list[Any] = list(parts)
    if len(parts) != len(columns) or (table != "config" and not all(p.isdigit() for p in parts)):
        raise InputError(
            f"quarantine key {key!r} of {table} does not have the form {shape}",
            field="quarantine",
        )
    if table != "config":
        args = [int(p) for p in parts]
    return " AND ".join(f"{c}=?" for c in columns), tuple(args)


def row_document(columns: Sequence[str], row: Sequence[Any]) -> str:
    """A row as JSON text (what the quarantine keeps of it)."""
    return codec.dumps(dict(zip(columns, row, strict=True)))


def job_from_doc(doc: str, job_id: object = "?") -> Job:
    with reading("jobs", job_id):
        return codec.CONVERTER.structure(codec.loads(doc)["job"], Job)


def log_entry(job_id: int, row: Sequence[Any]) -> LogEntry:
    """A log entry from a row of ``(serial, ts, kind, message, data)``."""
    with reading("log", f"{job_id}/{row[0]}"):
        data = None if row[4] is None else codec.loads(row[4])
        return LogEntry(job_id, row[0], row[1], LogKind(row[2]), row[3], data)


def config_from_rows(rows: Iterable[tuple[str, str, str]]) -> ClusterConfig:
    """The configuration stored as ``(kind, name, doc)`` rows (see :func:`config_changes`)."""
    docs: dict[str, dict[str, Any]] = {k: {} for k in CONFIG_KINDS}
    cluster: Any = None
    serial = 0
    for kind, name, doc in rows:
        with reading("config", f"{kind}/{name}"):
            value = codec.loads(doc)
            if kind == "cluster":
                cluster = value
            elif kind == "serial":
                serial = int(value)
            else:
                docs[kind][name] = value
    try:
        return codec.CONVERTER.structure(
            {"cluster": cluster, "serial": serial, **docs}, ClusterConfig
        )
    except _DECODE_ERRORS:
        # Which object: each one alone, against an otherwise empty configuration.
        with reading("config", "cluster/"):
            codec.CONVERTER.structure({"cluster": cluster}, ClusterConfig)
        for kind, objects in docs.items():
            for name, value in objects.items():
                with reading("config", f"{kind}/{name}"):
                    codec.CONVERTER.structure({kind: {name: value}}, ClusterConfig)
        raise


def config_changes(
    old: ClusterConfig, new: ClusterConfig
) -> tuple[list[tuple[str, str, str]], list[tuple[str, str]]]:
    """The ``(kind, name, doc)`` rows to write and the ``(kind, name)`` rows to delete
    to go from ``old`` to ``new``: only the objects that differ, and the serial."""
    upserts: list[tuple[str, str, str]] = []
    deletes: list[tuple[str, str]] = []
    if old.cluster != new.cluster:
        upserts.append(("cluster", "", codec.dumps(codec.unstructure(new.cluster))))
    for kind in CONFIG_KINDS:
        before: dict[str, Any] = getattr(old, kind)
        after: dict[str, Any] = getattr(new, kind)
        deletes.extend((kind, name) for name in before.keys() - after.keys())
        # A change replaces the objects it changes and shares the others with ``old``:
        # the identity test first keeps the cost of a change off the cluster's size
        # (attrs' ``!=`` compares every field even of an object with itself).
        upserts.extend(
            (kind, name, codec.dumps(codec.unstructure(obj)))
            for name, obj in after.items()
            if (was := before.get(name)) is not obj and was != obj
        )
    upserts.append(("serial", "", str(new.serial)))
    return upserts, deletes


def stored_kinds(kinds: tuple[StepKind, ...]) -> tuple[str, ...]:
    """The ``kind`` column values that may hold records of ``kinds`` (format 1 wrote fence
    runs as ``local``)."""
    columns = {k.value for k in kinds}
    if StepKind.FENCE in kinds:
        columns.add(StepKind.LOCAL.value)
    return tuple(sorted(columns))


def started_row(start: JournalStart) -> tuple[Any, ...]:
    """The journal columns ``job_id`` … ``started`` of a step journalled as started."""
    entry = start.entry
    return (
        start.job_id,
        start.op_index,
        start.seq,
        start.node,
        entry.kind.value,
        start.description,
        StepStatus.STARTED.value,
        codec.dumps(encode_entry(entry)),
        time.time(),
    )


class StoreBase:
    """What backends share: the single-purpose writes, each one :meth:`write` of a
    one-part batch, and ids in bulk (a backend implements ``write``, ``next_job_id`` and
    the reads)."""

    def write(self, batch: WriteBatch, *, again: bool = False) -> list[int]:
        raise NotImplementedError

    def next_job_id(self) -> int:
        raise NotImplementedError

    def next_job_ids(self, count: int) -> list[int]:
        """``count`` new job ids, in increasing order."""
        return [self.next_job_id() for _ in range(count)]

    def save_jobs(self, jobs: list[Job], log: Sequence[LogEntry] = ()) -> None:
        """Write ``jobs`` and append the ``log`` entries, all in one transaction."""
        self.write(WriteBatch(jobs={job.id: job for job in jobs}, log=list(log)))

    def append_log(self, entry: LogEntry) -> None:
        self.write(WriteBatch(log=[entry]))

    def journal_start(
        self, job_id: int, op_index: int, seq: int, node: str, description: str, entry: Entry
    ) -> int:
        start = JournalStart(job_id, op_index, seq, node, description, entry)
        return self.write(WriteBatch(starts=[start]))[0]

    def journal_finish(self, record_id: int, status: StepStatus, result: dict[str, Any]) -> None:
        self.write(WriteBatch(ends=[JournalEnd(record_id, status, result, time.time())]))

    def journal_set_pgid(self, record_id: int, pgid: int) -> None:
        """Remember the remote process group of a running step (killed after a crash)."""
        self.write(WriteBatch(pgids=[(record_id, pgid)]))

    def save_config(self, old: ClusterConfig, new: ClusterConfig) -> None:
        """Write the objects that differ between ``old`` and ``new`` in one transaction."""
        self.write(WriteBatch(config=(old, new)))


def journal_record(row: Sequence[Any]) -> JournalRecord:
    """A journal record from a row of ``_JOURNAL_COLUMNS`` (either document format)."""
    with reading("journal", row[0]):
        return _journal_record(row)


def _journal_record(row: Sequence[Any]) -> JournalRecord:
    entry = decode_entry(row[5], codec.loads(row[8]))
    return JournalRecord(
        id=row[0],
        job_id=row[1],
        op_index=row[2],
        seq=row[3],
        node=row[4],
        description=row[6],
        status=StepStatus(row[7]),
        payload=entry.payload,
        started=row[9],
        command=entry.command,
        move=entry.move,
        inverse=entry.inverse,
        ended=row[10],
        result=None if row[11] is None else codec.loads(row[11]),
        pgid=row[12],
    )
