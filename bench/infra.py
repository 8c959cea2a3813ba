"""What the benchmarks run against: SSH nodes, a daemon process, an in-process engine.

* :func:`start_embedded_nodes` starts ``python -m extjobs.nodes.embedded`` processes,
  one per node, exactly as the demo and the tests do; all of them start in parallel.
* :class:`DaemonProcess` runs ``python -m extjobs daemon`` and talks to it through the
  HTTP API client, as operators do.
* :func:`open_engine` runs the engine (store, queue, SSH runner) inside the benchmark's
  own event loop, for measurements that should not include the HTTP layer.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio
import attrs

from extjobs.api.client import Client
from extjobs.engine.configmgr import ConfigManager
from extjobs.engine.queue import JobQueue
from extjobs.engine.store import SqliteStore
from extjobs.model.config import Config, QueueOptions, SSHOptions
from extjobs.model.jobs import Job
from extjobs.model.opcodes import OpClusterInit, OpCode, OpNodeAdd
from extjobs.model.remote import Endpoint
from extjobs.model.requests import JobRequest
from extjobs.nodes.keys import generate_client_key
from extjobs.nodes.ssh import SSHRunner

REPO = Path(__file__).resolve().parents[1]


@attrs.frozen
class ClientKey:
    private_key: Path
    public_line: str
    authorized_keys: Path


def make_key(directory: Path) -> ClientKey:
    private = directory / "id_ed25519"
    public = generate_client_key(private)
    authorized = directory / "authorized_keys"
    authorized.write_text(public + "\n")
    return ClientKey(private, public, authorized)


@attrs.define
class Node:
    """One running SSH node on loopback."""

    name: str
    root: Path
    port: int
    host_key: str
    process: subprocess.Popen[bytes]
    host: str = "127.0.0.1"

    def endpoint(self, user: str) -> Endpoint:
        return Endpoint(self.name, self.host, self.port, user, self.host_key)

    @property
    def search_path(self) -> Path:
        return self.root / "srv" / "extjobs" / "extstorage"


def _read_ready(proc: subprocess.Popen[bytes], deadline: float) -> bytes:
    assert proc.stdout is not None
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        if not sel.select(max(0.0, deadline - time.monotonic())):
            return b""
    return proc.stdout.readline()


@contextlib.contextmanager
def start_embedded_nodes(n: int, base: Path, key: ClientKey) -> Iterator[list[Node]]:
    """``n`` embedded SSH nodes named node1…nodeN, started in parallel, stopped on exit."""
    procs: list[tuple[str, Path, subprocess.Popen[bytes]]] = []
    try:
        for i in range(n):
            name = f"node{i + 1}"
            root = base / name
            root.mkdir(parents=True, exist_ok=True)
            log = (root / "node.log").open("ab")
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "extjobs.nodes.embedded",
                    "--root",
                    str(root),
                    "--port",
                    "0",
                    "--authorized-keys",
                    str(key.authorized_keys),
                ],
                stdout=subprocess.PIPE,
                stderr=log,
                stdin=subprocess.DEVNULL,
            )
            log.close()
            procs.append((name, root, proc))
        deadline = time.monotonic() + 60 + n
        nodes = []
        for name, root, proc in procs:
            line = _read_ready(proc, deadline)
            if not line.startswith(b"listening "):
                raise RuntimeError(f"embedded node {name} did not start; see {root}/node.log")
            pub = (root / "etc" / "ssh_host_ed25519_key.pub").read_text().split()
            nodes.append(Node(name, root, int(line.split()[1]), " ".join(pub[:2]), proc))
        yield nodes
    finally:
        for _, _, proc in procs:
            if proc.poll() is None:
                proc.terminate()
        for _, _, proc in procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()


def install_provider(node: Node, name: str, files: dict[str, str]) -> None:
    """Write a provider directory of executable shell scripts on ``node``."""
    target = node.search_path / name
    target.mkdir(parents=True, exist_ok=True)
    for filename, text in files.items():
        path = target / filename
        path.write_text(text)
        path.chmod(0o755 if filename != "parameters.list" else 0o644)


# -- a daemon process -----------------------------------------------------------------


class DaemonProcess:
    """``python -m extjobs daemon`` with its own state directory and a client."""

    def __init__(
        self,
        base: Path,
        key: ClientKey,
        *,
        queue: str = "",
        ssh: str = "",
        profile: Path | None = None,
    ) -> None:
        self.base = base
        #: With a path, the daemon runs under pyinstrument, which saves its session there
        #: (``pyinstrument --load=PATH`` renders it) when the daemon exits.
        self.profile = profile
        self.socket = base / "run" / "api.sock"
        self.config = base / "extjobs.toml"
        (base / "run").mkdir(parents=True, exist_ok=True, mode=0o700)
        self.config.write_text(
            f'[daemon]\nstate_dir = "{base / "state"}"\nsocket = "{self.socket}"\n'
            f'[ssh]\nidentity_file = "{key.private_key}"\nconnect_timeout = 10.0\n{ssh}\n'
            f"[queue]\n{queue}\n"
        )
        self.log = base / "daemon.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.client: Client | None = None

    def start(self, timeout: float = 30.0) -> Client:
        out = self.log.open("ab")
        profiler = (
            ["-m", "pyinstrument", "-r", "pyisession", "-o", str(self.profile)]
            if self.profile is not None
            else []
        )
        self.process = subprocess.Popen(
            [
                sys.executable,
                *profiler,
                "-m",
                "extjobs",
                "daemon",
                "--config",
                str(self.config),
                "--log-level",
                "warning",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=REPO,
        )
        out.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.socket.exists():
                client = Client(self.socket, timeout=120)
                try:
                    client.info()
                except Exception:  # noqa: BLE001 - not answering yet
                    client.close()
                else:
                    self.client = client
                    return client
            if self.process.poll() is not None:
                raise RuntimeError(f"daemon exited at start-up:\n{self.log.read_text()[-3000:]}")
            time.sleep(0.05)
        raise RuntimeError(f"daemon did not start:\n{self.log.read_text()[-3000:]}")

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def stop(self) -> None:
        if self.client is not None:
            self.client.close()
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def run_job(self, ops: list[dict[str, Any]], timeout: float = 300.0) -> dict[str, Any]:
        assert self.client is not None
        job_id = self.client.submit({"ops": ops})[0]
        return self.wait(job_id, timeout)

    def wait(self, job_id: int, timeout: float = 300.0) -> dict[str, Any]:
        """Wait for the job to end: ``since`` beyond any serial returns only at the end."""
        assert self.client is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            answer = self.client.wait(job_id, since=1 << 40, timeout=min(60.0, timeout))
            if answer["job"]["status"] in ("success", "error", "canceled"):
                return dict(answer["job"])
        raise TimeoutError(f"job {job_id} did not end within {timeout}s")


def add_nodes_via_api(
    daemon: DaemonProcess, nodes: list[Node], user: str, *, group_size: int = 0
) -> None:
    """Initialise the cluster and add ``nodes``; with ``group_size``, node ``i`` goes to
    group ``g<i // group_size>`` (otherwise all stay in the default group)."""
    job = daemon.run_job([{"OP_ID": "OP_CLUSTER_INIT", "cluster_name": "bench"}])
    if job["status"] != "success":
        raise RuntimeError(f"cluster init failed: {job}")
    assert daemon.client is not None
    groups = sorted({i // group_size for i in range(len(nodes))}) if group_size else []
    for g in groups:
        job = daemon.run_job([{"OP_ID": "OP_GROUP_ADD", "group_name": f"g{g}"}])
        if job["status"] != "success":
            raise RuntimeError(f"group add failed: {job}")
    ops = [
        {
            "OP_ID": "OP_NODE_ADD",
            "node_name": node.name,
            "address": node.host,
            "port": node.port,
            "user": user,
            "host_key": node.host_key,
            "search_path": [str(node.search_path)],
            **({"group": f"g{i // group_size}"} if group_size else {}),
        }
        for i, node in enumerate(nodes)
    ]
    # One job per node, all in one batch.
    ids = daemon.client.submit({"jobs": [{"ops": [op]} for op in ops]})
    for job_id in ids:
        job = daemon.wait(job_id)
        if job["status"] != "success":
            raise RuntimeError(f"node add failed: {job}")


# -- the engine in this process ---------------------------------------------------------


class Engine:
    """The daemon's engine without its HTTP layer, driven from the benchmark's loop."""

    def __init__(self, queue: JobQueue) -> None:
        self.queue = queue

    async def run(self, *ops: OpCode) -> Job:
        """Submit one job and wait until it has ended; returns the final job."""
        (job_id,) = self.queue.submit([JobRequest(ops=ops)])
        return await self.wait(job_id)

    async def wait(self, job_id: int) -> Job:
        while True:
            job, _ = await self.queue.wait_for_change(job_id, 1 << 40, 60.0)
            if job.status.finalized:
                return job


@contextlib.asynccontextmanager
async def open_engine(
    state_dir: Path,
    key: ClientKey,
    *,
    max_running: int = 32,
    ssh: SSHOptions | None = None,
) -> AsyncIterator[Engine]:
    """Store, runner and queue in this process, as ``serve_daemon`` composes them."""
    await anyio.Path(state_dir).mkdir(parents=True, exist_ok=True)
    config = Config(
        state_dir=state_dir,
        ssh=ssh or SSHOptions(identity_file=str(key.private_key)),
        queue=QueueOptions(max_running=max_running),
    )
    store = SqliteStore(config.db_path)
    runner = SSHRunner(config.ssh, output_cap=config.storage.output_cap)
    queue = JobQueue(store, ConfigManager(store), runner, config)
    try:
        async with anyio.create_task_group() as tg:
            await tg.start(queue.serve)
            yield Engine(queue)
            tg.cancel_scope.cancel()
    finally:
        with anyio.move_on_after(5, shield=True):
            await runner.aclose()
        store.close()


async def add_nodes_in_engine(engine: Engine, nodes: list[Node], user: str) -> None:
    job = await engine.run(OpClusterInit(cluster_name="bench"))
    if job.status.value != "success":
        raise RuntimeError(f"cluster init failed: {job}")
    for node in nodes:
        job = await engine.run(
            OpNodeAdd(
                node_name=node.name,
                address=node.host,
                port=node.port,
                user=user,
                host_key=node.host_key,
                search_path=(str(node.search_path),),
            )
        )
        if job.status.value != "success":
            raise RuntimeError(f"node add failed: {job}")


def current_user() -> str:
    import pwd

    return pwd.getpwuid(os.getuid()).pw_name


def rss_mb(pid: int) -> float:
    """Resident set size of ``pid`` in MiB (from /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def cpu_seconds(pid: int) -> float:
    """User + system CPU of ``pid`` and its waited-for children (from /proc)."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2 :].split()
    ticks = sum(int(f) for f in fields[11:15])  # utime stime cutime cstime
    return ticks / os.sysconf("SC_CLK_TCK")


def peak_rss_mb(pid: int) -> float:
    """Peak resident set size (VmHWM) of ``pid`` in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0
