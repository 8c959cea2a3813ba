"""Where volumes are, according to the journal: a provider-agnostic ledger.

ExtStorage has no "where is this volume attached" action, so extjobs keeps its own
account: every provider step is journalled with its volume, node and outcome. Replaying
the journal in order gives, per volume, whether it was created and not removed, the
nodes it may be attached or open on, and where its provider lives on each node.

The replay is conservative: a step whose outcome is unknown (started, interrupted by a
crash) or that failed after possibly acting (create, attach, open) counts as done; an
undoing step (remove, detach, close) counts only when it succeeded. So the ledger may
report a volume attached that is not — never the other way round.

A node that was fenced (a successful fence command on the master, journalled as a
``local`` step with ``data["fence"]``) holds nothing any more: it was powered off.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import attrs

from extjobs.model.jobs import JournalRecord


@attrs.define
class VolumeState:
    name: str
    provider: str
    volume: dict[str, Any]
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
LEDGER_KINDS = ("provider", "local")


def build_ledger(records: Iterable[JournalRecord]) -> dict[str, VolumeState]:
    """Replay provider and fence journal records (any order; sorted by id here)."""
    ledger: dict[str, VolumeState] = {}
    for record in sorted(records, key=lambda r: r.id):
        fenced = record.data.get("fence")
        if record.kind == "local" and fenced and record.status == "done":
            for held in ledger.values():
                held.attached.discard(str(fenced))
                held.opened.pop(str(fenced), None)
            continue
        if record.kind != "provider":
            continue
        data = record.data
        volume = data.get("volume")
        action = data.get("action")
        if not isinstance(volume, dict) or not isinstance(action, str):
            continue
        name = str(volume.get("name", ""))
        state = ledger.get(name)
        if state is None:
            state = ledger[name] = VolumeState(
                name=name, provider=str(volume.get("provider", "")), volume=volume
            )
        state.volume = volume
        if data.get("instance") is not None:
            state.instance = str(data["instance"])
            state.disk = int(data.get("disk", 0))
        if data.get("provider_dir"):
            state.providers[record.node] = (
                str(data["provider_dir"]),
                tuple(data.get("optional", ())),
            )
        succeeded = record.status == "done"
        if action == "create":
            state.created = True
            state.removed = False
        elif action == "remove" and succeeded:
            state.removed = True
            state.attached.clear()
            state.opened.clear()
        elif action == "attach":
            state.attached.add(record.node)
        elif action == "detach" and succeeded:
            state.attached.discard(record.node)
            state.opened.pop(record.node, None)
        elif action == "open":
            env = data.get("env") or {}
            exclusive = env.get("VOL_OPEN_EXCLUSIVE", "True") == "True"
            state.opened[record.node] = "exclusive" if exclusive else "shared"
        elif action == "close" and succeeded:
            state.opened.pop(record.node, None)
    return ledger
