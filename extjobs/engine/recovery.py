"""Recovery after a restart: what a job found in the store becomes, and what a crashed
daemon left running on the nodes.

* At load (:func:`requeue_at_load`), an opcode found ``waiting`` goes back to
  ``queued`` (its locks were in the dead daemon's memory); one found ``running`` or
  ``canceling`` marks its job for recovery: the processor hands it to its LU's
  ``recover`` under the same locks. No job stays ``running``.
* Before an opcode is recovered, :func:`kill_leftovers` kills every remote command its
  journal shows as started and never finished — only where the process group's leader
  still runs the step's program (the node runner checks) — and marks those records
  ``interrupted``. A program run on the master (a fence command) is found and killed
  here the same way (:func:`~extjobs.engine.local.kill_local_leftover`).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Sequence

import anyio
import attrs

from extjobs.engine.local import kill_local_leftover
from extjobs.engine.writer import Writer
from extjobs.errors import ExtJobsError
from extjobs.model.cluster import ClusterConfig
from extjobs.model.jobs import Job, LogKind
from extjobs.model.journal import JournalRecord, StepStatus
from extjobs.model.states import OpStatus, advance_op
from extjobs.model.steps import FenceRun, LocalRun
from extjobs.nodes.runner import NodeRunner
from extjobs.store.base import JournalEnd, WriteBatch

INTERRUPTED = {"error": {"kind": "interrupted", "message": "the daemon stopped during this step"}}


def requeue_at_load(job: Job) -> tuple[Job, bool]:
    """``job`` as the new daemon takes it over, and whether it needs recovery."""
    if job.status.finalized:
        return job, False
    recovering = False
    ops = []
    for op in job.ops:
        if op.status is OpStatus.WAITING:
            op = attrs.evolve(op, status=advance_op(op.status, OpStatus.QUEUED))
        elif op.status in (OpStatus.RUNNING, OpStatus.CANCELING):
            recovering = True
        ops.append(op)
    return attrs.evolve(job, ops=tuple(ops), waiting_for=None), recovering


async def kill_leftovers(
    journal: Sequence[JournalRecord],
    *,
    config: ClusterConfig,
    runner: NodeRunner,
    writer: Writer,
    log: Callable[[str, LogKind], object],
) -> None:
    """See the module docstring. A node that cannot be asked is logged as a warning."""
    for record in journal:
        if record.status is not StepStatus.STARTED:
            continue
        node = config.nodes.get(record.node)
        argv = record.command.argv if record.command is not None else ()
        if isinstance(record.payload, FenceRun | LocalRun) and record.command is not None:
            await _kill_local(record, log)
        elif record.pgid and node is not None and not node.offline and argv:
            try:
                killed = await runner.kill_leftover(node.endpoint, record.pgid, argv[0])
            except ExtJobsError as exc:
                log(
                    f"{record.node}: could not check for a leftover '{record.description}': "
                    f"{exc.message}",
                    LogKind.WARNING,
                )
            else:
                if killed:
                    log(
                        f"{record.node}: killed '{record.description}' left running by the "
                        "crashed daemon",
                        LogKind.RECOVERY,
                    )
        end = JournalEnd(record.id, StepStatus.INTERRUPTED, INTERRUPTED, time.time())
        writer.write(WriteBatch(ends=[end]))


async def _kill_local(record: JournalRecord, log: Callable[[str, LogKind], object]) -> None:
    """Kill what a program run on the master by the crashed daemon left running."""
    assert record.command is not None
    try:
        killed = await anyio.to_thread.run_sync(
            functools.partial(
                kill_local_leftover,
                record.command.argv,
                record.command.env_dict,
                started=record.started,
            )
        )
    except OSError as exc:
        log(f"master: could not look for a leftover '{record.description}': {exc}", LogKind.WARNING)
        return
    if killed:
        log(
            f"master: killed '{record.description}' left running by the crashed daemon",
            LogKind.RECOVERY,
        )
