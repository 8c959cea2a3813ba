"""Leadership among masters sharing one store: a lease renewed on a timer, and stepping
down before it can expire.

Theory of operation (times in seconds; ``ttl`` is the lease, default 3):

* Every ``ttl / 3`` the loop heartbeats and, as a standby, tries to take the lease; as
  the leader, renews it. Taking it increments the epoch (the fencing token).
* The leader may act — start a step, write — only until ``sent + ttl - margin``, where
  ``sent`` is when the last successful renewal was *sent* (monotonic clock) and
  ``margin`` is ``ttl / 3``. The store can extend the lease no earlier than that send, so
  by the store's clock the lease outlives the leader's right to act by at least
  ``margin``: another master can only take over after the former leader has stopped.
* A renewal that fails (the lease was lost, or the store cannot be reached) until the
  right to act runs out deposes the leader: ``deposed`` is set and it goes back to
  standing by. Independently, every write of the leader's store handle is fenced at its
  epoch, so even a leader paused past all of this cannot write.
"""

from __future__ import annotations

import logging
import time

import anyio
from anyio.abc import TaskStatus

from extjobs.errors import StoreError
from extjobs.store.shared import SharedStore

log = logging.getLogger("extjobs.leadership")

DEFAULT_LEASE = 3.0


class Leadership:
    """This master's part in the election (see the module docstring)."""

    def __init__(
        self, store: SharedStore, name: str, address: str, *, ttl: float = DEFAULT_LEASE
    ) -> None:
        self.store = store
        self.name = name
        self.address = address
        self.ttl = ttl
        self.margin = ttl / 3
        self.epoch: int | None = None
        self._act_until = 0.0
        self.elected = anyio.Event()
        self.deposed = anyio.Event()
        self.changes = 0

    def may_act(self) -> bool:
        """Whether this master leads and may still start steps and write."""
        return self.epoch is not None and time.monotonic() < self._act_until

    def _tick(self) -> None:
        """One round: heartbeat, then take or renew the lease (synchronous store calls)."""
        sent = time.monotonic()
        try:
            self.store.heartbeat(self.name, self.address)
            if self.epoch is None:
                lease = self.store.acquire_lease(self.name, self.ttl)
                if lease is not None:
                    self.epoch = lease.epoch
                    self._act_until = sent + self.ttl - self.margin
                    self.changes += 1
                    log.warning("%s leads now (epoch %d)", self.name, lease.epoch)
                    self.elected.set()
                    self.deposed = anyio.Event()
                return
            renewed = self.store.renew_lease(self.name, self.epoch, self.ttl)
        except StoreError as exc:
            log.warning("%s: the shared store did not answer: %s", self.name, exc.message)
            renewed = None
            if self.epoch is None:
                return
        if renewed is not None:
            self._act_until = sent + self.ttl - self.margin
            return
        if not self.may_act() or self._lost():
            self._step_down()

    def _lost(self) -> bool:
        """Whether another master holds the lease now (not merely a failed renewal)."""
        try:
            lease = self.store.lease()
        except StoreError:
            return False
        return lease is None or lease.holder != self.name or lease.epoch != self.epoch

    def _step_down(self) -> None:
        log.warning("%s no longer leads (epoch %s); standing by", self.name, self.epoch)
        self.epoch = None
        self._act_until = 0.0
        self.changes += 1
        self.deposed.set()
        self.elected = anyio.Event()

    async def serve(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Run the election loop until cancelled; the first round is done when started."""
        self._tick()
        task_status.started()
        while True:
            await anyio.sleep(self.ttl / 3)
            self._tick()
