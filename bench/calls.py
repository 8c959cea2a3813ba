"""Per-call overhead and concurrent throughput of no-op node calls, side by side.

Each contender (see :mod:`bench.contenders`) is measured in a closed loop: ``in_flight``
workers each issue calls back to back until ``n`` calls are done. Contenders are
measured in interleaved rounds (the order rotates every round), and every ratio is
taken within one round, between measurements seconds apart, and then the median over
rounds is reported: on a shared two-core machine this cancels most of the drift.
"""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel

from bench import contenders as c
from bench.infra import (
    ClientKey,
    DaemonProcess,
    Node,
    add_nodes_in_engine,
    add_nodes_via_api,
    cpu_seconds,
    current_user,
    open_engine,
)
from extjobs.model.config import DEFAULT_CIPHERS
from extjobs.model.remote import CommandResult

Opener = Callable[[], AbstractAsyncContextManager[c.Call]]

#: The ways of calling through a daemon process and its HTTP API (see bench.contenders).
API_CONTENDERS = ("extjobs_api", "extjobs_api_oneshot")
#: The process serving a contender, where it is not this one (its CPU is measured too).
SERVER_PIDS: dict[str, int] = {}


async def measure(call: c.Call, n: int, in_flight: int, *, spread: bool) -> dict[str, Any]:
    """``n`` calls with ``in_flight`` concurrent workers; worker ``w`` uses node ``w``
    (modulo the node count) when ``spread``, else every call goes to the first node."""
    latencies: list[float] = []
    remaining = n

    async def worker(w: int) -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            t0 = time.perf_counter()
            await call(w if spread else 0)
            latencies.append(time.perf_counter() - t0)

    started = time.perf_counter()
    cpu = time.process_time()
    async with anyio.create_task_group() as tg:
        for w in range(in_flight):
            tg.start_soon(worker, w)
    elapsed = time.perf_counter() - started
    cpu = time.process_time() - cpu
    latencies.sort()
    return {
        "calls": len(latencies),
        "elapsed_s": elapsed,
        "per_call_ms": elapsed / len(latencies) * 1000,
        "calls_per_s": len(latencies) / elapsed,
        # CPU of this process only (the client side; nodes and any daemon excluded).
        "cpu_ms_per_call": cpu / len(latencies) * 1000,
        "p50_ms": latencies[len(latencies) // 2] * 1000,
        "p99_ms": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000,
    }


@contextlib.asynccontextmanager
async def open_contenders(
    names: list[str], nodes: list[Node], key: ClientKey, workdir: Path
) -> AsyncIterator[dict[str, c.Call]]:
    """Open every named contender against ``nodes``; all are closed on exit."""
    user = current_user()
    async with contextlib.AsyncExitStack() as stack:
        calls: dict[str, c.Call] = {}
        for name in names:
            if name == "asyncssh":
                calls[name] = await stack.enter_async_context(c.open_asyncssh(nodes, key, user))
            elif name == "asyncssh_gcm":
                # The ciphers extjobs offers (AES-GCM first): the reference for what the
                # engine and the API add, apart from the choice of cipher.
                calls[name] = await stack.enter_async_context(
                    c.open_asyncssh(nodes, key, user, DEFAULT_CIPHERS)
                )
            elif name == "asyncssh_run":
                calls[name] = await stack.enter_async_context(c.open_asyncssh_run(nodes, key, user))
            elif name == "runner":
                calls[name] = await stack.enter_async_context(c.open_runner(nodes, key, user))
            elif name == "openssh_master":
                calls[name] = await stack.enter_async_context(
                    c.open_openssh_master(nodes, key, user, workdir)
                )
            elif name == "openssh_fresh":
                calls[name] = await stack.enter_async_context(
                    c.open_openssh_fresh(nodes, key, user, workdir)
                )
            elif name == "extjobs":
                engine = await stack.enter_async_context(open_engine(workdir / "engine", key))
                await add_nodes_in_engine(engine, nodes, user)
                calls[name] = await stack.enter_async_context(c.open_extjobs(engine, nodes))
            elif name in API_CONTENDERS:
                daemon = DaemonProcess(workdir / name, key)
                daemon.start()
                stack.callback(daemon.stop)
                await anyio.to_thread.run_sync(add_nodes_via_api, daemon, nodes, user)
                SERVER_PIDS[name] = daemon.pid
                opener = c.open_extjobs_api if name == "extjobs_api" else c.open_extjobs_api_oneshot
                calls[name] = await stack.enter_async_context(opener(daemon, nodes))
            else:
                raise ValueError(f"unknown contender {name}")
        yield calls


class NullRunner:
    """A node runner that answers every command at once: what is left is the engine."""

    async def run(self, endpoint: Any, command: Any, **_: Any) -> CommandResult:
        await anyio.lowlevel.checkpoint()
        return CommandResult(exit_status=0)

    async def aclose(self) -> None:
        pass

    def statistics(self) -> dict[str, Any]:
        return {}


def seeded(cfg: Any, nodes: int, instances: int) -> Any:
    """``cfg`` with ``nodes`` nodes (node1…) and ``instances`` stopped instances of one
    disk each (inst1…, spread over the nodes), added in one change."""
    import attrs

    from extjobs.model.cluster import Disk, Instance
    from extjobs.model.cluster import Node as ClusterNode

    added = {
        f"node{i + 1}": ClusterNode(
            name=f"node{i + 1}", host="127.0.0.1", port=22 + i, host_key="x y"
        )
        for i in range(nodes)
    }
    made = {
        f"inst{i + 1}": Instance(
            name=f"inst{i + 1}",
            primary=f"node{i % nodes + 1}",
            admin_up=False,
            uuid=f"00000000-0000-4000-8000-{i:012d}",
            disks=(
                Disk(
                    uuid=f"00000000-0000-4000-9000-{i:012d}",
                    index=0,
                    size=16,
                    provider="benchsleep",
                    access="userspace",
                ),
            ),
        )
        for i in range(instances)
    }
    return attrs.evolve(cfg, nodes={**cfg.nodes, **added}, instances={**cfg.instances, **made})


async def engine_only(
    workdir: Path, n: int, store_url: str = "", *, nodes: int = 1, instances: int = 0
) -> dict[str, Any]:
    """CPU and wall time per OP_TEST_DELAY job with a node runner that costs nothing:
    submit, queue, locks, LU, journal, store and wake-up, without any transport.
    ``store_url``: on PostgreSQL, through the group writer, as a leading master (the CPU
    is this process's, all threads; the database server's is not in it). ``nodes`` and
    ``instances``: the size of the cluster configuration the jobs run in (each job
    still runs on node1 alone): what the engine does per job must not grow with it."""
    from extjobs.model.config import Config, config_from_dict
    from extjobs.model.opcodes import OpClusterInit, OpTestDelay
    from extjobs.testing.engine import open_engine as open_kit_engine

    config = Config(state_dir=workdir)
    if store_url:
        config = config_from_dict({"store": {"url": store_url}}, state_dir=workdir)
    out: dict[str, Any] = {
        "jobs": n,
        "store": "postgresql" if store_url else "sqlite",
        "nodes": nodes,
        "instances": instances,
    }
    async with open_kit_engine(
        config,
        NullRunner(),  # type: ignore[arg-type]
        group_commit=bool(store_url),
    ) as engine:
        await engine.run(OpClusterInit(cluster_name="bench"))
        engine.configmgr.update(lambda cfg: seeded(cfg, nodes, instances))
        op = OpTestDelay(duration=0.0, on_master=False, on_nodes=("node1",))
        for _ in range(100):
            await engine.run(op)
        for label, in_flight in (("serial", 1), ("inflight32", 32)):

            async def call(_: int) -> None:
                await engine.run(op)

            row = await measure(call, n, in_flight, spread=True)
            out[f"{label}_us_per_job"] = round(row["per_call_ms"] * 1000, 1)
            out[f"{label}_cpu_us_per_job"] = round(row["cpu_ms_per_call"] * 1000, 1)
    return out


async def where_time_goes(
    call: c.Call, nodes: list[Node], n: int, server_pid: int | None = None
) -> dict[str, float | None]:
    """``n`` calls one at a time: wall time, this process's CPU, the node servers' CPU
    (each server with the commands it forked) and, for a call through a daemon process
    (``server_pid``), the daemon's CPU per call."""
    before = sum(cpu_seconds(node.process.pid) for node in nodes)
    server = cpu_seconds(server_pid) if server_pid is not None else 0.0
    row = await measure(call, n, 1, spread=False)
    after = sum(cpu_seconds(node.process.pid) for node in nodes)
    return {
        "wall_ms_per_call": round(row["per_call_ms"], 3),
        "client_cpu_ms_per_call": round(row["cpu_ms_per_call"], 3),
        "node_cpu_ms_per_call": round((after - before) / n * 1000, 3),
        "daemon_cpu_ms_per_call": None
        if server_pid is None
        else round((cpu_seconds(server_pid) - server) / n * 1000, 3),
    }


async def compare(
    calls: dict[str, c.Call],
    *,
    rounds: int,
    n: dict[str, int],
    in_flight: int,
    spread: bool,
    warmup: int = 20,
) -> dict[str, list[dict[str, Any]]]:
    """Interleaved rounds; returns every contender's per-round measurements."""
    names = list(calls)
    for name in names:
        await measure(calls[name], min(warmup, n[name]), in_flight, spread=spread)
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    for r in range(rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            results[name].append(await measure(calls[name], n[name], in_flight, spread=spread))
    return results


def ratio(results: dict[str, list[dict[str, Any]]], a: str, b: str, key: str) -> float | None:
    """Median over rounds of ``a[key] / b[key]`` measured in the same round."""
    if a not in results or b not in results:
        return None
    values = [float(x[key] / y[key]) for x, y in zip(results[a], results[b], strict=True)]
    return statistics.median(values)


def summary(results: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, float]]:
    """Median over rounds of every figure, per contender."""
    out: dict[str, dict[str, float]] = {}
    for name, rows in results.items():
        out[name] = {
            k: round(statistics.median(row[k] for row in rows), 4)
            for k in ("per_call_ms", "calls_per_s", "p50_ms", "p99_ms", "cpu_ms_per_call")
        }
    return out
