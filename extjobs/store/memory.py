"""An in-memory :class:`~extjobs.store.base.Store`, for the test kit and benchmarks.

It keeps the same documents as the SQLite store (JSON text made by
:mod:`extjobs.model.codec` and :mod:`extjobs.model.journal`), so that what an engine test
reads back has been through the same encoding as in production; only durability is
missing — everything is gone with the process.
"""

from __future__ import annotations

from typing import Any

from extjobs.errors import StoreError
from extjobs.model import codec
from extjobs.model.cluster import ClusterConfig
from extjobs.model.jobquery import JobQuery
from extjobs.model.jobs import Job, LogEntry
from extjobs.model.journal import JournalRecord
from extjobs.model.steps import StepKind
from extjobs.store.base import (
    StoreBase,
    WriteBatch,
    config_changes,
    config_from_rows,
    job_doc,
    job_from_doc,
    journal_record,
    quarantine_where,
    started_row,
    stored_kinds,
    tag_rows,
)


class MemoryStore(StoreBase):
    """See the module docstring."""

    def __init__(self) -> None:
        self._jobs: dict[int, tuple[bool, str]] = {}
        #: The columns a search filters on (status, received) and the tag index.
        self._columns: dict[int, tuple[str, float]] = {}
        self._tags: dict[tuple[str, str], set[int]] = {}
        self._log: dict[int, dict[int, LogEntry]] = {}
        self._journal: dict[int, list[Any]] = {}
        self._config: dict[tuple[str, str], str] = {}
        self._next_id = 1
        self._next_record = 1
        self._closed = False
        #: Rows set aside (table, key, the row as text).
        self.quarantined: list[tuple[str, str, str]] = []

    def _open(self) -> None:
        if self._closed:
            raise StoreError("the store is closed")

    # -- jobs ----------------------------------------------------------------------------

    def next_job_id(self) -> int:
        job_id = self._next_id
        self._next_id += 1
        return job_id

    def write(self, batch: WriteBatch, *, again: bool = False) -> list[int]:
        """Apply ``batch`` whole, or raise StoreError having changed nothing."""
        self._open()
        for entry in batch.log:
            if not again and entry.serial in self._log.get(entry.job_id, {}):
                raise StoreError(
                    f"store write failed: log entry {entry.job_id}/{entry.serial} exists"
                )
        for record_id in [e.record_id for e in batch.ends] + [r for r, _ in batch.pgids]:
            if record_id not in self._journal:
                raise StoreError(f"store write failed: no journal record {record_id}")
        for job in batch.jobs.values():
            self._jobs[job.id] = (job.archived, job_doc(job))
            self._columns[job.id] = (job.status.value, job.received)
            for kind, name, job_id in tag_rows(job):
                self._tags.setdefault((kind, name), set()).add(job_id)
        for entry in batch.log:
            self._log.setdefault(entry.job_id, {}).setdefault(entry.serial, entry)
        ids = []
        for start in batch.starts:
            key = (start.job_id, start.op_index, start.seq)
            found = [r[0] for r in self._journal.values() if tuple(r[1:4]) == key]
            if again and found:
                ids.append(found[0])
                continue
            record_id = self._next_record
            self._next_record += 1
            # The same columns as the SQLite table: id, the started row, ended, result, pgid.
            self._journal[record_id] = [record_id, *started_row(start), None, None, None]
            ids.append(record_id)
        for end in batch.ends:
            row = self._journal[end.record_id]
            row[7], row[10], row[11] = end.status.value, end.ended, codec.dumps(end.result)
        for record_id, pgid in batch.pgids:
            self._journal[record_id][12] = pgid
        if batch.config is not None:
            upserts, deletes = config_changes(*batch.config)
            for kind, name in deletes:
                self._config.pop((kind, name), None)
            for kind, name, doc in upserts:
                self._config[(kind, name)] = doc
        return ids

    def load_jobs(self, *, include_archived: bool = False) -> list[Job]:
        return [
            job_from_doc(doc, job_id)
            for job_id, (archived, doc) in sorted(self._jobs.items())
            if include_archived or not archived
        ]

    def load_job(self, job_id: int) -> Job | None:
        found = self._jobs.get(job_id)
        return None if found is None else job_from_doc(found[1], job_id)

    def search_jobs(self, query: JobQuery) -> list[Job]:
        sets = [self._tags.get((kind.value, name), set()) for kind, name in query.tags]
        candidates = set.intersection(*sets) if sets else set(self._jobs)
        statuses = {s.value for s in query.statuses}
        found: list[Job] = []
        for job_id in sorted(candidates, reverse=True):
            if len(found) == query.limit:
                break
            if job_id not in self._jobs or (query.before is not None and job_id >= query.before):
                continue
            archived, doc = self._jobs[job_id]
            status, received = self._columns[job_id]
            if (
                (archived and not query.archived)
                or (statuses and status not in statuses)
                or (query.since is not None and received < query.since)
            ):
                continue
            found.append(job_from_doc(doc, job_id))
        return found

    def purge_archived(self, before: float) -> int:
        self._open()
        doomed = [
            job_id
            for job_id, (archived, doc) in self._jobs.items()
            if archived and (ended := job_from_doc(doc).ended) is not None and ended < before
        ]
        for job_id in doomed:
            del self._jobs[job_id]
            del self._columns[job_id]
            self._log.pop(job_id, None)
        gone = set(doomed)
        for ids in self._tags.values():
            ids -= gone
        self._journal = {k: row for k, row in self._journal.items() if row[1] not in gone}
        return len(doomed)

    # -- job log -------------------------------------------------------------------------

    def load_log(self, job_id: int, since: int = 0) -> list[LogEntry]:
        entries = self._log.get(job_id, {})
        return [entries[s] for s in sorted(entries) if s > since]

    def last_serial(self, job_id: int) -> int:
        return max(self._log.get(job_id, {}), default=0)

    # -- journal -------------------------------------------------------------------------

    def load_journal(self, job_id: int, op_index: int | None = None) -> list[JournalRecord]:
        return [
            journal_record(row)
            for _, row in sorted(self._journal.items())
            if row[1] == job_id and (op_index is None or row[2] == op_index)
        ]

    def load_journal_kinds(self, kinds: tuple[StepKind, ...]) -> list[JournalRecord]:
        columns = stored_kinds(kinds)
        records = [
            journal_record(row) for _, row in sorted(self._journal.items()) if row[5] in columns
        ]
        return [r for r in records if r.kind in kinds]

    # -- cluster configuration -----------------------------------------------------------

    def load_config(self) -> ClusterConfig:
        return config_from_rows((kind, name, doc) for (kind, name), doc in self._config.items())

    def quarantine(self, table: str, key: str) -> bool:
        self._open()
        _, args = quarantine_where(table, key)
        found: Any = None
        if table == "jobs":
            found = self._jobs.pop(args[0], None)
        elif table == "log":
            found = self._log.get(args[0], {}).pop(args[1], None)
        elif table == "journal":
            found = self._journal.pop(args[0], None)
        else:
            found = self._config.pop((args[0], args[1]), None)
        if found is None:
            return False
        self.quarantined.append((table, key, repr(found)))
        return True

    def close(self) -> None:
        self._closed = True
