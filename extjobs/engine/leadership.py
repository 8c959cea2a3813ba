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
import attrs
from anyio.abc import TaskStatus

from extjobs.errors import StoreError
from extjobs.model.masters import Lease
from extjobs.store.shared import SharedStore

log = logging.getLogger("extjobs.leadership")

DEFAULT_LEASE = 3.0


@attrs.frozen
class _Answer:
    """What one round of the election learnt from the store (see :meth:`Leadership._ask`)."""

    #: When the round's first call was sent (monotonic clock).
    sent: float
    #: The lease taken or renewed (None: not taken, or not renewed).
    lease: Lease | None = None
    #: Why the store did not answer (None: it did).
    error: StoreError | None = None
    #: After a failed renewal: whether another master holds the lease now (None: unknown).
    lost: bool | None = None


class Leadership:
    """This master's part in the election (see the module docstring).

    ``store`` is the election's own handle: its calls run in a worker thread, so a
    database that stops answering never blocks the event loop, and a round that takes
    longer than a third of the lease counts as failed."""

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

    def _ask(self, epoch: int | None) -> _Answer:
        """One round's store calls (in a worker thread): heartbeat, then take the lease
        (``epoch`` None) or renew it; after a failed renewal, who holds it now."""
        sent = time.monotonic()
        try:
            self.store.heartbeat(self.name, self.address)
            if epoch is None:
                return _Answer(sent, lease=self.store.acquire_lease(self.name, self.ttl))
            renewed = self.store.renew_lease(self.name, epoch, self.ttl)
            if renewed is not None:
                return _Answer(sent, lease=renewed)
            error = None
        except StoreError as exc:
            if epoch is None:
                return _Answer(sent, error=exc)
            error = exc
        try:
            lease = self.store.lease()
        except StoreError:
            return _Answer(sent, error=error)
        lost = lease is None or lease.holder != self.name or lease.epoch != epoch
        return _Answer(sent, error=error, lost=lost)

    def _apply(self, answer: _Answer | None) -> None:
        """Act on a round's answer (None: the store did not answer in time)."""
        if answer is not None and answer.error is not None:
            log.warning("%s: the shared store did not answer: %s", self.name, answer.error.message)
        elif answer is None:
            log.warning("%s: the shared store did not answer in %gs", self.name, self.ttl / 3)
        if self.epoch is None:
            if answer is not None and answer.lease is not None:
                self.epoch = answer.lease.epoch
                self._act_until = answer.sent + self.ttl - self.margin
                self.changes += 1
                log.warning("%s leads now (epoch %d)", self.name, answer.lease.epoch)
                self.elected.set()
                self.deposed = anyio.Event()
            return
        if answer is not None and answer.lease is not None:
            self._act_until = answer.sent + self.ttl - self.margin
            return
        if not self.may_act() or (answer is not None and answer.lost):
            self._step_down()

    async def _tick(self) -> None:
        """One round: the store calls in a worker thread, bounded by a third of the
        lease; then what they say, on the event loop."""
        answer = None
        with anyio.move_on_after(self.ttl / 3):
            answer = await anyio.to_thread.run_sync(self._ask, self.epoch, abandon_on_cancel=True)
        self._apply(answer)

    def _step_down(self) -> None:
        log.warning("%s no longer leads (epoch %s); standing by", self.name, self.epoch)
        self.epoch = None
        self._act_until = 0.0
        self.changes += 1
        self.deposed.set()
        self.elected = anyio.Event()

    async def serve(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Run the election loop until cancelled; the first round is done when started."""
        await self._tick()
        task_status.started()
        while True:
            await anyio.sleep(self.ttl / 3)
            await self._tick()
