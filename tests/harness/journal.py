"""A daemon's step journal read from outside, as recovery will find it.

The daemon's SQLite store (``<state_dir>/extjobs.db``) is opened read-only, so this
works while the daemon runs (WAL readers do not block it) and after it was killed,
before the next one starts. The columns read are those of the versioned schema
(:mod:`extjobs.store.migrations`); each row's document is decoded by the model's own
:func:`~extjobs.model.journal.decode_entry`.
"""

from __future__ import annotations

import contextlib
import json
import re
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import attrs

from extjobs.model.journal import Entry, StepStatus, decode_entry
from extjobs.model.steps import FenceRun, HypervisorCall, ProviderCall, TreeCopy

UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


@attrs.frozen
class Record:
    """One journalled step of one opcode."""

    seq: int
    node: str
    kind: str
    description: str
    status: StepStatus
    entry: Entry
    pgid: int | None

    @property
    def label(self) -> str:
        """``<node>: <description>`` with every UUID written ``<uuid>``: the same for the
        same step of two runs of a flow (each run's volumes have new UUIDs)."""
        return UUID.sub("<uuid>", f"{self.node}: {self.description}")

    @property
    def move(self) -> str | None:
        """The move (``migrate``, ``failover``, ``cleanup``) the step belongs to, if any."""
        return None if self.entry.move is None else self.entry.move.op

    def is_provider(self, action: str, node: str | None = None) -> bool:
        payload = self.entry.payload
        return (
            isinstance(payload, ProviderCall)
            and payload.action.value == action
            and (node is None or self.node == node)
        )

    def is_hypervisor(self, action: str, node: str | None = None) -> bool:
        payload = self.entry.payload
        return (
            isinstance(payload, HypervisorCall)
            and payload.action.value == action
            and (node is None or self.node == node)
        )

    @property
    def is_fence(self) -> bool:
        return isinstance(self.entry.payload, FenceRun)

    @property
    def is_copy(self) -> bool:
        return isinstance(self.entry.payload, TreeCopy)


def read_journal(state_dir: Path, job_id: int, op_index: int = 0) -> list[Record]:
    """The journal of opcode ``op_index`` of job ``job_id``, in sequence order."""
    uri = f"file:{state_dir / 'extjobs.db'}?mode=ro"
    with contextlib.closing(sqlite3.connect(uri, uri=True, timeout=10)) as db:
        rows = db.execute(
            "SELECT seq, node, kind, description, status, data, pgid FROM journal "
            "WHERE job_id=? AND op_index=? ORDER BY seq",
            (job_id, op_index),
        ).fetchall()
    return [
        Record(
            seq=seq,
            node=node,
            kind=kind,
            description=description,
            status=StepStatus(status),
            entry=decode_entry(kind, json.loads(data)),
            pgid=pgid,
        )
        for seq, node, kind, description, status, data, pgid in rows
    ]


def wait_record(
    state_dir: Path, job_id: int, test: Callable[[Record], bool], timeout: float = 30.0
) -> Record:
    """The first journal record of job ``job_id`` (opcode 0) for which ``test`` holds, once
    there is one; raises TimeoutError after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        found = [r for r in read_journal(state_dir, job_id) if test(r)]
        if found:
            return found[0]
        if time.monotonic() > deadline:
            raise TimeoutError(f"job {job_id} journalled no such step within {timeout}s")
        time.sleep(0.02)
