"""Results shared between jobs for a short time, computed once even when asked at once.

Used for what is costly to ask every node for on every job and changes rarely — the
validity of providers in a node group. Only results the caller marks as keepable are
shared (a provider found broken is asked about again next time). In memory only.

A kept value is renewed before it expires: the first caller past its renewal time
computes a fresh one, and callers meanwhile take the kept value instead of waiting. At
a thousand nodes one diagnose of a group takes seconds; without the renewal every add
running when the value expired waited for it, every ``ttl`` seconds. The renewal time
is as late as leaves the renewal twice the time the last computation took (and at least
the last tenth of the lifetime), but never before half of it: at most twice as many
computations as ``ttl`` asks for, and, where a computation is quick, hardly more.
"""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

import anyio
import attrs

T = TypeVar("T")


class _Flight:
    """One computation in progress, and its value once it has one."""

    def __init__(self) -> None:
        self.done = anyio.Event()
        self.value: Any = None
        self.has_value = False


#: A kept value is renewed no earlier than this fraction of its lifetime...
RENEW_AFTER = 0.5
#: ...and no later than this many times the last computation's duration before it
#: expires, nor than the last ``RENEW_LAST`` of its lifetime.
RENEW_MARGIN = 2.0
RENEW_LAST = 0.1


def renewal_time(computed: float, ttl: float, duration: float) -> float:
    """When a value computed at ``computed`` in ``duration`` seconds, kept ``ttl``
    seconds, is renewed (see the module docstring)."""
    expires = computed + ttl
    return max(
        computed + ttl * RENEW_AFTER, expires - max(RENEW_MARGIN * duration, ttl * RENEW_LAST)
    )


@attrs.frozen
class _Kept:
    value: Any
    computed: float
    renew: float
    expires: float


#: Starts a coroutine function beside the caller's own work and returns at once (a
#: task group's ``start_soon``, whose group the caller's work is joined with).
Aside = Callable[[Callable[[], Coroutine[Any, Any, None]]], object]


class Memo:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._values: dict[str, _Kept] = {}
        self._inflight: dict[str, _Flight] = {}
        self.hits = 0
        self.misses = 0
        self.renewals = 0
        #: How long computations took: the last one and the longest (seconds).
        self.last_seconds = 0.0
        self.longest_seconds = 0.0

    async def get(
        self,
        key: str,
        ttl: float,
        compute: Callable[[], Awaitable[tuple[T, bool]]],
        *,
        aside: Aside | None = None,
    ) -> tuple[T, float | None]:
        """The shared value and its age, or a fresh one (``None`` age, also for callers
        that waited for the computation); single-flight.

        Callers that arrive while the value is being computed wait for it and get it,
        kept or not: a provider found broken fails every add that asked at once with
        that one answer, instead of each asking every node again in turn (at a thousand
        nodes, one diagnose after the other). Later callers ask afresh. When the
        computation raises or is cancelled, a waiter computes it itself.

        Past its renewal time (:func:`renewal_time`), a kept value is renewed by the
        caller that finds it so (others take the kept value meanwhile). If the renewal
        raises, that caller gets the kept value while it lasts; if it is not to be kept,
        the kept one is dropped. With ``aside``, that caller takes the kept value too
        and the renewal runs beside its own work (started through ``aside``): no caller
        waits for a renewal while a kept value lasts.
        """
        while True:
            now = self._clock()
            kept = self._values.get(key)
            flight = self._inflight.get(key)
            if kept is not None and kept.expires > now:
                if flight is not None or now < kept.renew:
                    self.hits += 1
                    return kept.value, now - kept.computed
                self.renewals += 1
                if aside is None:
                    break
                self.hits += 1
                self.misses += 1
                renewal = self._inflight[key] = _Flight()
                aside(functools.partial(self._renew_aside, key, ttl, compute, renewal, kept))
                return kept.value, now - kept.computed
            if flight is None:
                break
            await flight.done.wait()
            if flight.has_value:
                self.hits += 1
                return flight.value, None
        self.misses += 1
        flight = self._inflight[key] = _Flight()
        return await self._fly(key, ttl, compute, flight, kept)

    async def _renew_aside(
        self,
        key: str,
        ttl: float,
        compute: Callable[[], Awaitable[tuple[T, bool]]],
        flight: _Flight,
        kept: _Kept,
    ) -> None:
        # Nobody waits for this answer: a renewal that fails leaves the kept value to
        # last its time, as it does for a caller that renews (see :meth:`get`).
        with contextlib.suppress(Exception):
            await self._fly(key, ttl, compute, flight, kept)

    async def _fly(
        self,
        key: str,
        ttl: float,
        compute: Callable[[], Awaitable[tuple[T, bool]]],
        flight: _Flight,
        kept: _Kept | None,
    ) -> tuple[T, float | None]:
        """Compute the value of the ``flight`` registered for ``key``; keep it or not."""
        try:
            started = self._clock()
            try:
                value, keep = await compute()
            except Exception:
                now = self._clock()
                if kept is not None and kept.expires > now:
                    return kept.value, now - kept.computed
                raise
            flight.value, flight.has_value = value, True
            now = self._clock()
            self.last_seconds = now - started
            self.longest_seconds = max(self.longest_seconds, self.last_seconds)
            if keep and ttl > 0:
                renew = renewal_time(now, ttl, now - started)
                self._values[key] = _Kept(value, now, renew, now + ttl)
            else:
                self._values.pop(key, None)
            return value, None
        finally:
            del self._inflight[key]
            flight.done.set()

    def statistics(self) -> dict[str, float]:
        return {
            "entries": len(self._values),
            "hits": self.hits,
            "misses": self.misses,
            "renewals": self.renewals,
            "last_seconds": round(self.last_seconds, 3),
            "longest_seconds": round(self.longest_seconds, 3),
        }
