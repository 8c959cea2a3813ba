"""Scale: many embedded nodes, many instance adds, provider steps that sleep 100 ms.

A daemon process drives ``nodes`` embedded SSH nodes (one process each). Every node
has the ``benchsleep`` provider, whose every script sleeps 100 ms (``attach`` then
prints a userspace path). ``instances`` instance adds with one disk each are submitted
in one batch, spread evenly over the nodes, and are created without starting a guest
(``start: false``), so every step on an add's critical path is a provider step:
``verify → create → attach → open → setinfo``, 0.5 s, plus the provider diagnose on
every online node of the primary's group that the add runs first (DESIGN §4).

Figures:

* ``scale_ratio``: wall time (first submit to last job ended) over the critical-path
  ideal, ``ceil(instances / max_running) * 0.5 s``: the queue runs at most
  ``max_running`` jobs at once, adds of different instances share no exclusive lock,
  and an ideal engine, transport and node would add nothing to the provider sleeps;
* ``rss_mb_per_node``: the daemon's peak resident memory once every node is connected,
  minus its resident memory before any node was added, divided by the node count;
  ``daemon_peak_rss_mb`` is the peak itself.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

from bench.infra import (
    ClientKey,
    DaemonProcess,
    Node,
    add_nodes_via_api,
    current_user,
    install_provider,
    peak_rss_mb,
    rss_mb,
    start_embedded_nodes,
)
from extjobs.model.opcodes import OPCODES

PROVIDER = "benchsleep"
STEP_SLEEP = 0.1
#: verify, create, attach, open, setinfo: the provider steps of one add, in sequence.
STEPS_PER_ADD = 5


def instance_opcode() -> str | None:
    """The OP_ID of the instance add opcode, if this tree has one."""
    for op_id in ("OP_INSTANCE_ADD", "OP_INSTANCE_CREATE"):
        if op_id in OPCODES:
            return op_id
    return None


def provider_scripts(volumes: Path) -> dict[str, str]:
    sleep = f"#!/bin/sh\nexec sleep {STEP_SLEEP:g}\n"
    scripts = dict.fromkeys(
        ("create", "remove", "grow", "detach", "setinfo", "verify", "open", "close"), sleep
    )
    # Userspace only: an empty first line, then the fake hypervisor's path.
    scripts["attach"] = (
        f'#!/bin/sh\nsleep {STEP_SLEEP:g}\n: >>{volumes}/"$VOL_NAME"\n'
        f"printf '\\nfake:%s\\n' {volumes}/\"$VOL_NAME\"\n"
    )
    scripts["parameters.list"] = ""
    return scripts


def _install(nodes: list[Node]) -> None:
    for node in nodes:
        volumes = node.root / "volumes"
        volumes.mkdir(parents=True, exist_ok=True)
        install_provider(node, PROVIDER, provider_scripts(volumes))


def run_scale_bench(
    workdir: Path,
    key: ClientKey,
    *,
    nodes: int,
    instances: int,
    max_running: int = 32,
    group_size: int = 0,
) -> dict[str, Any]:
    """One scale run; ``group_size`` 0 keeps every node in the default group."""
    op_id = instance_opcode()
    if op_id is None:
        return {
            "scale_ratio": None,
            "rss_mb_per_node": None,
            "note": "pending: no instance add opcode in this tree",
        }
    with start_embedded_nodes(nodes, workdir / "nodes", key) as started:
        _install(started)
        daemon = DaemonProcess(workdir / "daemon", key, queue=f"max_running = {max_running}")
        client = daemon.start()
        try:
            base_rss = rss_mb(daemon.pid)
            t = time.perf_counter()
            add_nodes_via_api(daemon, started, current_user(), group_size=group_size)
            add_s = time.perf_counter() - t
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
                for i in range(instances)
            ]
            t0 = time.time()
            ids = client.submit({"jobs": jobs})
            for job_id in reversed(ids):
                daemon.wait(job_id, timeout=900)
            listed = {j["id"]: j for j in client.jobs()}
            peak = peak_rss_mb(daemon.pid)
            stats = client.info()["statistics"]["runner"]
        finally:
            daemon.stop()
    done = [listed[i] for i in ids]
    failed = [j for j in done if j["status"] != "success"]
    if failed:
        raise RuntimeError(f"scale benchmark: {len(failed)} adds failed, e.g. {failed[:2]}")
    wall = max(j["ended"] for j in done) - t0
    ideal = math.ceil(instances / max_running) * STEPS_PER_ADD * STEP_SLEEP
    connected = sum(stats.get("connections", {}).values())
    return {
        "nodes": nodes,
        "instances": instances,
        "max_running": max_running,
        "group_size": group_size or nodes,
        "opcode": op_id,
        "wall_s": round(wall, 3),
        "ideal_s": round(ideal, 3),
        "scale_ratio": round(wall / ideal, 3),
        "node_add_s": round(add_s, 3),
        "daemon_base_rss_mb": round(base_rss, 1),
        "daemon_peak_rss_mb": round(peak, 1),
        "connections": connected,
        "rss_mb_per_node": round((peak - base_rss) / nodes, 3),
        "commands_run": stats.get("commands_run"),
    }
