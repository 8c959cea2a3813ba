"""The one exception tree of extjobs.

Every error raised on purpose derives from :class:`ExtJobsError` and carries keyword
fields, so that the job log, the API and the CLI can show *what* failed *where* without
parsing messages::

    ExtJobsError
    ├── ConfigError                  bad configuration file or option
    ├── InputError                   bad request / opcode field (API answers 4xx)
    │   ├── UnknownOpcodeError
    │   └── QueueFullError
    ├── NotFoundError                no such job / node / instance / provider
    ├── StateError                   illegal status transition, or a refused action
    │   └── IllegalTransitionError
    ├── PrerequisiteError            an LU's checks failed before anything ran
    ├── NodeError                    anything about talking to a node
    │   ├── NodeUnreachableError     connect failed, timed out, or connection lost
    │   ├── HostKeyError             unknown or changed host key
    │   └── CommandTimeoutError      a remote command ran over its timeout (and was killed)
    ├── ProviderError                an ExtStorage script failed or misbehaved
    ├── HypervisorError
    └── StoreError
        └── FencedError          a write by a master that is no longer the leader
"""

from __future__ import annotations

from typing import Any, Self


class ExtJobsError(Exception):
    """Root of all extjobs errors; ``fields`` holds the structured details."""

    kind = "error"

    def __init__(self, message: str, **fields: Any) -> None:
        super().__init__(message)
        self.message = message
        self.fields = fields

    def restated(self, message: str | None = None) -> Self:
        """A new error of this type with the same fields, ``message`` (default: the same),
        and this error as its ``__cause__``, so the original and its traceback stay in the
        chain. For adding what the caller knows to the message, and for handing one
        failure to several waiters, each of which must raise an object of its own."""
        twin = type(self)(self.message if message is None else message, **self.fields)
        twin.__cause__ = self
        return twin

    def to_dict(self) -> dict[str, Any]:
        """The structured form stored with a job and returned by the API."""
        return {"kind": self.kind, "message": self.message, **_plain(self.fields)}


def _plain(fields: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in fields.items():
        if isinstance(value, str | int | float | bool | type(None) | list | dict):
            out[key] = value
        else:
            out[key] = str(value)
    return out


class ConfigError(ExtJobsError):
    kind = "config"


class InputError(ExtJobsError):
    """A request or opcode field is invalid; ``field`` names it when known."""

    kind = "input"


class UnknownOpcodeError(InputError):
    kind = "unknown_opcode"


class QueueFullError(InputError):
    kind = "queue_full"


class NotFoundError(ExtJobsError):
    kind = "not_found"


class StateError(ExtJobsError):
    kind = "state"


class IllegalTransitionError(StateError):
    kind = "illegal_transition"


class PrerequisiteError(ExtJobsError):
    kind = "prerequisite"


class NodeError(ExtJobsError):
    kind = "node"


class NodeUnreachableError(NodeError):
    kind = "node_unreachable"


class HostKeyError(NodeError):
    kind = "host_key"


class CommandTimeoutError(NodeError):
    kind = "timeout"


class ProviderError(ExtJobsError):
    kind = "provider"


class HypervisorError(ExtJobsError):
    kind = "hypervisor"


class StoreError(ExtJobsError):
    kind = "store"


class UnreadableRowError(StoreError):
    """A row of the store that cannot be decoded (damaged, or edited by hand): named by
    table and key, with the way to start anyway (``extjobs daemon --quarantine``)."""


class FencedError(StoreError):
    """A write by a master that is no longer the leader (its lease epoch is not the
    current one), refused: a former leader cannot change anything."""

    kind = "fenced"
