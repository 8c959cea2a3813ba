"""Purging archived jobs without making ``verify`` forget a volume.

``purge_after`` seconds after a job ended (and once it is archived), the job, its log
and its journal records are deleted (:meth:`Store.purge_archived`). The journal is also
where :mod:`extjobs.lus.ledger` learns which volumes exist and where they are attached:
deleting an old instance-add job's records would make a volume that still exists look
as if it never was, and deleting a remove whose create is kept would report a leak that
is not one. So a purge that deletes ledger records first journals a
:class:`~extjobs.model.steps.LedgerCheckpoint` — the ledger as of record ``upto`` — and
the replay starts from it.

The checkpoint must cover every record the purge deletes, and no record whose outcome
is still open: ``upto`` stops before the oldest step still ``started`` (its result may
still change), and a job is only purged when all its ledger records are at or below
``upto`` (the cut-off ``before`` is lowered until that holds).

The checkpoint record is journalled under the newest finished job that survives this
purge (op index -1, which no opcode reads), not a job of its own: when that job is
purged in turn, a newer checkpoint has been written first, so old checkpoints go with
their host jobs and at most one per purge round within ``purge_after`` is kept.

Everything here is synchronous on the event loop, so no step starts between reading
the journal and writing the checkpoint.
"""

from __future__ import annotations

import logging

from extjobs.lus.ledger import LEDGER_KINDS, build_ledger, checkpoint
from extjobs.model.journal import Entry, StepStatus
from extjobs.store.base import Store

log = logging.getLogger("extjobs.engine.purge")

#: The op index of checkpoint records: not an opcode, never read by recovery.
CHECKPOINT_OP = -1


def purge_old(store: Store, *, now: float, purge_after: float) -> int:
    """Delete archived jobs that ended more than ``purge_after`` seconds before ``now``
    (0: never), keeping the volume ledger whole; return how many were deleted."""
    if purge_after <= 0:
        return 0
    before = now - purge_after
    jobs = [j for j in store.load_jobs(include_archived=True) if j.ended is not None]
    if not any(j.archived and j.ended is not None and j.ended < before for j in jobs):
        return 0
    # The newest finished job hosts the checkpoint, so it must survive this purge.
    host = max(jobs, key=lambda j: (j.ended, j.id))
    assert host.ended is not None
    before = min(before, host.ended)
    records = store.load_journal_kinds(LEDGER_KINDS)
    open_steps = [r.id for r in records if r.status is StepStatus.STARTED]
    upto = min(open_steps) - 1 if open_steps else max((r.id for r in records), default=0)
    last_record: dict[int, int] = {}
    for record in records:
        last_record[record.job_id] = max(record.id, last_record.get(record.job_id, 0))
    while True:
        doomed = [j for j in jobs if j.archived and j.ended is not None and j.ended < before]
        late = [j.ended for j in doomed if last_record.get(j.id, 0) > upto]
        if not late:
            break
        before = min(e for e in late if e is not None)
    if not doomed:
        return 0
    if any(j.id in last_record for j in doomed):
        ledger = build_ledger(records, upto=upto)
        point = checkpoint(ledger, upto)
        record_id = store.journal_start(
            host.id, CHECKPOINT_OP, upto, "", "ledger checkpoint before a purge", Entry(point)
        )
        store.journal_finish(
            record_id, StepStatus.DONE, {"upto": upto, "volumes": len(point.volumes)}
        )
    purged = store.purge_archived(before)
    log.info("purged %d archived jobs that ended before %.0f", purged, before)
    return purged
