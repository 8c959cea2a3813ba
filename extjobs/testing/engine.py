"""The engine in the caller's event loop: the one place the kit builds engine objects.

:func:`build_engine` is the only function of the kit that constructs the store, the
configuration manager and the queue; everything else goes through :class:`Engine`.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Literal

import anyio

from extjobs.engine.configmgr import ConfigManager
from extjobs.engine.metrics import Metrics
from extjobs.engine.queue import JobQueue
from extjobs.engine.writer import GroupWriter
from extjobs.model.cluster import ClusterConfig
from extjobs.model.config import Config
from extjobs.model.jobs import Job, LogEntry
from extjobs.model.opcodes import OpCode
from extjobs.model.requests import JobRequest
from extjobs.nodes.runner import NodeRunner
from extjobs.store import open_store
from extjobs.store.base import Store
from extjobs.store.memory import MemoryStore

#: Where the kit's engine keeps its state: the store ``config`` names, as the daemon
#: opens it (SQLite in the state directory unless ``[store] url`` is set), or memory
#: (fastest).
StoreKind = Literal["config", "memory"]


def build_engine(
    config: Config,
    runner: NodeRunner,
    *,
    store: StoreKind | Store = "config",
    group_commit: bool = False,
    metrics: Metrics | None = None,
) -> tuple[JobQueue, ConfigManager, Callable[[], None]]:
    """A queue driving ``runner`` over a store — the one ``config`` names (SQLite in
    ``config.state_dir``, which must exist, or PostgreSQL), memory, or the one given —
    composed as ``serve_daemon`` composes it, its configuration manager, and the
    function that closes the store. ``group_commit``: write through a
    :class:`~extjobs.engine.writer.GroupWriter` on a second handle of the store
    ``config`` names (as a leading master on PostgreSQL does). ``metrics``: measured
    there, as the daemon's are (and watching this queue)."""
    backend: Store
    if store == "memory":
        backend = MemoryStore()
    elif store == "config":
        backend = open_store(config)
    else:
        assert not isinstance(store, str)
        backend = store
    writer = None
    if group_commit:
        if store != "config":
            raise ValueError("group_commit needs the store the configuration names")
        writer = GroupWriter(open_store(config))
    configmgr = ConfigManager(backend, writer)
    queue = JobQueue(backend, configmgr, runner, config, writer=writer, metrics=metrics)
    if metrics is not None:
        metrics.watch(lambda: queue)
    return queue, configmgr, backend.close


class Engine:
    """A running queue, driven from the caller's loop (see :func:`open_engine`)."""

    def __init__(self, queue: JobQueue, configmgr: ConfigManager) -> None:
        self.queue = queue
        #: Changes the configuration directly (set-up of benchmarks and tests).
        self.configmgr = configmgr

    @property
    def config(self) -> ClusterConfig:
        """The current cluster configuration."""
        return self.queue.config

    def submit(self, *ops: OpCode, priority: int = 0) -> int:
        """Queue one job of ``ops``; its id."""
        (job_id,) = self.queue.submit([JobRequest(ops=ops, priority=priority)])
        return job_id

    async def run(self, *ops: OpCode, priority: int = 0) -> Job:
        """Submit one job and wait until it has ended; the final job."""
        return await self.wait(self.submit(*ops, priority=priority))

    async def wait(self, job_id: int, timeout: float | None = None) -> Job:
        """The job once it has ended; raises TimeoutError after ``timeout`` seconds."""
        with anyio.fail_after(timeout):
            # Submitted jobs are shown once they are in the store.
            await self.queue.flush()
            while True:
                job, _ = await self.queue.wait_for_change(job_id, 1 << 40, 60.0)
                if job.status.finalized:
                    return job

    def log(self, job_id: int) -> list[LogEntry]:
        """The job's log, oldest first."""
        return self.queue.log_since(job_id)


@contextlib.asynccontextmanager
async def open_engine(
    config: Config,
    runner: NodeRunner,
    *,
    store: StoreKind | Store = "config",
    group_commit: bool = False,
    metrics: Metrics | None = None,
) -> AsyncIterator[Engine]:
    """The queue serving in a task group of this loop; on exit it is cancelled, the
    runner closed (bounded) and the store closed. ``config.state_dir`` is created."""
    await anyio.Path(config.state_dir).mkdir(parents=True, exist_ok=True)
    queue, configmgr, close_store = build_engine(
        config, runner, store=store, group_commit=group_commit, metrics=metrics
    )
    try:
        async with anyio.create_task_group() as tg:
            await tg.start(queue.serve)
            yield Engine(queue, configmgr)
            tg.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        # The caller's own error (a failed assertion) comes out as itself, not wrapped
        # in the group of the task group that ran the queue around it.
        if len(group.exceptions) == 1:
            raise group.exceptions[0] from None
        raise
    finally:
        with anyio.move_on_after(5, shield=True):
            await runner.aclose()
        close_store()
