"""QMP (the QEMU Machine Protocol): messages, and a session over a stream the caller opens.

A QMP session over a stream::

    server: {"QMP": {"version": …, "capabilities": […]}}      greeting
    client: {"execute": "qmp_capabilities"}                    leave negotiation mode
    server: {"return": {}}
    client: {"execute": "block_resize", "arguments": {…}, "id": "2"}
    server: {"event": "…", …}                                  events may come any time
    server: {"return": …, "id": "2"}  or  {"error": {"class", "desc"}, "id": "2"}

Messages are JSON objects, one per line (``\\r\\n``). :class:`MessageSplitter` turns
received bytes into messages; :func:`encode_command` and :func:`reply_value` are the two
halves of a command. :class:`QmpSession` holds the conversation over a stream that the
caller's :class:`~extjobs.hypervisors.link.GuestLink` opened (:func:`open_session`);
the socket itself is opened, journalled and closed by the caller.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from extjobs.errors import HypervisorError
from extjobs.hypervisors.link import ByteStream, GuestLink
from extjobs.model.jobs import LogKind

#: A reply longer than this (bytes, without a newline) is refused as garbage.
MAX_MESSAGE = 1 << 20


def encode_command(execute: str, arguments: dict[str, Any] | None = None, *, id: str) -> bytes:
    """One command as it is written to the socket."""
    message: dict[str, Any] = {"execute": execute, "id": id}
    if arguments:
        message["arguments"] = arguments
    return json.dumps(message, separators=(",", ":")).encode() + b"\n"


class MessageSplitter:
    """Accumulates received bytes and yields complete JSON messages."""

    def __init__(self, *, where: str) -> None:
        self._buffer = bytearray()
        self._where = where

    def feed(self, data: bytes) -> list[dict[str, Any]]:
        """Add ``data``; return the messages completed by it. Raises HypervisorError."""
        self._buffer += data
        messages = []
        while (end := self._buffer.find(b"\n")) >= 0:
            line = bytes(self._buffer[:end]).strip()
            del self._buffer[: end + 1]
            if not line:
                continue
            try:
                message = json.loads(line)
            except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise HypervisorError(
                    f"QMP on {self._where} sent something that is not JSON: {line[:200]!r}",
                    reason=str(exc),
                ) from None
            if not isinstance(message, dict):
                raise HypervisorError(f"QMP on {self._where} sent a non-object: {line[:200]!r}")
            messages.append(message)
        if len(self._buffer) > MAX_MESSAGE:
            raise HypervisorError(f"QMP on {self._where} sent an over-long message")
        return messages


def check_greeting(message: dict[str, Any], *, where: str) -> dict[str, Any]:
    """The server's version dict; raises HypervisorError if ``message`` is no greeting."""
    greeting = message.get("QMP")
    if not isinstance(greeting, dict):
        raise HypervisorError(f"QMP on {where} did not greet: {str(message)[:200]}")
    version = greeting.get("version", {})
    return version if isinstance(version, dict) else {}


def _data(event: dict[str, Any]) -> dict[str, Any]:
    data = event.get("data")
    return data if isinstance(data, dict) else {}


def is_event(message: dict[str, Any]) -> bool:
    return "event" in message


def reply_value(message: dict[str, Any], execute: str, *, id: str, where: str) -> Any:
    """The ``return`` value of the reply to command ``id``; raises HypervisorError for an
    ``error`` reply (with QMP's class and description) or a reply to something else."""
    if message.get("id") != id:
        raise HypervisorError(
            f"QMP on {where} answered {str(message)[:200]} to {execute} (id {id})"
        )
    if "error" in message:
        error = message["error"] if isinstance(message["error"], dict) else {}
        raise HypervisorError(
            f"QMP {execute} on {where} failed: {error.get('class', 'Error')}: "
            f"{error.get('desc', message['error'])}",
            qmp_class=error.get("class"),
            command=execute,
        )
    if "return" not in message:
        raise HypervisorError(f"QMP on {where} sent a reply without return: {str(message)[:200]}")
    return message["return"]


def block_sizes(query_block: Any) -> dict[str, int]:
    """``device → virtual size in bytes`` from a ``query-block`` return value."""
    sizes: dict[str, int] = {}
    if not isinstance(query_block, list):
        return sizes
    for entry in query_block:
        if not isinstance(entry, dict):
            continue
        image = (entry.get("inserted") or {}).get("image") or {}
        size = image.get("virtual-size")
        if isinstance(entry.get("device"), str) and isinstance(size, int):
            sizes[entry["device"]] = size
    return sizes


#: Longest wait for one reply (each receive) on a QMP socket.
QMP_TIMEOUT = 30.0
#: Events a session keeps for :meth:`QmpSession.wait_event`.
KEPT_EVENTS = 100

Command = tuple[str, dict[str, Any]]


class QmpSession:
    """A QMP session in command mode on one guest's socket (see :func:`open_session`)."""

    def __init__(self, link: GuestLink, node: str, stream: ByteStream, where: str) -> None:
        self._link = link
        self._node = node
        self._stream = stream
        self._where = where
        self._splitter = MessageSplitter(where=where)
        self._pending: list[dict[str, Any]] = []
        self._number = 0
        #: Events met while waiting for replies, oldest first (the last
        #: :data:`KEPT_EVENTS`), for :meth:`wait_event`.
        self.events: list[dict[str, Any]] = []

    async def _next_message(self) -> dict[str, Any]:
        while not self._pending:
            data = await self._stream.receive()
            if not data:
                raise HypervisorError(
                    f"QMP on {self._where} closed the connection", node=self._node
                )
            self._pending.extend(self._splitter.feed(data))
        return self._pending.pop(0)

    async def start(self) -> dict[str, Any]:
        """Read the greeting and leave negotiation mode; the server's version dict."""
        version = check_greeting(await self._next_message(), where=self._where)
        await self.execute("qmp_capabilities", quiet=True)
        return version

    async def execute(
        self, execute: str, arguments: dict[str, Any] | None = None, *, quiet: bool = False
    ) -> Any:
        """Run one command; its ``return`` value. Events met meanwhile are skipped; unless
        ``quiet``, the job log gets a ``qmp`` line.

        Raises :class:`HypervisorError` for an error reply or a broken session.
        """
        self._number += 1
        command_id = f"extjobs-{self._number}"
        await self._stream.send(encode_command(execute, arguments, id=command_id))
        while is_event(message := await self._next_message()):
            self._keep(message)
        value = reply_value(message, execute, id=command_id, where=self._where)
        if not quiet:
            shown = f" {arguments}" if arguments else ""
            self._link.log(f"{self._node}: QMP {execute}{shown}: ok", kind=LogKind.QMP)
        return value

    def _keep(self, event: dict[str, Any]) -> None:
        self.events.append(event)
        del self.events[:-KEPT_EVENTS]

    async def wait_event(self, name: str, match: Callable[[dict[str, Any]], bool]) -> Any:
        """The ``data`` of the first event ``name`` whose data passes ``match``, met
        earlier or arriving now; each receive is bounded by the session's timeout
        (``CommandTimeoutError`` from the stream when nothing comes)."""
        for event in self.events:
            data = _data(event)
            if event.get("event") == name and match(data):
                self.events.remove(event)
                return data
        while True:
            message = await self._next_message()
            if not is_event(message):
                continue  # no command is pending: a stray reply
            data = _data(message)
            if message.get("event") == name and match(data):
                return data
            self._keep(message)


@contextlib.asynccontextmanager
async def open_session(
    link: GuestLink,
    node: str,
    socket: str,
    *,
    description: str,
    timeout: float = QMP_TIMEOUT,
) -> AsyncIterator[QmpSession]:
    """A QMP session on the guest whose socket is ``socket`` on ``node``, past the
    greeting and out of negotiation mode; each receive is bounded by ``timeout``."""
    where = f"{node}:{socket}"
    async with link.open_unix_stream(
        node, socket, timeout=timeout, description=description
    ) as stream:
        session = QmpSession(link, node, stream, where)
        version = await session.start()
        qemu = version.get("qemu", {})
        if isinstance(qemu, dict) and qemu:
            link.log(f"{node}: QMP served by qemu {qemu.get('major')}.{qemu.get('minor')}")
        yield session


async def execute_all(
    link: GuestLink,
    node: str,
    socket: str,
    commands: Sequence[Command],
    *,
    timeout: float = QMP_TIMEOUT,
) -> list[Any]:
    """Run ``commands`` in one session on the guest whose socket is ``socket`` on ``node``.

    Returns each command's ``return`` value. Raises :class:`HypervisorError` for an
    error reply or a broken session, and the node layer's errors for the connection.
    """
    names = ", ".join(execute for execute, _ in commands)
    async with open_session(link, node, socket, timeout=timeout, description=f"QMP {names}") as s:
        return [await s.execute(execute, arguments) for execute, arguments in commands]
