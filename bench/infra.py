"""What the benchmarks run against: SSH nodes, a daemon process, an in-process engine.

All three are started by the test kit (:mod:`extjobs.testing`), exactly as the demo and
the tests start them:

* :func:`start_embedded_nodes` starts ``python -m extjobs.nodes.embedded`` processes,
  one per node, all of them in parallel.
* :class:`DaemonProcess` runs ``python -m extjobs daemon`` and talks to it through the
  HTTP API client, as operators do.
* :func:`open_engine` runs the engine (store, queue, SSH runner) inside the benchmark's
  own event loop, for measurements that should not include the HTTP layer.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

from extjobs.api.client import Client
from extjobs.model.config import Config, QueueOptions, SSHOptions
from extjobs.model.opcodes import OpClusterInit, OpNodeAdd
from extjobs.nodes.ssh import SSHRunner
from extjobs.testing import engine as kit_engine
from extjobs.testing import processes as kit
from extjobs.testing.engine import Engine

REPO = Path(__file__).resolve().parents[1]

ClientKey = kit.ClientKey
#: One running SSH node on loopback (name, root, host, port, host_key, process).
Node = kit.EmbeddedNodeProcess
make_key = kit.make_client_key

__all__ = ["ClientKey", "DaemonProcess", "Engine", "Node", "make_key", "start_embedded_nodes"]


@contextlib.contextmanager
def start_embedded_nodes(n: int, base: Path, key: ClientKey) -> Iterator[list[Node]]:
    """``n`` embedded SSH nodes named node1…nodeN, started in parallel, stopped on exit."""
    names = [f"node{i + 1}" for i in range(n)]
    with kit.start_embedded_nodes(names, base, key.authorized_keys, timeout=60) as nodes:
        yield nodes


def install_provider(node: Node, name: str, files: dict[str, str]) -> None:
    """Write a provider directory of executable shell scripts on ``node``."""
    target = node.search_path / name
    target.mkdir(parents=True, exist_ok=True)
    for filename, text in files.items():
        path = target / filename
        path.write_text(text)
        path.chmod(0o755 if filename != "parameters.list" else 0o644)


# -- a daemon process -----------------------------------------------------------------


class DaemonProcess(kit.DaemonProcess):
    """``python -m extjobs daemon`` with its own state directory and a client."""

    def __init__(
        self,
        base: Path,
        key: ClientKey,
        *,
        queue: str = "",
        ssh: str = "",
        profile: Path | None = None,
        store_url: str = "",
        master_name: str = "bench",
    ) -> None:
        self.base = base
        #: With a path, the daemon runs under pyinstrument, which saves its session there
        #: (``pyinstrument --load=PATH`` renders it) when the daemon exits.
        self.profile = profile
        (base / "run").mkdir(parents=True, exist_ok=True, mode=0o700)
        config = base / "extjobs.toml"
        kit.write_daemon_config(
            config,
            state_dir=base / "state",
            socket=base / "run" / "api.sock",
            identity_file=key.private_key,
            ssh=f"connect_timeout = 10.0\n{ssh}\n",
            extra=f"[queue]\n{queue}\n"
            + (
                f'[store]\nurl = "{store_url}"\nmaster_name = "{master_name}"\n'
                if store_url
                else ""
            ),
        )
        profiler = (
            ["-m", "pyinstrument", "-r", "pyisession", "-o", str(profile)]
            if profile is not None
            else []
        )
        super().__init__(
            config,
            base / "run" / "api.sock",
            log=base / "daemon.log",
            log_level="warning",
            cwd=REPO,
            python_args=profiler,
        )
        self.client: Client | None = None

    def start(self, timeout: float = 30.0) -> Client:  # type: ignore[override]
        super().start(timeout)
        self.client = Client(self.socket, timeout=120)
        return self.client

    def stop(self, timeout: float = 20.0) -> None:
        if self.client is not None:
            self.client.close()
        super().stop(timeout)

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


@contextlib.asynccontextmanager
async def open_engine(
    state_dir: Path,
    key: ClientKey,
    *,
    max_running: int = 32,
    ssh: SSHOptions | None = None,
) -> AsyncIterator[Engine]:
    """Store, SSH runner and queue in this process, as ``serve_daemon`` composes them."""
    config = Config(
        state_dir=state_dir,
        ssh=ssh or SSHOptions(identity_file=str(key.private_key)),
        queue=QueueOptions(max_running=max_running),
    )
    runner = SSHRunner(config.ssh, output_cap=config.storage.output_cap)
    async with kit_engine.open_engine(config, runner) as engine:
        yield engine


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
