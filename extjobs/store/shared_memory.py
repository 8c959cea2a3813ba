"""Several masters' handles on one in-memory store, for in-process tests of leadership.

:class:`SharedMemory` is the state they share (the jobs, journal and configuration of a
:class:`~extjobs.store.memory.MemoryStore`, the lease, the masters and the requests);
each master opens its own :class:`SharedMemoryStore` handle on it, which applies that
master's fence to its writes. The lease's clock is ``time.monotonic``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from extjobs.errors import FencedError
from extjobs.model.jobs import Job, LogEntry
from extjobs.model.masters import Lease, MasterInfo, Request, RequestKind
from extjobs.store.memory import MemoryStore

#: The methods of a store that write (the fence applies to these).
WRITES = frozenset(
    {
        "write",
        "quarantine",
        "save_jobs",
        "append_log",
        "journal_start",
        "journal_finish",
        "journal_set_pgid",
        "save_config",
        "purge_archived",
    }
)


class SharedMemory:
    """What the masters share (see the module docstring)."""

    def __init__(self) -> None:
        self.data = MemoryStore()
        self.holder: str | None = None
        self.epoch = 0
        self.expires = 0.0
        self.seen: dict[str, tuple[str, float]] = {}
        self.requests: list[Request] = []
        self.next_request = 1

    def lease(self) -> Lease | None:
        if self.holder is None:
            return None
        return Lease(self.holder, self.epoch, self.expires - time.monotonic())

    def open(self) -> SharedMemoryStore:
        return SharedMemoryStore(self)


class SharedMemoryStore:
    """One master's handle on :class:`SharedMemory` (a :class:`SharedStore`)."""

    def __init__(self, shared: SharedMemory) -> None:
        self._shared = shared
        self._fence: int | None = None

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._shared.data, name)
        if name in WRITES:

            def fenced(*args: Any, **kwargs: Any) -> Any:
                self._check_fence()
                return attr(*args, **kwargs)

            return fenced
        return attr

    def _check_fence(self) -> None:
        if self._fence is not None and self._shared.epoch != self._fence:
            raise FencedError(
                f"this master led at epoch {self._fence}; the lease is at epoch "
                f"{self._shared.epoch} now, so its writes are refused",
                epoch=self._fence,
                current=self._shared.epoch,
            )

    # -- the lease ----------------------------------------------------------------------

    def acquire_lease(self, master: str, ttl: float) -> Lease | None:
        shared = self._shared
        now = time.monotonic()
        if shared.holder is not None and shared.expires > now:
            return None
        shared.holder, shared.epoch, shared.expires = master, shared.epoch + 1, now + ttl
        return shared.lease()

    def renew_lease(self, master: str, epoch: int, ttl: float) -> Lease | None:
        shared = self._shared
        now = time.monotonic()
        if shared.holder != master or shared.epoch != epoch or shared.expires <= now:
            return None
        shared.expires = now + ttl
        return shared.lease()

    def lease(self) -> Lease | None:
        return self._shared.lease()

    def set_fence(self, epoch: int | None) -> None:
        self._fence = epoch

    def heartbeat(self, master: str, address: str) -> None:
        self._shared.seen[master] = (address, time.monotonic())

    def masters(self) -> list[MasterInfo]:
        now = time.monotonic()
        seen = sorted(self._shared.seen.items(), key=lambda kv: -kv[1][1])
        return [MasterInfo(name, address, now - at) for name, (address, at) in seen]

    # -- requests to the leader -----------------------------------------------------------

    def submit_jobs(self, jobs: Sequence[Job], log: Sequence[LogEntry]) -> None:
        self._check_fence()
        self._shared.data.save_jobs(list(jobs), log=log)
        self._add(RequestKind.SUBMITTED, [j.id for j in jobs])

    def add_requests(self, kind: RequestKind, job_ids: Sequence[int]) -> None:
        self._check_fence()
        self._add(kind, job_ids)

    def _add(self, kind: RequestKind, job_ids: Sequence[int]) -> None:
        for job_id in job_ids:
            self._shared.requests.append(Request(self._shared.next_request, kind, job_id))
            self._shared.next_request += 1

    def take_requests(self) -> list[Request]:
        self._check_fence()
        taken, self._shared.requests = self._shared.requests, []
        return taken
