"""What the watcher observes, in Ganeti's vocabulary, and its restart backoff (pure).

Observed state of an instance, next to its configured (admin) state:

==================== ==========================================================
``running``          marked up, and its guest runs on its primary
``stopped``          marked down, and its guest runs nowhere
``ERROR_down``       marked up, but its guest runs nowhere
``ERROR_up``         marked down, but its guest runs on its primary
``ERROR_wrongnode``  its guest runs on a node that is not its primary
``ERROR_nodeoffline`` its primary is marked offline
``unknown``          its primary did not answer (or was never asked)
==================== ==========================================================
"""

from __future__ import annotations

import enum
from collections.abc import Collection

import attrs


class ObservedState(enum.StrEnum):
    RUNNING = "running"
    STOPPED = "stopped"
    ERROR_DOWN = "ERROR_down"
    ERROR_UP = "ERROR_up"
    ERROR_WRONGNODE = "ERROR_wrongnode"
    ERROR_NODEOFFLINE = "ERROR_nodeoffline"
    UNKNOWN = "unknown"


def classify(
    *,
    admin_up: bool,
    primary: str,
    primary_offline: bool,
    primary_answered: bool,
    running_on: Collection[str],
) -> ObservedState:
    """The observed state (module docstring) from the configuration and what the nodes
    said: ``running_on`` are the nodes that answered and run the guest."""
    if any(node != primary for node in running_on):
        return ObservedState.ERROR_WRONGNODE
    if primary_offline:
        return ObservedState.ERROR_NODEOFFLINE
    if not primary_answered:
        return ObservedState.UNKNOWN
    runs = primary in running_on
    if admin_up:
        return ObservedState.RUNNING if runs else ObservedState.ERROR_DOWN
    return ObservedState.ERROR_UP if runs else ObservedState.STOPPED


@attrs.frozen
class RestartPolicy:
    """``[watcher]`` restart settings: the k-th restart within ``window`` seconds waits
    ``min(cap, base * 2**(k-2))`` seconds after the one before it (the first goes at
    once); after ``limit`` restarts within the window the watcher gives up."""

    base: float
    cap: float
    limit: int
    window: float

    def delay(self, done: int) -> float:
        """Seconds between the ``done``-th restart and the next one (``done`` >= 1)."""
        return float(min(self.cap, self.base * 2 ** max(0, done - 1)))


@attrs.define
class RestartHistory:
    """The watcher's restarts of one instance (times in the watcher's clock)."""

    attempts: list[float] = attrs.field(factory=list)
    #: Why the watcher gave up (None: it has not). Cleared once the instance is seen
    #: running again without a restart of the watcher's (an operator started it).
    gave_up: str | None = None

    def decide(self, now: float, policy: RestartPolicy) -> tuple[str, float | None]:
        """``("restart", None)``, ``("wait", when)`` or ``("give-up", None)``; prunes
        restarts older than the window. Records nothing (see :meth:`restarted`)."""
        self.attempts = [t for t in self.attempts if now - t < policy.window]
        if self.gave_up is not None:
            return "gave-up", None
        if len(self.attempts) >= policy.limit:
            return "give-up", None
        if self.attempts:
            when = self.attempts[-1] + policy.delay(len(self.attempts))
            if now < when:
                return "wait", when
        return "restart", None

    def restarted(self, now: float) -> None:
        self.attempts.append(now)
