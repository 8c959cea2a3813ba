"""What a backend needs from its caller to talk to a running guest's control socket.

The hypervisors layer does no I/O of its own. Where a backend must hold a conversation
with a guest (QMP for kvm: a memory transfer, a resize notice), it is handed a
:class:`GuestLink` — in practice the LU's ``StepContext``, which opens the socket on
the node through the node layer and journals it — and drives the conversation over the
:class:`ByteStream` the link opens. Tests pass a scripted link.
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from typing import Protocol

from extjobs.model.jobs import LogKind


class ByteStream(Protocol):
    """A byte stream to a Unix socket on a node."""

    async def send(self, data: bytes) -> None: ...

    async def receive(self, max_bytes: int = 65536) -> bytes:
        """Up to ``max_bytes`` bytes; ``b""`` once the other end closed."""
        ...


class GuestLink(Protocol):
    """The caller's services a backend uses to reach a guest (see the module docstring)."""

    def open_unix_stream(
        self, node: str, path: str, *, timeout: float, description: str
    ) -> AbstractAsyncContextManager[ByteStream]:
        """Connect to the Unix socket ``path`` on ``node``; each send/receive is bounded
        by ``timeout``. ``description`` names the conversation in the job's journal."""
        ...

    def log(self, message: str, *, kind: LogKind = LogKind.MESSAGE) -> None:
        """Append a line to the job log."""
        ...

    async def sleep(self, seconds: float) -> None: ...
