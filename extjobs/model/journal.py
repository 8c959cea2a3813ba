"""The step journal as stored: typed records, their document format and its upgrade.

Each journalled step is one record: who (job, opcode, sequence number, node), what
(:class:`~extjobs.model.steps.StepKind` and its payload, the command, the move it
belongs to, its inverse) and how it went (:class:`StepStatus`, the result, the remote
process group while it ran).

Stored document (the ``data`` of a journal row), format 2::

    {"v": 2, "payload": {...}, "command": {...} | null, "move": {...} | null,
     "endpoint": {...} | null, "inverse": <step> | null}

Format 1 (release 0.1) kept a flat dictionary of whatever each LU put there, plus the
command's ``argv``/``env``/``cwd``/``timeout``; :func:`upgrade_v1` turns such a row into
the same typed record, so a store written by 0.1 recovers with this release. Format 1
rows have no inverse: recovery rebuilds it from the payload
(:class:`extjobs.lus.journal.Journal`).
"""

from __future__ import annotations

import enum
from typing import Any

import attrs

from extjobs.errors import StoreError
from extjobs.model import codec
from extjobs.model.remote import Endpoint, RemoteCommand
from extjobs.model.steps import (
    PAYLOAD_CLASS,
    FenceRun,
    HypervisorAction,
    HypervisorCall,
    LocalRun,
    MoveTag,
    Payload,
    PlainCommand,
    ProviderCall,
    Step,
    StepKind,
    StreamOpen,
    TreeCopy,
    kind_of,
)
from extjobs.model.volume import Action, Volume

FORMAT = 2


class StepStatus(enum.StrEnum):
    STARTED = "started"  # journalled before it ran; its outcome is unknown after a crash
    DONE = "done"
    FAILED = "failed"
    INTERRUPTED = "interrupted"  # the daemon stopped while it ran (set by recovery)


@attrs.frozen
class JournalRecord:
    """One step of an opcode as written before and after it runs (crash recovery)."""

    id: int
    job_id: int
    op_index: int
    seq: int
    node: str
    description: str
    status: StepStatus
    payload: Payload
    started: float
    command: RemoteCommand | None = None
    move: MoveTag | None = None
    inverse: Step | None = None
    ended: float | None = None
    result: dict[str, Any] | None = None
    #: The remote process group while the step runs (killed if the daemon crashed).
    pgid: int | None = None

    @property
    def kind(self) -> StepKind:
        return kind_of(self.payload)


@attrs.frozen
class Entry:
    """What is journalled about a step before it runs (see :func:`encode_entry`)."""

    payload: Payload
    command: RemoteCommand | None = None
    move: MoveTag | None = None
    endpoint: Endpoint | None = None
    inverse: Step | None = None

    @property
    def kind(self) -> StepKind:
        return kind_of(self.payload)

    @classmethod
    def of(cls, step: Step) -> Entry:
        return cls(step.payload, step.command, step.move, step.endpoint, step.inverse)


# -- documents ---------------------------------------------------------------------------


def _optional(value: Any) -> Any:
    return None if value is None else codec.unstructure(value)


def encode_step(step: Step) -> dict[str, Any]:
    return {
        "node": step.node,
        "description": step.description,
        "kind": step.kind.value,
        "payload": codec.unstructure(step.payload),
        "command": codec.unstructure(step.command),
        "check": step.check,
        "endpoint": _optional(step.endpoint),
        "inverse": None if step.inverse is None else encode_step(step.inverse),
        "move": _optional(step.move),
    }


def decode_step(doc: dict[str, Any]) -> Step:
    return Step(
        node=doc["node"],
        description=doc["description"],
        command=codec.CONVERTER.structure(doc["command"], RemoteCommand),
        payload=decode_payload(StepKind(doc["kind"]), doc["payload"]),
        check=bool(doc["check"]),
        endpoint=_structure_optional(doc["endpoint"], Endpoint),
        inverse=None if doc["inverse"] is None else decode_step(doc["inverse"]),
        move=_structure_optional(doc["move"], MoveTag),
    )


def _structure_optional(value: Any, cls: type[Any]) -> Any:
    return None if value is None else codec.CONVERTER.structure(value, cls)


def decode_payload(kind: StepKind, doc: dict[str, Any]) -> Payload:
    payload: Payload = codec.CONVERTER.structure(doc, PAYLOAD_CLASS[kind])
    return payload


def encode_entry(entry: Entry) -> dict[str, Any]:
    """The stored document of a journal entry (format 2)."""
    return {
        "v": FORMAT,
        "payload": codec.unstructure(entry.payload),
        "command": _optional(entry.command),
        "move": _optional(entry.move),
        "endpoint": _optional(entry.endpoint),
        "inverse": None if entry.inverse is None else encode_step(entry.inverse),
    }


def decode_entry(kind: str, doc: dict[str, Any]) -> Entry:
    """The entry of a stored journal document of either format.

    Raises :class:`StoreError` naming the problem for a document this release cannot read.
    """
    try:
        version = doc.get("v", 1) if isinstance(doc, dict) else None
        if version == 1:
            return upgrade_v1(kind, doc)
        if version != FORMAT:
            raise StoreError(f"journal document format {version!r} is not known to this release")
        return Entry(
            payload=decode_payload(StepKind(kind), doc["payload"]),
            command=_structure_optional(doc["command"], RemoteCommand),
            move=_structure_optional(doc["move"], MoveTag),
            endpoint=_structure_optional(doc["endpoint"], Endpoint),
            inverse=None if doc["inverse"] is None else decode_step(doc["inverse"]),
        )
    except StoreError:
        raise
    except Exception as exc:
        raise StoreError(f"unreadable journal document of kind {kind!r}: {exc!r}") from exc


# -- format 1 ----------------------------------------------------------------------------


def upgrade_v1(kind: str, data: dict[str, Any]) -> Entry:
    """The typed entry of a format-1 document (a flat dictionary, see the module doc)."""
    command = None
    if "argv" in data:
        command = RemoteCommand(
            argv=tuple(data["argv"]),
            env=data.get("env") or {},
            cwd=data.get("cwd"),
            timeout=float(data.get("timeout") or 60.0),
        )
    move = data.get("move")
    tag = None if not isinstance(move, dict) else MoveTag(**{k: str(move[k]) for k in move})
    return Entry(payload=_payload_v1(kind, data), command=command, move=tag)


def _payload_v1(kind: str, data: dict[str, Any]) -> Payload:
    if kind == "provider":
        return ProviderCall(
            instance=str(data["instance"]),
            disk=int(data["disk"]),
            action=Action(data["action"]),
            provider_dir=str(data["provider_dir"]),
            volume=codec.CONVERTER.structure(data["volume"], Volume),
            optional=tuple(data.get("optional", ())),
        )
    if kind == "hypervisor":
        return HypervisorCall(
            instance=str(data["instance"]),
            action=HypervisorAction(data["action"]),
            hypervisor=str(data["hypervisor"]),
            key=str(data["key"]),
            run_dir=str(data["run_dir"]),
        )
    if kind == "local":
        fenced = data.get("fence")
        return FenceRun(str(fenced)) if fenced else LocalRun()
    if kind == "sftp":
        return TreeCopy(str(data["source"]), str(data["destination"]))
    if kind == "stream":
        return StreamOpen(str(data["path"]), float(data["timeout"]))
    if kind == "command":
        return PlainCommand()
    raise StoreError(f"journal record kind {kind!r} is not known to this release")
