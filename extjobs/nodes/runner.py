"""The :class:`NodeRunner` protocol: everything the layers above ask of a node.

Implementations translate their transport's errors into the :mod:`extjobs.errors` tree
at this boundary; callers only ever see :class:`~extjobs.errors.NodeError` subclasses::

    NodeError                    anything else about talking to a node (auth refused, …)
    ├── NodeUnreachableError     connect refused/failed/timed out, connection lost
    ├── HostKeyError             the node's host key is not the pinned one (or none pinned)
    └── CommandTimeoutError      the command ran over its timeout and its group was killed
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from extjobs.model.remote import CommandResult, Endpoint, RemoteCommand


class UnixStream(Protocol):
    """A byte stream to a Unix socket on a node (e.g. a QMP socket)."""

    async def send(self, data: bytes) -> None:
        """Write all of ``data``; raises :class:`~extjobs.errors.NodeError` when lost."""
        ...

    async def receive(self, max_bytes: int = 65536) -> bytes:
        """Up to ``max_bytes`` received bytes; ``b""`` once the other end closed."""
        ...


@runtime_checkable
class NodeRunner(Protocol):
    """Runs commands on nodes. One instance serves every node of a cluster."""

    async def run(
        self,
        endpoint: Endpoint,
        command: RemoteCommand,
        *,
        on_started: Callable[[int], None] | None = None,
    ) -> CommandResult:
        """Run ``command`` on ``endpoint`` and return its outcome.

        ``on_started(pgid)`` is called once the remote process group exists, with its
        id (the engine journals it so that a restarted daemon can kill leftovers). If it
        raises, the remote group is killed and its exception is raised: a command whose
        group could not be recorded must not run on.

        A non-zero exit status is a result, not an error. Raises
        :class:`~extjobs.errors.NodeUnreachableError`,
        :class:`~extjobs.errors.HostKeyError`, or
        :class:`~extjobs.errors.CommandTimeoutError` after ``command.timeout`` seconds.
        On timeout and on cancellation of the caller the command is killed on the node
        -- its session, its process group and every descendant, also one that called
        ``setsid`` (:mod:`extjobs.nodes.killtree` says what is out of reach) -- bounded by
        the runner's kill timeout, before the error or the cancellation propagates.
        """
        ...

    async def kill_leftover(self, endpoint: Endpoint, pgid: int, program: str) -> bool:
        """Kill the command whose session (and group) is ``pgid`` on the node, with its
        descendants, if its leader still runs ``program`` (a command a crashed master left
        running); True when it was killed.

        A group whose leader runs something else (a reused process id) is left alone.
        Raises the same node errors as :meth:`run`.
        """
        ...

    async def fetch_host_key(self, host: str, port: int) -> str:
        """The host key the server at ``host:port`` offers, in OpenSSH format.

        Nothing is verified: the caller shows the key to be pinned when a node is added.
        """
        ...

    async def put_tree(
        self, endpoint: Endpoint, local_dir: Path, remote_dir: str, *, timeout: float = 300.0
    ) -> None:
        """Copy ``local_dir``'s contents into ``remote_dir`` (created with its parents).

        Only directories and regular files (or links to them) are copied, read without
        blocking the caller's event loop; anything else raises :class:`InputError`
        naming it, before anything is sent. File modes are kept, without group and other
        write permission. Raises :class:`CommandTimeoutError` after ``timeout`` seconds. Not atomic: cancelled half-way, part of the tree is there.
        """
        ...

    def open_unix_stream(
        self, endpoint: Endpoint, path: str
    ) -> AbstractAsyncContextManager[UnixStream]:
        """Connect to the Unix socket ``path`` on the node (SSH stream-local forwarding).

        Raises :class:`~extjobs.errors.NodeError` when the node refuses or nothing
        listens there, and :class:`~extjobs.errors.NodeUnreachableError` when the node
        cannot be reached. The stream is closed when the context exits.
        """
        ...

    def statistics(self) -> dict[str, Any]:
        """Counters for monitoring: connections and channels per node, commands run."""
        ...

    async def aclose(self) -> None:
        """Close every connection; the runner must not be used afterwards."""
        ...
