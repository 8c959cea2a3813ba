"""Scale: many embedded nodes, many instance adds, provider steps that sleep 100 ms.

A daemon process drives ``nodes`` embedded SSH nodes (one process each). Every node
has the ``benchsleep`` provider, whose every script sleeps 100 ms (``attach`` then
prints a userspace path). ``instances`` instance adds with one disk each are submitted
in one batch, spread evenly over the nodes, and are created without starting a guest
(``start: false``), so every step on an add's critical path is a provider step:
``verify → create → attach → open → setinfo``, then, since an instance that is not
started holds its disks nowhere, ``close → detach``: 7 steps, 0.7 s. Before them an
add checks the provider on every online node of the primary's group (DESIGN §4); that
diagnose is shared between adds for ``storage.diagnose_cache`` seconds, and adds that
ask at once wait for one diagnose, so a batch diagnoses each group about once.

Figures:

* ``scale_ratio``: wall time (first submit to last job ended) over the critical-path
  ideal, ``ceil(instances / max_running) * 0.7 s``: the queue runs at most
  ``max_running`` jobs at once, adds of different instances share no exclusive lock,
  and an ideal engine, transport and node would add nothing to the provider sleeps;
* ``rss_mb_per_node``: the daemon's peak resident memory once every node is connected,
  minus its resident memory before any node was added, divided by the node count;
  ``daemon_peak_rss_mb`` is the peak itself;
* where the wall time goes: the CPU the daemon and the node servers (with what they
  forked) spent while the adds ran, and per add (median over adds) its time in the
  queue, its opcode's wall time, the time covered by its steps and the rest
  (:func:`bench.flows.overhead`), and the median provider step against its 100 ms.
"""

from __future__ import annotations

import math
import statistics
import time
from pathlib import Path
from typing import Any

from bench.flows import overhead
from bench.infra import (
    ClientKey,
    DaemonProcess,
    Node,
    add_nodes_via_api,
    cpu_seconds,
    current_user,
    install_provider,
    peak_rss_mb,
    rss_mb,
    start_embedded_nodes,
)
from extjobs.model.opcodes import OPCODES

PROVIDER = "benchsleep"
STEP_SLEEP = 0.1
#: The provider steps of one add (one disk, not started), in sequence.
_ADD_ACTIONS = ("verify", "create", "attach", "open", "setinfo", "close", "detach")
STEPS_PER_ADD = len(_ADD_ACTIONS)


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
    profile: Path | None = None,
) -> dict[str, Any]:
    """One scale run; ``group_size`` 0 keeps every node in the default group; with
    ``profile``, the daemon runs under pyinstrument (see :class:`DaemonProcess`)."""
    op_id = instance_opcode()
    if op_id is None:
        return {
            "scale_ratio": None,
            "rss_mb_per_node": None,
            "note": "pending: no instance add opcode in this tree",
        }
    with start_embedded_nodes(nodes, workdir / "nodes", key) as started:
        _install(started)
        daemon = DaemonProcess(
            workdir / "daemon", key, queue=f"max_running = {max_running}", profile=profile
        )
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
            pids = [n.process.pid for n in started]
            daemon_cpu = cpu_seconds(daemon.pid)
            nodes_cpu = sum(cpu_seconds(pid) for pid in pids)
            t0 = time.time()
            ids = client.submit({"jobs": jobs})
            for job_id in reversed(ids):
                daemon.wait(job_id, timeout=900)
            daemon_cpu = cpu_seconds(daemon.pid) - daemon_cpu
            nodes_cpu = sum(cpu_seconds(pid) for pid in pids) - nodes_cpu
            listed = {j["id"]: j for j in client.jobs()}
            details = [client.job(job_id) for job_id in ids]
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
    per_add = [overhead(job) for job in details]
    queued = [(job["started"] - job["received"]) * 1000 for job in details]
    per_job = [
        [
            entry["data"]["duration"] * 1000
            for entry in job["log"]
            if entry["type"] == "step" and (entry.get("data") or {}).get("action") in _ADD_ACTIONS
        ]
        for job in details
    ]
    provider_steps = [ms for steps in per_job for ms in steps]
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
        # CPU spent while the adds ran (the node servers with the commands they forked).
        "daemon_cpu_s": round(daemon_cpu, 2),
        "nodes_cpu_s": round(nodes_cpu, 2),
        "add_queued_ms_p50": round(statistics.median(queued), 1),
        "add_wall_ms_p50": round(statistics.median(r["wall_ms"] for r in per_add), 1),
        "add_steps_ms_p50": round(statistics.median(r["steps_ms"] for r in per_add), 1),
        "add_overhead_ms_p50": round(statistics.median(r["overhead_ms"] for r in per_add), 1),
        # What the ideal assumes; a change here means the ideal is out of date.
        "provider_steps_per_add": statistics.median(len(steps) for steps in per_job),
        "provider_step_ms_p50": round(statistics.median(provider_steps), 1),
        "provider_step_ms_p90": round(statistics.quantiles(provider_steps, n=10)[-1], 1),
    }
