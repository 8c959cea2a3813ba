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
"""

from __future__ import annotations

from collections.abc import Iterable

import attrs

from extjobs.model.journal import JournalRecord, StepStatus
from extjobs.model.steps import FenceRun, ProviderCall, StepKind
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
LEDGER_KINDS = (StepKind.PROVIDER, StepKind.FENCE)


def build_ledger(records: Iterable[JournalRecord]) -> dict[str, VolumeState]:
    """Replay provider and fence journal records (any order; sorted by id here)."""
    ledger: dict[str, VolumeState] = {}
    for record in sorted(records, key=lambda r: r.id):
        payload = record.payload
        if isinstance(payload, FenceRun):
            if record.status is StepStatus.DONE:
                for held in ledger.values():
                    held.attached.discard(payload.node)
                    held.opened.pop(payload.node, None)
            continue
        if not isinstance(payload, ProviderCall):
            continue
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
    return ledger
