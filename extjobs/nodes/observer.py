"""What a runner tells an observer about nodes as it talks to them (the metrics).

The runner reports outcomes it learns anyway -- a connection opened or refused, a
command that came back with an exit status or lost its connection -- so that node
reachability is known from the work the daemon does, without a watcher polling nodes.
Calls are made on the event loop, synchronously, and must be cheap and never raise.
"""

from __future__ import annotations

from typing import Protocol

from extjobs.errors import NodeError


class RunnerObserver(Protocol):
    def connect_outcome(self, node: str, error: NodeError | None) -> None:
        """A connection to ``node`` was opened (``error`` None) or failed with ``error``
        (:class:`~extjobs.errors.NodeUnreachableError`: the node did not answer)."""

    def command_outcome(self, node: str, answered: bool) -> None:
        """A command on ``node`` ended with an exit status (``answered``) or lost its
        connection while it ran (not ``answered``)."""


__all__ = ["RunnerObserver"]
