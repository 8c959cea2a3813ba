"""An opcode's journal as recovery reads it: typed questions, typed answers.

:class:`Journal` wraps the records of one opcode (as journalled by the engine, oldest
first) and answers what recovery after a crash asks: which provider actions were done
on which node, the new size of the last grow, which move the opcode was making, whether
a node was fenced, and the inverses of what was done (:meth:`Journal.undo_log`).

Records written by release 0.1 carry no inverse; it is rebuilt here from their payload,
exactly as the step builders build it today.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from extjobs.extstorage.diagnose import ProviderStatus
from extjobs.lus.instance_hv import hypervisor_stop_step
from extjobs.lus.instance_storage import provider_step
from extjobs.lus.undo import UndoLog
from extjobs.model.config import Config
from extjobs.model.journal import JournalRecord, StepStatus
from extjobs.model.steps import (
    FenceRun,
    HypervisorAction,
    HypervisorCall,
    MoveTag,
    ProviderCall,
    Step,
)
from extjobs.model.volume import Action


class Journal:
    """The journal of one opcode (see the module docstring)."""

    def __init__(self, records: Sequence[JournalRecord]) -> None:
        self.records = sorted(records, key=lambda r: r.seq)

    def __iter__(self) -> Iterator[JournalRecord]:
        return iter(self.records)

    def __len__(self) -> int:
        return len(self.records)

    def provider_calls(
        self, action: Action | None = None, *, node: str | None = None, done: bool = False
    ) -> list[tuple[JournalRecord, ProviderCall]]:
        """Provider steps (of ``action``, on ``node``, only successful ones if ``done``)."""
        return [
            (r, r.payload)
            for r in self.records
            if isinstance(r.payload, ProviderCall)
            and (action is None or r.payload.action is action)
            and (node is None or r.node == node)
            and (not done or r.status is StepStatus.DONE)
        ]

    def done(self, node: str, action: Action, *, disk: int | None = None) -> bool:
        """Whether ``action`` succeeded on ``node`` (for disk ``disk`` when given)."""
        return any(
            disk is None or call.disk == disk
            for _, call in self.provider_calls(action, node=node, done=True)
        )

    def created_volumes(self) -> set[str]:
        """The uuids of the volumes a ``create`` was started for (whatever its outcome)."""
        return {call.volume.uuid for _, call in self.provider_calls(Action.CREATE)}

    def last_grow_size(self) -> int | None:
        """The new size (MiB) of the last ``grow`` started, if any."""
        grown = [call.volume.new_size for _, call in self.provider_calls(Action.GROW)]
        return grown[-1] if grown else None

    def move(self, *ops: str) -> MoveTag | None:
        """The move tag of the first tagged record of one of ``ops``."""
        for record in self.records:
            if record.move is not None and record.move.op in ops:
                return record.move
        return None

    def fenced(self, node: str) -> bool:
        """Whether ``node``'s fence command succeeded."""
        return any(
            isinstance(r.payload, FenceRun)
            and r.payload.node == node
            and r.status is StepStatus.DONE
            for r in self.records
        )

    def moved_on(self, node: str) -> bool:
        """Whether a step of a move touched ``node``'s disks or guest."""
        return any(
            r.node == node
            and r.move is not None
            and isinstance(r.payload, ProviderCall | HypervisorCall)
            for r in self.records
        )

    def undo_log(self, options: Config) -> UndoLog:
        """The inverses of every step the journal shows as started, done or failed."""
        inverses = []
        for record in self.records:
            inverse = record.inverse or legacy_inverse(record, options)
            if inverse is not None:
                inverses.append(inverse)
        return UndoLog(inverses)


def legacy_inverse(record: JournalRecord, options: Config) -> Step | None:
    """The inverse of a record written without one (release 0.1), built from its payload
    as today's step builders build it; ``None`` for a step without a lasting effect."""
    payload = record.payload
    if isinstance(payload, HypervisorCall):
        if payload.action is not HypervisorAction.START:
            return None
        return hypervisor_stop_step(
            record.node,
            payload.instance,
            payload.hypervisor,
            payload.key,
            payload.run_dir,
            grace=10.0,
        )
    if not isinstance(payload, ProviderCall):
        return None
    status = ProviderStatus(
        name=payload.provider,
        valid=True,
        path=payload.provider_dir,
        reason=None,
        optional=payload.optional,
    )
    step = provider_step(
        record.node,
        status,
        payload.action,
        payload.volume,
        instance=payload.instance,
        disk=payload.disk,
        options=options,
    )
    return step.inverse
