"""One way to start a cluster for the tests, the demo and the benchmarks.

:func:`open_test_cluster` starts, in a base directory (a new temporary one unless
given), one of three set-ups:

``scripted``  the engine in this event loop with a :class:`ScriptedRunner`: no process,
              no socket; an LU runs in milliseconds. The cluster is initialised and the
              nodes added through opcodes, as an operator would (``init=False``: not).
``embedded``  embedded SSH node processes, and the engine in this loop with the SSH
              runner (what the benchmarks measure without the HTTP layer).
``daemon``    embedded SSH node processes and a daemon subprocess serving the API on a
              Unix socket (the demo, the integration tests); nothing is initialised —
              the caller drives it through the API or the CLI.

For the process modes, ``providers`` name shipped providers (``providers/<name>`` in the
source tree) or are provider directories; each is copied into every node's search path
with a ``node-id`` file, before ``prepare(name, root)`` runs and the node starts.
"""

from __future__ import annotations

import contextlib
import getpass
import shutil
import tempfile
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from pathlib import Path

import anyio
import anyio.to_thread
import attrs

from extjobs.engine.metrics import Metrics
from extjobs.model.cluster import ClusterConfig
from extjobs.model.config import Config
from extjobs.model.jobs import Job
from extjobs.model.opcodes import OpClusterInit, OpCode, OpNodeAdd
from extjobs.nodes.runner import NodeRunner
from extjobs.nodes.ssh import SSHRunner
from extjobs.store.base import Store
from extjobs.testing.engine import Engine, StoreKind, open_engine
from extjobs.testing.processes import (
    ClientKey,
    DaemonProcess,
    EmbeddedNodeProcess,
    make_client_key,
    start_embedded_nodes,
    write_daemon_config,
)
from extjobs.testing.runner import FakeProvider, ScriptedRunner

MODES = ("scripted", "embedded", "daemon")
SHIPPED_PROVIDERS = Path(__file__).resolve().parents[2] / "providers"


@attrs.define
class TestCluster:
    """A started cluster; which fields are set depends on the mode (see the module doc)."""

    __test__ = False

    mode: str
    base: Path
    names: tuple[str, ...]
    #: the engine in this loop (``scripted`` and ``embedded``)
    engine: Engine | None = None
    #: the scripted runner (``scripted``)
    scripted: ScriptedRunner | None = None
    #: node processes and the master's key (``embedded`` and ``daemon``)
    nodes: list[EmbeddedNodeProcess] = attrs.field(factory=list)
    key: ClientKey | None = None
    #: the daemon process (``daemon``)
    daemon: DaemonProcess | None = None

    @property
    def runner(self) -> ScriptedRunner:
        """The scripted runner; only in ``scripted`` mode."""
        if self.scripted is None:
            raise RuntimeError(f"a {self.mode} cluster has no scripted runner")
        return self.scripted

    def _engine(self) -> Engine:
        if self.engine is None:
            raise RuntimeError("a daemon cluster runs its engine in the daemon process")
        return self.engine

    @property
    def config(self) -> ClusterConfig:
        """The engine's current cluster configuration (in-process modes)."""
        return self._engine().config

    async def run(self, *ops: OpCode) -> Job:
        """Submit one job of ``ops`` to the engine and wait until it ended."""
        return await self._engine().run(*ops)

    def submit(self, *ops: OpCode) -> int:
        return self._engine().submit(*ops)

    async def wait(self, job_id: int) -> Job:
        return await self._engine().wait(job_id)

    def node(self, name: str) -> EmbeddedNodeProcess:
        return next(n for n in self.nodes if n.name == name)


def engine_options(state_dir: Path) -> Config:
    """Options for an in-process engine: state in ``state_dir``, no diagnose caching
    (each LU asks the nodes, so what it asks is visible), no watcher (it would repair
    what a test breaks on purpose)."""
    config = Config(state_dir=state_dir)
    return attrs.evolve(
        config,
        storage=attrs.evolve(config.storage, diagnose_cache=0.0),
        watcher=attrs.evolve(config.watcher, interval=0.0),
    )


def install_providers(
    root: Path, name: str, providers: Iterable[str | Path | FakeProvider]
) -> None:
    """Copy ``providers`` (shipped names or directories) into a node's search path."""
    for provider in providers:
        if isinstance(provider, FakeProvider):
            raise TypeError("fake providers only exist in scripted mode")
        source = SHIPPED_PROVIDERS / provider if isinstance(provider, str) else provider
        dest = root / "srv" / "extjobs" / "extstorage" / source.name
        shutil.copytree(source, dest)
        (dest / "node-id").write_text(name + "\n")


async def _add_nodes(cluster: TestCluster, user: str) -> None:
    engine = cluster._engine()
    job = await engine.run(OpClusterInit(cluster_name="test"))
    if job.status.value != "success":
        raise RuntimeError(f"cluster init failed: {job.ops[0].error}")
    for name in cluster.names:
        if cluster.nodes:
            node = cluster.node(name)
            op = OpNodeAdd(
                node_name=name,
                address=node.host,
                port=node.port,
                user=user,
                host_key=node.host_key,
                search_path=(str(node.search_path),),
            )
        else:
            op = OpNodeAdd(node_name=name, accept_new_host_key=True)
        job = await engine.run(op)
        if job.status.value != "success":
            raise RuntimeError(f"node add of {name} failed: {job.ops[0].error}")


@contextlib.asynccontextmanager
async def open_test_cluster(
    nodes: int | Sequence[str] = 3,
    *,
    mode: str = "scripted",
    providers: Iterable[str | Path | FakeProvider] = ("sharedfile",),
    base: Path | None = None,
    init: bool = True,
    config: Config | None = None,
    runner: ScriptedRunner | None = None,
    prepare: Callable[[str, Path], None] | None = None,
    node_logs: bool = True,
    daemon_config: Callable[[Path, ClientKey], Path] | None = None,
    daemon_log: Path | None = None,
    daemon_log_level: str = "info",
    store: StoreKind | Store = "memory",
    group_commit: bool = False,
    metrics: Metrics | None = None,
) -> AsyncIterator[TestCluster]:
    """A cluster of ``nodes`` (a count: ``node1``…; or names) in ``mode``; everything
    it started is stopped on exit, and a temporary base directory removed.

    ``config``: the in-process engine's options (default :func:`engine_options`; its
    ``state_dir`` is replaced by ``<base>/state``). ``runner``: a scripted runner to use
    instead of a new one over ``providers``. ``daemon_config(base, key)`` writes the
    daemon's configuration file and returns its path (default: a socket in
    ``<base>/run``, state in ``<base>/state``, connect timeout 5 s). ``store``: where
    the scripted mode's engine keeps its state (``"config"``: the store ``config`` names,
    as :func:`~extjobs.testing.engine.build_engine` says; or a store to use);
    ``group_commit``: the engine writes through a group writer (``store="config"``);
    ``metrics``: the scripted mode's engine is measured there.
    """
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; expected one of {', '.join(MODES)}")
    names = tuple(f"node{i + 1}" for i in range(nodes)) if isinstance(nodes, int) else tuple(nodes)
    async with contextlib.AsyncExitStack() as stack:
        if base is None:
            base = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="extjobs-")))
        providers = tuple(providers)
        options = attrs.evolve(config or engine_options(base / "state"), state_dir=base / "state")
        if mode == "scripted":
            scripted = runner or ScriptedRunner(p for p in providers if not isinstance(p, Path))
            async with open_engine(
                options, scripted, store=store, group_commit=group_commit, metrics=metrics
            ) as engine:
                cluster = TestCluster(mode, base, names, engine=engine, scripted=scripted)
                if init:
                    await _add_nodes(cluster, "root")
                yield cluster
            return

        key = make_client_key(base / "master")

        def prepare_node(name: str, root: Path) -> None:
            install_providers(root, name, providers)
            if prepare is not None:
                prepare(name, root)

        started = start_embedded_nodes(
            names, base / "nodes", key.authorized_keys, logs=node_logs, prepare=prepare_node
        )
        node_list = await anyio.to_thread.run_sync(started.__enter__)

        async def stop_nodes() -> None:
            await anyio.to_thread.run_sync(started.__exit__, None, None, None)

        stack.push_async_callback(stop_nodes)
        cluster = TestCluster(mode, base, names, nodes=node_list, key=key)
        if mode == "embedded":
            ssh = attrs.evolve(options.ssh, identity_file=str(key.private_key))
            ssh_runner: NodeRunner = SSHRunner(ssh, output_cap=options.storage.output_cap)
            async with open_engine(attrs.evolve(options, ssh=ssh), ssh_runner) as engine:
                cluster.engine = engine
                if init:
                    await _add_nodes(cluster, getpass.getuser())
                yield cluster
            return

        socket = base / "run" / "api.sock"
        if daemon_config is not None:
            config_file = daemon_config(base, key)
        else:
            config_file = base / "extjobs.toml"
            write_daemon_config(
                config_file,
                state_dir=base / "state",
                socket=socket,
                identity_file=key.private_key,
            )
        daemon = DaemonProcess(config_file, socket, log=daemon_log, log_level=daemon_log_level)
        cluster.daemon = daemon

        async def stop_daemon() -> None:
            await anyio.to_thread.run_sync(daemon.stop)

        stack.push_async_callback(stop_daemon)
        await anyio.to_thread.run_sync(daemon.start)
        yield cluster
