"""Bounded capture of a remote command's output.

A provider script that floods its output must not grow the daemon's memory: a
:class:`CappedBuffer` keeps the first ``head`` and the last ``tail`` bytes of a stream
and only counts what falls in between. Memory stays at ``head + tail`` plus the chunk
being fed, whatever the stream's length.
"""

from __future__ import annotations

from extjobs.model.remote import dropped_marker


class CappedBuffer:
    """Keeps the head and the tail of a byte stream, counting the bytes cut in between.

    Invariant: ``len(head) <= head_cap``, ``len(tail) <= tail_cap``, and
    ``len(head) + dropped + len(tail)`` equals the number of bytes fed.
    """

    def __init__(self, head: int, tail: int) -> None:
        if head < 0 or tail < 0:
            raise ValueError("head and tail must not be negative")
        self._head_cap = head
        self._tail_cap = tail
        self._head = bytearray()
        self._tail = bytearray()
        self._total = 0

    @classmethod
    def split(cls, cap: int) -> CappedBuffer:
        """A buffer keeping ``cap`` bytes in all, half head and half tail."""
        return cls(cap - cap // 2, cap // 2)

    def feed(self, data: bytes) -> None:
        """Append ``data`` to the stream."""
        self._total += len(data)
        view = memoryview(data)
        room = self._head_cap - len(self._head)
        if room > 0:
            self._head += view[:room]
            view = view[room:]
        if not view or self._tail_cap == 0:
            return
        if len(view) >= self._tail_cap:
            self._tail[:] = view[len(view) - self._tail_cap :]
            return
        self._tail += view
        excess = len(self._tail) - self._tail_cap
        if excess > 0:
            # Deleting from the front of a bytearray is amortised O(1) in CPython.
            del self._tail[:excess]

    @property
    def total(self) -> int:
        """Bytes fed so far."""
        return self._total

    @property
    def dropped(self) -> int:
        """Bytes fed but neither in the head nor in the tail."""
        return self._total - len(self._head) - len(self._tail)

    def getvalue(self) -> bytes:
        """Head and tail joined, without a marker."""
        return bytes(self._head + self._tail)

    def text(self) -> str:
        """The kept bytes as text (UTF-8, undecodable bytes replaced).

        When bytes were dropped, ``\\n[... N bytes dropped ...]\\n`` stands between head
        and tail; head and tail are decoded separately, so a character cut at either edge
        turns into a replacement character rather than corrupting its neighbour.
        """
        if self.dropped == 0:
            return self.getvalue().decode("utf-8", errors="replace")
        head = self._head.decode("utf-8", errors="replace")
        tail = self._tail.decode("utf-8", errors="replace")
        return f"{head}{dropped_marker(self.dropped)}{tail}"
