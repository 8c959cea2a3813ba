"""A thousand nodes from one master (the full run; the quick run uses 64).

All nodes are embedded SSH nodes served by **one** process
(:class:`extjobs.testing.EmbeddedNodeGroup`: each node its own port, host key and
root); a daemon process drives them through its API, as operators do. Measured:

* ``node_add_s``: cluster init, then one ``OP_NODE_ADD`` job per node in one batch,
  each with the node's host key given (pinned), until the last has ended;
* ``rss_mb_per_node``: the daemon's resident memory once every node is connected
  (after a diagnose of all of them), minus its resident memory before the first node
  add, divided by the node count (target ≤ 0.2 MiB);
* ``diagnose_s``: one ``OP_EXTSTORAGE_DIAGNOSE`` over every node, submit to end
  (target ≤ 5 s);
* ``add_ratio``: one instance add per node (one disk, ``start: false``) on the
  ``benchsleep1`` provider, whose every script sleeps 1 s, with ``max_running = 256``:
  wall time (first submit to last add ended) over the critical-path ideal
  ``ceil(adds / 256) * 7 steps * 1 s`` (target ≤ 1.3);
* ``node_list_ms_p50`` / ``instance_list_ms_p50``: ``GET /v1/nodes`` and
  ``GET /v1/instances`` through the API client, with four instances per node (target
  ≤ 50 ms). The adds above make one per node; the other three per node are written
  into the store's configuration while the daemon is stopped (the same objects an add
  records), and the daemon is started again on it.
"""

from __future__ import annotations

import math
import statistics
import time
from pathlib import Path
from typing import Any

import attrs

from bench.infra import (
    ClientKey,
    DaemonProcess,
    add_nodes_via_api,
    cpu_seconds,
    current_user,
    install_provider,
    peak_rss_mb,
    rss_mb,
)
from bench.scale import STEPS_PER_ADD, instance_opcode, provider_scripts
from extjobs.testing.processes import EmbeddedNodeGroup, ServedNode

PROVIDER = "benchsleep1"
STEP_SLEEP = 1.0
MAX_RUNNING = 256


def _install(nodes: list[ServedNode]) -> None:
    for node in nodes:
        volumes = node.root / "volumes"
        volumes.mkdir(parents=True, exist_ok=True)
        scripts = {
            name: text.replace("sleep 0.1", f"sleep {STEP_SLEEP:g}")
            for name, text in provider_scripts(volumes).items()
        }
        install_provider(node, PROVIDER, scripts)  # type: ignore[arg-type]


def seed_instances(daemon: DaemonProcess, nodes: int, first: int, count: int) -> None:
    """Write ``count`` stopped instances (inst<first>…, one disk each, spread over the
    nodes) into the configuration of the daemon's store; the daemon must be stopped."""
    from extjobs.engine.configmgr import ConfigManager
    from extjobs.model.cluster import Disk, Instance
    from extjobs.model.config import load_config
    from extjobs.store import open_store

    config = load_config(daemon.config)
    store = open_store(config)
    try:
        made = {}
        for i in range(first, first + count):
            made[f"inst{i}"] = Instance(
                name=f"inst{i}",
                primary=f"node{(i - 1) % nodes + 1}",
                admin_up=False,
                uuid=f"00000000-0000-4000-8000-{i:012d}",
                disks=(
                    Disk(
                        uuid=f"00000000-0000-4000-9000-{i:012d}",
                        index=0,
                        size=16,
                        provider=PROVIDER,
                        access="userspace",
                    ),
                ),
            )
        ConfigManager(store).update(
            lambda cfg: attrs.evolve(cfg, instances={**cfg.instances, **made})
        )
    finally:
        store.close()


def _latency_ms(call: Any, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t = time.perf_counter()
        call()
        out.append((time.perf_counter() - t) * 1000)
    return out


def run_thousand_bench(
    workdir: Path, key: ClientKey, *, nodes: int, sections: str = ""
) -> dict[str, Any]:
    """One run; ``sections``: further sections of the daemon's configuration (a longer
    ``[storage] diagnose_cache``, to compare)."""
    op_id = instance_opcode()
    assert op_id is not None
    group = EmbeddedNodeGroup(workdir / "nodes", nodes, key.authorized_keys)
    started = group.start(timeout=60 + nodes / 5)
    try:
        node_server_rss = rss_mb(group.pid)
        _install(started)
        daemon = DaemonProcess(
            workdir / "daemon", key, queue=f"max_running = {MAX_RUNNING}\n{sections}"
        )
        client = daemon.start()
        try:
            base_rss = rss_mb(daemon.pid)
            t = time.perf_counter()
            add_nodes_via_api(daemon, started, current_user())
            node_add_s = time.perf_counter() - t

            t = time.perf_counter()
            job = daemon.run_job(
                [{"OP_ID": "OP_EXTSTORAGE_DIAGNOSE", "providers": [PROVIDER]}], timeout=600
            )
            diagnose_s = time.perf_counter() - t
            if job["status"] != "success":
                raise RuntimeError(f"diagnose failed: {job}")
            connected_rss = rss_mb(daemon.pid)
            connections = sum(client.info()["statistics"]["runner"].get("connections", {}).values())

            jobs = [
                {
                    "ops": [
                        {
                            "OP_ID": op_id,
                            "instance_name": f"inst{i + 1}",
                            "pnode": started[i % nodes].name,
                            "disks": [{"size": 16, "provider": PROVIDER, "access": "userspace"}],
                            "start": False,
                        }
                    ]
                }
                for i in range(nodes)
            ]
            daemon_cpu = cpu_seconds(daemon.pid)
            nodes_cpu = cpu_seconds(group.pid)
            t0 = time.time()
            ids = client.submit({"jobs": jobs})
            for job_id in reversed(ids):
                daemon.wait(job_id, timeout=1800)
            daemon_cpu = cpu_seconds(daemon.pid) - daemon_cpu
            nodes_cpu = cpu_seconds(group.pid) - nodes_cpu
            listed = {j["id"]: j for j in client.jobs()}
            stats = client.info()["statistics"]
            commands = stats["runner"].get("commands_run")
            # The shared diagnoses: how many, renewals among them, how long they took.
            memo = stats.get("memo", {})
            first_error = None
            for job_id in ids:
                if listed[job_id]["status"] != "success":
                    first_error = str(client.job(job_id)["ops"][0]["error"])[:300]
                    break
            peak = peak_rss_mb(daemon.pid)
        finally:
            daemon.stop()
        done = [listed[i] for i in ids]
        # Recorded, not raised: a run whose adds partly failed (a diagnose of every node
        # timing out on a saturated machine) still says what it measured.
        failed = [j["id"] for j in done if j["status"] != "success"]
        wall = max(j["ended"] for j in done) - t0
        ideal = math.ceil(nodes / MAX_RUNNING) * STEPS_PER_ADD * STEP_SLEEP

        # Four instances per node: the rest, written while the daemon is stopped.
        made = len(done) - len(failed)
        seed_instances(daemon, nodes, nodes + 1, 4 * nodes - made)
        client = daemon.start()
        try:
            assert len(client.instances()) == 4 * nodes
            assert len(client.nodes()) == nodes
            node_list: list[float] = []
            instance_list: list[float] = []
            for _ in range(10):
                node_list += _latency_ms(client.nodes, 2)
                instance_list += _latency_ms(client.instances, 2)
        finally:
            daemon.stop()
    finally:
        group.stop()
    return {
        "nodes": nodes,
        "instances_listed": 4 * nodes,
        "node_server_rss_mb": round(node_server_rss, 1),
        "node_add_s": round(node_add_s, 2),
        "daemon_base_rss_mb": round(base_rss, 1),
        "daemon_connected_rss_mb": round(connected_rss, 1),
        "daemon_peak_rss_mb": round(peak, 1),
        "connections": connections,
        "rss_mb_per_node": round((connected_rss - base_rss) / nodes, 3),
        "diagnose_s": round(diagnose_s, 2),
        "adds": nodes,
        "adds_failed": len(failed),
        "commands_run": commands,
        "memo": memo,
        "first_error": first_error,
        "max_running": MAX_RUNNING,
        "step_s": STEP_SLEEP,
        "add_wall_s": round(wall, 2),
        "add_ideal_s": round(ideal, 2),
        "add_ratio": round(wall / ideal, 3),
        "daemon_cpu_s": round(daemon_cpu, 2),
        "nodes_cpu_s": round(nodes_cpu, 2),
        "node_list_ms_p50": round(statistics.median(node_list), 1),
        "instance_list_ms_p50": round(statistics.median(instance_list), 1),
        "node_list_ms_max": round(max(node_list), 1),
        "instance_list_ms_max": round(max(instance_list), 1),
    }
