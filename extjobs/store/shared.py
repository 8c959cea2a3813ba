"""A store several masters share: the leader's lease, fencing, and requests to the leader.

Any number of masters may point at one shared store (PostgreSQL). Exactly one leads at a
time: it holds the **lease**, a row with the holder, an **epoch** incremented on every
takeover, and an expiry by the store's own clock (so masters' clocks do not matter).

- ``acquire_lease`` takes the lease only when it is free or expired, and increments the
  epoch; ``renew_lease`` extends it only for the same holder and epoch, before expiry.
- A handle fenced at an epoch (``set_fence``) refuses every write — with
  :class:`~extjobs.errors.FencedError` — unless the lease still carries that epoch, and
  checks it inside the write's own transaction (holding the lease row against a takeover
  until it commits): a former leader, paused or cut off, can change nothing once another
  master has taken over; in particular it cannot journal a step as started, so it cannot
  start one.
- Masters that do not lead serve the API from the store: they queue submitted jobs and
  leave a :class:`~extjobs.model.masters.Request` for the leader (``add_requests``), which
  the leader takes (``take_requests``) and acts on.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from extjobs.model.jobs import Job, LogEntry
from extjobs.model.masters import Lease, MasterInfo, Request, RequestKind
from extjobs.store.base import Store


@runtime_checkable
class SharedStore(Store, Protocol):
    """A :class:`Store` for several masters (see the module docstring)."""

    def acquire_lease(self, master: str, ttl: float) -> Lease | None:
        """Take the lease for ``ttl`` seconds if it is free or expired (a new epoch);
        ``None`` when another master holds a live lease."""
        ...

    def renew_lease(self, master: str, epoch: int, ttl: float) -> Lease | None:
        """Extend the lease ``master`` holds at ``epoch``; ``None`` when it lost it."""
        ...

    def lease(self) -> Lease | None:
        """The lease as it is now (``None``: nobody ever led)."""
        ...

    def set_fence(self, epoch: int | None) -> None:
        """From now on refuse this handle's writes unless the lease carries ``epoch``
        (``None``: no condition — a master that does not lead writes only submissions
        and requests)."""
        ...

    def heartbeat(self, master: str, address: str) -> None:
        """Record that ``master`` is alive and serves its API at ``address``."""
        ...

    def masters(self) -> list[MasterInfo]:
        """Every master heard of, most recently seen first."""
        ...

    def submit_jobs(self, jobs: Sequence[Job], log: Sequence[LogEntry]) -> None:
        """Save new ``jobs`` with their first log lines and a ``submitted`` request for
        each, in one transaction (a master that does not lead queues jobs this way)."""
        ...

    def add_requests(self, kind: RequestKind, job_ids: Sequence[int]) -> None: ...

    def take_requests(self) -> list[Request]:
        """Remove and return the pending requests, oldest first (the leader's)."""
        ...
