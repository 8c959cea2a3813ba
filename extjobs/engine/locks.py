"""The lock manager: ordered levels, shared/exclusive modes, FIFO within a priority.

Theory of operation:

* A job asks for all its locks at once (:meth:`LockManager.acquire`). They are taken
  one at a time in the single global order of :func:`extjobs.model.locks.normalise`
  (cluster → group → instance → node, then by name). Every holder therefore acquires in
  the same order, so no cycle of waiters — no deadlock — can form.
* Each lock has holders (owner → mode) and a wait queue ordered by (priority, arrival).
  A request is granted at once only if it is compatible with the holders *and* nobody
  waits ahead of it; otherwise it queues. On every release the queue is granted from
  the head while compatible, and granting stops at the first incompatible waiter, so an
  exclusive waiter is never starved by a stream of shared requests.
* State changes happen in plain synchronous methods; the only await is on the waiter's
  event. A cancelled waiter is removed (or, if it was granted in the meantime, released).
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import attrs

from extjobs.model.locks import LockKey, LockRequest, Mode, normalise


@attrs.define(eq=False)
class _Waiter:
    owner: int
    mode: Mode
    priority: int
    seq: int
    event: anyio.Event = attrs.field(factory=anyio.Event)
    granted: bool = False


@attrs.define
class _Lock:
    holders: dict[int, Mode] = attrs.field(factory=dict)
    waiters: list[_Waiter] = attrs.field(factory=list)

    def compatible(self, mode: Mode) -> bool:
        if not self.holders:
            return True
        return mode is Mode.SHARED and all(m is Mode.SHARED for m in self.holders.values())


class LockManager:
    """In-process lock manager (kept behind this small interface for a shared-store one)."""

    def __init__(self) -> None:
        self._locks: dict[LockKey, _Lock] = {}
        self._seq = itertools.count()
        self._acquisitions = 0
        self._waits = 0

    # -- synchronous state changes ------------------------------------------------

    def _try_grant_now(self, key: LockKey, owner: int, mode: Mode) -> bool:
        lock = self._locks.setdefault(key, _Lock())
        if owner in lock.holders and (lock.holders[owner] is Mode.EXCLUSIVE or mode is Mode.SHARED):
            return True
        if not lock.waiters and lock.compatible(mode):
            lock.holders[owner] = mode
            return True
        return False

    def _enqueue(self, key: LockKey, owner: int, mode: Mode, priority: int) -> _Waiter:
        waiter = _Waiter(owner, mode, priority, next(self._seq))
        lock = self._locks[key]
        lock.waiters.append(waiter)
        lock.waiters.sort(key=lambda w: (w.priority, w.seq))
        return waiter

    def _grant_waiters(self, key: LockKey) -> None:
        lock = self._locks.get(key)
        if lock is None:
            return
        while lock.waiters and lock.compatible(lock.waiters[0].mode):
            waiter = lock.waiters.pop(0)
            lock.holders[waiter.owner] = waiter.mode
            waiter.granted = True
            waiter.event.set()
        if not lock.holders and not lock.waiters:
            del self._locks[key]

    def _release(self, key: LockKey, owner: int) -> None:
        lock = self._locks.get(key)
        if lock is None:
            return
        lock.holders.pop(owner, None)
        self._grant_waiters(key)

    def _abandon(self, key: LockKey, waiter: _Waiter) -> None:
        lock = self._locks.get(key)
        if lock is None:
            return
        if waiter.granted:
            self._release(key, waiter.owner)
        elif waiter in lock.waiters:
            lock.waiters.remove(waiter)
            self._grant_waiters(key)

    def release_all(self, owner: int, keys: list[LockKey]) -> None:
        for key in reversed(keys):
            self._release(key, owner)

    # -- async API ------------------------------------------------------------------

    @asynccontextmanager
    async def acquire(
        self,
        owner: int,
        requests: list[LockRequest],
        *,
        priority: int = 0,
        on_wait: Callable[[LockKey, list[int]], None] | None = None,
    ) -> AsyncIterator[list[LockRequest]]:
        """Hold every requested lock inside the block; released on exit, even on cancel.

        ``on_wait(key, holders)`` is called each time the caller has to queue.
        Cancellation while waiting leaves no trace in the manager.
        """
        ordered = normalise(requests)
        held: list[LockKey] = []
        try:
            for req in ordered:
                if self._try_grant_now(req.key, owner, req.mode):
                    held.append(req.key)
                    continue
                waiter = self._enqueue(req.key, owner, req.mode, priority)
                self._waits += 1
                if on_wait is not None:
                    on_wait(req.key, sorted(self._locks[req.key].holders))
                try:
                    await waiter.event.wait()
                except BaseException:
                    self._abandon(req.key, waiter)
                    raise
                held.append(req.key)
            self._acquisitions += 1
            yield ordered
        finally:
            self.release_all(owner, held)

    def holders(self, key: LockKey) -> dict[int, Mode]:
        lock = self._locks.get(key)
        return dict(lock.holders) if lock else {}

    def statistics(self) -> dict[str, Any]:
        return {
            "locks": len(self._locks),
            "held": sum(len(lock.holders) for lock in self._locks.values()),
            "waiting": sum(len(lock.waiters) for lock in self._locks.values()),
            "acquisitions": self._acquisitions,
            "waits": self._waits,
        }
