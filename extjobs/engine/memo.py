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


class Memo:
    def __init__(self) -> None:
        self._values: dict[str, tuple[float, float, Any]] = {}
        self._inflight: dict[str, anyio.Event] = {}
        self.hits = 0
        self.misses = 0

    async def get(
        self, key: str, ttl: float, compute: Callable[[], Awaitable[tuple[T, bool]]]
    ) -> tuple[T, float | None]:
        """The shared value and its age, or a fresh one (``None`` age); single-flight."""
        while True:
            now = time.monotonic()
            found = self._values.get(key)
            if found is not None and found[0] > now:
                self.hits += 1
                return found[2], now - found[1]
            event = self._inflight.get(key)
            if event is None:
                break
            await event.wait()
        self.misses += 1
        event = self._inflight[key] = anyio.Event()
        try:
            value, keep = await compute()
            if keep and ttl > 0:
                now = time.monotonic()
                self._values[key] = (now + ttl, now, value)
            return value, None
        finally:
            del self._inflight[key]
            event.set()

    def statistics(self) -> dict[str, int]:
        return {"entries": len(self._values), "hits": self.hits, "misses": self.misses}
