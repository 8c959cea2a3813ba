"""A stream to a Unix socket on a node, forwarded over SSH (a guest's QMP socket)."""

from __future__ import annotations

import asyncssh

from extjobs.errors import NodeUnreachableError
from extjobs.model.remote import Endpoint


class ForwardedStream:
    """A forwarded connection to a Unix socket on a node; errors become NodeErrors."""

    def __init__(
        self,
        endpoint: Endpoint,
        path: str,
        reader: asyncssh.SSHReader[bytes],
        writer: asyncssh.SSHWriter[bytes],
    ) -> None:
        self._endpoint = endpoint
        self._path = path
        self._reader = reader
        self._writer = writer

    def _lost(self, exc: BaseException) -> NodeUnreachableError:
        return NodeUnreachableError(
            f"node {self._endpoint.name}: connection to {self._path} lost: {exc}",
            node=self._endpoint.name,
            path=self._path,
        )

    async def send(self, data: bytes) -> None:
        try:
            self._writer.write(data)
            await self._writer.drain()
        except (asyncssh.Error, OSError) as exc:
            raise self._lost(exc) from exc

    async def receive(self, max_bytes: int = 65536) -> bytes:
        try:
            return bytes(await self._reader.read(max_bytes))
        except (asyncssh.Error, OSError) as exc:
            raise self._lost(exc) from exc
