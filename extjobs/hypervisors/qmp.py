"""QMP (the QEMU Machine Protocol) as pure translation: bytes in, messages out.

A QMP session over a stream::

    server: {"QMP": {"version": …, "capabilities": […]}}      greeting
    client: {"execute": "qmp_capabilities"}                    leave negotiation mode
    server: {"return": {}}
    client: {"execute": "block_resize", "arguments": {…}, "id": "2"}
    server: {"event": "…", …}                                  events may come any time
    server: {"return": …, "id": "2"}  or  {"error": {"class", "desc"}, "id": "2"}

Messages are JSON objects, one per line (``\\r\\n``). :class:`MessageSplitter` turns
received bytes into messages; :func:`encode_command` and :func:`reply_value` are the two
halves of a command. The I/O loop lives with the caller (see
``extjobs.lus.instance_hv.qmp_execute``).
"""

from __future__ import annotations

import json
from typing import Any

from extjobs.errors import HypervisorError

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
