"""Several masters on one shared store: the leader's lease, the masters seen, and the
requests other masters leave for the leader. Pure data."""

from __future__ import annotations

import enum

import attrs


@attrs.frozen
class Lease:
    """The leadership: ``holder`` leads with fencing token ``epoch`` (incremented on every
    takeover) for ``remaining`` more seconds by the store's clock, when it was read."""

    holder: str
    epoch: int
    remaining: float

    @property
    def live(self) -> bool:
        return self.remaining > 0


@attrs.frozen
class MasterInfo:
    """A master as the store last heard of it: ``address`` is where its API listens."""

    name: str
    address: str
    seen_ago: float


class RequestKind(enum.StrEnum):
    """What a master that does not lead asks the leader to do with a job."""

    SUBMITTED = "submitted"  # a job it queued in the store: the leader takes it on
    CANCEL = "cancel"
    ARCHIVE = "archive"


@attrs.frozen
class Request:
    id: int
    kind: RequestKind
    job_id: int
