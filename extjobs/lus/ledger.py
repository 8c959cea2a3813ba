"""Where volumes are, according to the journal: a provider-agnostic ledger.

ExtStorage has no "where is this volume attached" action, so extjobs keeps its own
account: every provider step is journalled with its volume, node and outcome. Replaying
the journal in order gives, per volume, whether it was created and not removed, the
nodes it may be attached or open on, and where its provider lives on each node.

The replay is conservative: a step whose outcome is unknown (started, interrupted by a
crash) or that failed after possibly acting (create, attach, open) counts as done; an
undoing step (remove, detach, close) counts only when it succeeded. So the ledger may
report a volume attached that is not — never the other way round.

A node that was fenced (a successful fence command on the master, journalled with a
:class:`~extjobs.model.steps.FenceRun` payload) holds nothing any more: it was powered off.

Purging old jobs deletes their journal records, and with them facts the ledger still
needs (the ``create`` of a volume that still exists, a stray ``attach`` never undone).
So before a purge the engine journals a :class:`~extjobs.model.steps.LedgerCheckpoint`:
the replay up to a record id, volume by volume. A replay starts from the newest
checkpoint and applies only the records after it, which gives exactly the state a
replay of the whole, unpurged journal would (:mod:`extjobs.engine.purge`).
"""

from __future__ import annotations

from collections.abc import Iterable

import attrs

from extjobs.model.journal import JournalRecord, StepStatus
from extjobs.model.steps import FenceRun, LedgerCheckpoint, ProviderCall, StepKind, VolumeMark
from extjobs.model.volume import Action, Volume


@attrs.define
class VolumeState:
    name: str
    provider: str
    volume: Volume
    instance: str | None = None
    disk: int | None = None
    created: bool = False
    removed: bool = False
    attached: set[str] = attrs.field(factory=set)
    opened: dict[str, str] = attrs.field(factory=dict)
    #: Per node: the provider directory and optional scripts seen there.
    providers: dict[str, tuple[str, tuple[str, ...]]] = attrs.field(factory=dict)

    @property
    def exists(self) -> bool:
        return self.created and not self.removed


#: The journal record kinds the ledger reads.
LEDGER_KINDS = (StepKind.PROVIDER, StepKind.FENCE, StepKind.LEDGER)


def build_ledger(
    records: Iterable[JournalRecord], *, upto: int | None = None
) -> dict[str, VolumeState]:
    """Replay provider and fence journal records (any order; sorted by id here).

    The replay starts from the newest :class:`LedgerCheckpoint` among ``records`` (the
    state as of its ``upto``: the records it was built from may have been purged) and
    applies the records after it; with ``upto``, only those up to that record id.
    """
    ordered = sorted(records, key=lambda r: r.id)
    ledger: dict[str, VolumeState] = {}
    start = 0
    checkpoints = [r.payload for r in ordered if isinstance(r.payload, LedgerCheckpoint)]
    if checkpoints:
        ledger = {mark.name: _from_mark(mark) for mark in checkpoints[-1].volumes}
        start = checkpoints[-1].upto
    for record in ordered:
        if record.id <= start or (upto is not None and record.id > upto):
            continue
        _apply(ledger, record)
    return ledger


def _apply(ledger: dict[str, VolumeState], record: JournalRecord) -> None:
    payload = record.payload
    if isinstance(payload, FenceRun):
        if record.status is StepStatus.DONE:
            for held in ledger.values():
                held.attached.discard(payload.node)
                held.opened.pop(payload.node, None)
        return
    if not isinstance(payload, ProviderCall):
        return
    volume = payload.volume
    state = ledger.get(volume.name)
    if state is None:
        state = ledger[volume.name] = VolumeState(
            name=volume.name, provider=volume.provider, volume=volume
        )
    state.volume = volume
    state.instance = payload.instance
    state.disk = payload.disk
    state.providers[record.node] = (payload.provider_dir, payload.optional)
    succeeded = record.status is StepStatus.DONE
    action = payload.action
    if action is Action.CREATE:
        state.created = True
        state.removed = False
    elif action is Action.REMOVE and succeeded:
        state.removed = True
        state.attached.clear()
        state.opened.clear()
    elif action is Action.ATTACH:
        state.attached.add(record.node)
    elif action is Action.DETACH and succeeded:
        state.attached.discard(record.node)
        state.opened.pop(record.node, None)
    elif action is Action.OPEN:
        exclusive = volume.open_exclusive is not False
        state.opened[record.node] = "exclusive" if exclusive else "shared"
    elif action is Action.CLOSE and succeeded:
        state.opened.pop(record.node, None)


def checkpoint(ledger: dict[str, VolumeState], upto: int) -> LedgerCheckpoint:
    """The checkpoint of ``ledger`` (built up to record ``upto``). A volume that was
    removed and is held nowhere is left out: nothing about it can be found any more."""
    return LedgerCheckpoint(
        upto=upto,
        volumes=tuple(
            VolumeMark(
                name=state.name,
                provider=state.provider,
                volume=state.volume,
                instance=state.instance,
                disk=state.disk,
                created=state.created,
                removed=state.removed,
                attached=tuple(sorted(state.attached)),
                opened=tuple(sorted(state.opened.items())),
                providers=tuple(
                    (node, where, optional)
                    for node, (where, optional) in sorted(state.providers.items())
                ),
            )
            for state in sorted(ledger.values(), key=lambda v: v.name)
            if state.exists or state.attached or state.opened
        ),
    )


def _from_mark(mark: VolumeMark) -> VolumeState:
    return VolumeState(
        name=mark.name,
        provider=mark.provider,
        volume=mark.volume,
        instance=mark.instance,
        disk=mark.disk,
        created=mark.created,
        removed=mark.removed,
        attached=set(mark.attached),
        opened=dict(mark.opened),
        providers={node: (where, optional) for node, where, optional in mark.providers},
    )
