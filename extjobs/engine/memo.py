"""Results shared between jobs for a short time, computed once even when asked at once.

Used for what is costly to ask every node for on every job and changes rarely — the
validity of providers in a node group. Only results the caller marks as keepable are
shared (a provider found broken is asked about again next time). In memory only.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import anyio

T = TypeVar("T")


class _Flight:
    """One computation in progress, and its value once it has one."""

    def __init__(self) -> None:
        self.done = anyio.Event()
        self.value: Any = None
        self.has_value = False


class Memo:
    def __init__(self) -> None:
        self._values: dict[str, tuple[float, float, Any]] = {}
        self._inflight: dict[str, _Flight] = {}
        self.hits = 0
        self.misses = 0

    async def get(
        self, key: str, ttl: float, compute: Callable[[], Awaitable[tuple[T, bool]]]
    ) -> tuple[T, float | None]:
        """The shared value and its age, or a fresh one (``None`` age, also for callers
        that waited for the computation); single-flight.

        Callers that arrive while the value is being computed wait for it and get it,
        kept or not: a provider found broken fails every add that asked at once with
        that one answer, instead of each asking every node again in turn (at a thousand
        nodes, one diagnose after the other). Later callers ask afresh. When the
        computation raises or is cancelled, a waiter computes it itself."""
        while True:
            now = time.monotonic()
            found = self._values.get(key)
            if found is not None and found[0] > now:
                self.hits += 1
                return found[2], now - found[1]
            flight = self._inflight.get(key)
            if flight is None:
                break
            await flight.done.wait()
            if flight.has_value:
                self.hits += 1
                return flight.value, None
        self.misses += 1
        flight = self._inflight[key] = _Flight()
        try:
            value, keep = await compute()
            flight.value, flight.has_value = value, True
            if keep and ttl > 0:
                now = time.monotonic()
                self._values[key] = (now + ttl, now, value)
            return value, None
        finally:
            del self._inflight[key]
            flight.done.set()

    def statistics(self) -> dict[str, int]:
        return {"entries": len(self._values), "hits": self.hits, "misses": self.misses}
