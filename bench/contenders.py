"""The ways of running one no-op command on a node that the call benchmarks compare.

Every contender runs the *same remote command line* on the *same embedded SSH node*
(a real asyncssh SSH server): the line extjobs itself sends for the step of
``OP_TEST_DELAY(duration=0, on_master=false, on_nodes=[node])``, which announces its
process group and then ``exec env -i -- PATH=/usr/bin:/bin sleep 0``. So the remote
work is identical and the differences are what each client stack costs:

* ``asyncssh``: one reused asyncssh connection per node, ``create_session`` with a
  minimal session object: the leanest use of the transport (the reference), on
  asyncssh's default ciphers (ChaCha20-Poly1305 first).
* ``asyncssh_gcm``: the same, offering the ciphers extjobs offers (AES-GCM first,
  ``[ssh] ciphers``): the reference for what extjobs adds apart from the cipher.
* ``asyncssh_run``: the same connection, through asyncssh's ordinary ``conn.run``.
* ``runner``: extjobs's node layer alone (``SSHRunner.run``, pooled connections),
  without queue, journal or store.
* ``openssh_master``: the OpenSSH client multiplexed over a ControlMaster per node.
* ``openssh_fresh``: a fresh ``ssh`` process and connection per call.
* ``extjobs``: a whole job through the engine in this process: submit → queue →
  locks → LU → journal (started) → SSH runner → ``sleep 0`` → journal (done) → result
  and job stored → the waiter woken.
* ``extjobs_api``: the same job through a daemon process and its HTTP API (one
  ``POST /v1/jobs`` and one long-polling ``GET /v1/jobs/ID/wait`` per call).
* ``extjobs_api_oneshot``: the same through one request that submits and answers when
  the job has ended (``POST /v1/jobs?wait=60``).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import asyncssh

from bench.infra import ClientKey, DaemonProcess, Engine, Node
from extjobs.model.config import SSHOptions
from extjobs.model.opcodes import OpTestDelay
from extjobs.model.remote import RemoteCommand
from extjobs.nodes.command import shell_line
from extjobs.nodes.ssh import SSHRunner

#: The step OP_TEST_DELAY(duration=0) runs on a node (see extjobs.lus.delay).
NOOP = RemoteCommand(argv=("sleep", "0"), env={"PATH": "/usr/bin:/bin"}, timeout=30.0)
NOOP_LINE = shell_line(NOOP)

Call = Callable[[int], Awaitable[None]]


class _Session(asyncssh.SSHClientSession[bytes]):
    def __init__(self) -> None:
        self.closed = anyio.Event()
        self.exit_status: int | None = None

    def exit_status_received(self, status: int) -> None:
        self.exit_status = status

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed.set()


async def _connect(
    node: Node, key: ClientKey, user: str, ciphers: Sequence[str] = ()
) -> asyncssh.SSHClientConnection:
    return await asyncssh.connect(
        node.host,
        node.port,
        username=user,
        client_keys=[str(key.private_key)],
        known_hosts=([asyncssh.import_public_key(node.host_key)], [], []),
        agent_path=None,
        config=None,
        **({"encryption_algs": list(ciphers)} if ciphers else {}),
    )


@contextlib.asynccontextmanager
async def open_asyncssh(
    nodes: list[Node], key: ClientKey, user: str, ciphers: Sequence[str] = ()
) -> AsyncIterator[Call]:
    """Lean asyncssh: one connection per node, one exec channel per call; on asyncssh's
    default ciphers (ChaCha20-Poly1305 first), or offering ``ciphers``."""
    conns = [await _connect(node, key, user, ciphers) for node in nodes]

    async def call(i: int) -> None:
        session = _Session()
        chan, _ = await conns[i % len(conns)].create_session(
            lambda: session, NOOP_LINE, encoding=None
        )
        chan.write_eof()
        await session.closed.wait()
        if session.exit_status != 0:
            raise RuntimeError(f"exit status {session.exit_status}")

    try:
        yield call
    finally:
        for conn in conns:
            conn.close()
            await conn.wait_closed()


@contextlib.asynccontextmanager
async def open_asyncssh_run(nodes: list[Node], key: ClientKey, user: str) -> AsyncIterator[Call]:
    """asyncssh's ordinary API on a reused connection: ``conn.run(line)``."""
    conns = [await _connect(node, key, user) for node in nodes]

    async def call(i: int) -> None:
        result = await conns[i % len(conns)].run(NOOP_LINE, check=True)
        del result

    try:
        yield call
    finally:
        for conn in conns:
            conn.close()
            await conn.wait_closed()


@contextlib.asynccontextmanager
async def open_runner(nodes: list[Node], key: ClientKey, user: str) -> AsyncIterator[Call]:
    """extjobs's SSH runner alone, as the engine uses it."""
    endpoints = [n.endpoint(user) for n in nodes]
    async with SSHRunner(SSHOptions(identity_file=str(key.private_key))) as runner:

        async def call(i: int) -> None:
            result = await runner.run(endpoints[i % len(endpoints)], NOOP)
            if not result.ok:
                raise RuntimeError(f"exit status {result.exit_status}")

        yield call


def _ssh_base(node: Node, key: ClientKey, user: str, known_hosts: Path) -> list[str]:
    return [
        "ssh",
        "-F",
        "/dev/null",
        "-i",
        str(key.private_key),
        "-p",
        str(node.port),
        "-o",
        f"UserKnownHostsFile={known_hosts}",
        "-o",
        "StrictHostKeyChecking=yes",
        "-o",
        "BatchMode=yes",
        "-o",
        "IdentitiesOnly=yes",
        "-o",
        "LogLevel=ERROR",
        "-l",
        user,
    ]


def _known_hosts(nodes: list[Node], directory: Path) -> Path:
    path = directory / "known_hosts"
    path.write_text("".join(f"[{n.host}]:{n.port} {n.host_key}\n" for n in nodes))
    return path


async def _run_ssh(argv: list[str]) -> None:
    result = await anyio.run_process(argv, check=False, stdin=subprocess.DEVNULL)
    if result.returncode != 0:
        raise RuntimeError(f"ssh exited {result.returncode}: {result.stderr.decode()[-300:]}")


@contextlib.asynccontextmanager
async def open_openssh_fresh(
    nodes: list[Node], key: ClientKey, user: str, workdir: Path
) -> AsyncIterator[Call]:
    """A fresh OpenSSH client process (and connection) per call."""
    known = _known_hosts(nodes, workdir)
    argvs = [[*_ssh_base(n, key, user, known), n.host, NOOP_LINE] for n in nodes]

    async def call(i: int) -> None:
        await _run_ssh(argvs[i % len(argvs)])

    yield call


@contextlib.asynccontextmanager
async def open_openssh_master(
    nodes: list[Node], key: ClientKey, user: str, workdir: Path
) -> AsyncIterator[Call]:
    """OpenSSH multiplexed over one ControlMaster connection per node."""
    known = _known_hosts(nodes, workdir)
    sockets = [workdir / f"cm-{n.name}" for n in nodes]
    bases = [_ssh_base(n, key, user, known) for n in nodes]
    for node, sock, base in zip(nodes, sockets, bases, strict=True):
        # -f: the client goes to the background once the master connection is up.
        await _run_ssh(
            [
                *base,
                "-o",
                "ControlMaster=yes",
                "-o",
                f"ControlPath={sock}",
                "-o",
                "ControlPersist=yes",
                "-f",
                "-N",
                node.host,
            ]
        )
    argvs = [
        [*base, "-o", "ControlMaster=no", "-o", f"ControlPath={sock}", node.host, NOOP_LINE]
        for node, sock, base in zip(nodes, sockets, bases, strict=True)
    ]

    async def call(i: int) -> None:
        await _run_ssh(argvs[i % len(argvs)])

    try:
        yield call
    finally:
        for node, sock, base in zip(nodes, sockets, bases, strict=True):
            await _run_ssh([*base, "-o", f"ControlPath={sock}", "-O", "exit", node.host])


def _check_job(status: str, detail: Any) -> None:
    if status != "success":
        raise RuntimeError(f"benchmark job ended {status}: {detail}")


@contextlib.asynccontextmanager
async def open_extjobs(engine: Engine, nodes: list[Node]) -> AsyncIterator[Call]:
    """One OP_TEST_DELAY job per call through the in-process engine."""
    ops = [OpTestDelay(duration=0.0, on_master=False, on_nodes=(n.name,)) for n in nodes]

    async def call(i: int) -> None:
        job = await engine.run(ops[i % len(ops)])
        _check_job(job.status.value, job.ops[0].error)

    yield call


def _bodies(nodes: list[Node]) -> list[dict[str, Any]]:
    return [
        {
            "ops": [
                {"OP_ID": "OP_TEST_DELAY", "duration": 0, "on_master": False, "on_nodes": [n.name]}
            ]
        }
        for n in nodes
    ]


@contextlib.asynccontextmanager
async def open_http(daemon: DaemonProcess) -> AsyncIterator[aiohttp.ClientSession]:
    """An HTTP client of the daemon's Unix socket: aiohttp, connections kept alive and
    reused (as many as calls in flight). httpx was the client here at first; at 32
    calls in flight its connection pool cost ~3x aiohttp's CPU per request in this
    process, which the node servers then lacked (docs/benchmarks.md)."""
    connector = aiohttp.UnixConnector(path=str(daemon.socket), limit=0)
    async with aiohttp.ClientSession(
        connector=connector,
        base_url="http://extjobs",
        timeout=aiohttp.ClientTimeout(total=120),
    ) as http:
        yield http


@contextlib.asynccontextmanager
async def open_extjobs_api(daemon: DaemonProcess, nodes: list[Node]) -> AsyncIterator[Call]:
    """One OP_TEST_DELAY job per call through the daemon's HTTP API (Unix socket)."""
    bodies = _bodies(nodes)
    async with open_http(daemon) as http:

        async def call(i: int) -> None:
            async with http.post("/v1/jobs", json=bodies[i % len(bodies)]) as answer:
                job_id = (await answer.json())["job_ids"][0]
            while True:
                # A serial beyond any entry: the answer comes when the job has ended.
                async with http.get(
                    f"/v1/jobs/{job_id}/wait", params={"since": 1 << 40, "timeout": 60}
                ) as wait:
                    job = (await wait.json())["job"]
                if job["status"] in ("success", "error", "canceled"):
                    _check_job(job["status"], job["ops"][0]["error"])
                    return

        yield call


@contextlib.asynccontextmanager
async def open_extjobs_api_oneshot(daemon: DaemonProcess, nodes: list[Node]) -> AsyncIterator[Call]:
    """One OP_TEST_DELAY job per call, submitted and awaited in one request."""
    bodies = _bodies(nodes)
    async with open_http(daemon) as http:

        async def call(i: int) -> None:
            async with http.post(
                "/v1/jobs", params={"wait": 60}, json=bodies[i % len(bodies)]
            ) as answer:
                job = (await answer.json())["jobs"][0]
            _check_job(job["status"], job["ops"][0]["error"])

        yield call


def have_openssh_client() -> bool:
    return any(
        os.access(os.path.join(d, "ssh"), os.X_OK) for d in os.environ["PATH"].split(os.pathsep)
    )
