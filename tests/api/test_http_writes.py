"""The daemon's HTTP protocol sends each answer in one write, and streams still flow."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from extjobs import daemon
from extjobs.api.views import JSONResponse


class _Recorder:
    """The real transport, every write to it counted."""

    def __init__(self, transport: asyncio.Transport, writes: list[bytes]) -> None:
        self._transport = transport
        self._writes = writes

    def write(self, data: bytes) -> None:
        self._writes.append(bytes(data))
        self._transport.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


@contextlib.asynccontextmanager
async def _serving(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, app: Starlette
) -> AsyncIterator[tuple[Path, list[bytes]]]:
    writes: list[bytes] = []
    held_init = daemon._HeldWrites.__init__

    def recording(self: daemon._HeldWrites, transport: asyncio.Transport) -> None:
        held_init(self, _Recorder(transport, writes))  # type: ignore[arg-type]

    monkeypatch.setattr(daemon._HeldWrites, "__init__", recording)
    path = tmp_path / "run" / "api.sock"
    # Bound and listening already: a client may connect before the server accepts.
    sock = daemon.bind_unix_socket(path)
    server = daemon._Server(daemon._uvicorn_config(app))
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(server.serve, [sock])
            yield path, writes
            server.should_exit = True
    finally:
        sock.close()


async def _request(path: Path, request: bytes, *, until: bytes) -> bytes:
    reader, writer = await asyncio.open_unix_connection(str(path))
    writer.write(request)
    received = b""
    with anyio.fail_after(10):
        while until not in received:
            received += await reader.read(65536)
    writer.close()
    await writer.wait_closed()
    return received


async def test_an_answer_is_one_write(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async def hello(request: Request) -> Response:
        return JSONResponse({"hello": "world"}, status_code=201)

    app = Starlette(routes=[Route("/hello", hello)])
    async with _serving(tmp_path, monkeypatch, app) as (path, writes):
        for _ in range(3):
            answer = await _request(
                path, b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n", until=b'"world"}'
            )
            assert answer.startswith(b"HTTP/1.1 201 Created\r\n")
        assert len(writes) == 3
        assert all(w.startswith(b"HTTP/1.1 201") and w.endswith(b'"world"}') for w in writes)


async def test_a_streamed_answer_flows_part_by_part(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    second = anyio.Event()

    async def lines() -> AsyncIterator[bytes]:
        yield b"first\n"
        await second.wait()
        yield b"second\n"

    async def stream(request: Request) -> Response:
        return StreamingResponse(lines(), media_type="application/x-ndjson")

    app = Starlette(routes=[Route("/stream", stream)])
    async with _serving(tmp_path, monkeypatch, app) as (path, writes):
        reader, writer = await asyncio.open_unix_connection(str(path))
        writer.write(b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n")
        received = b""
        with anyio.fail_after(10):
            # The first line arrives while the second is not written yet.
            while b"first\n" not in received:
                received += await reader.read(65536)
            second.set()
            while b"0\r\n\r\n" not in received:
                received += await reader.read(65536)
        writer.close()
        await writer.wait_closed()
        assert b"second\n" in received
        assert len(writes) >= 2
