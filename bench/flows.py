"""Flows: what a failover and a live migration cost beyond their provider scripts.

A daemon process drives three embedded nodes (node3 only keeps the group's provider
check honest). Every node has the ``benchnoop`` provider, whose scripts do nothing
(``attach`` creates an empty file and prints its path for userspace access), and the
``fake`` hypervisor runs the guest: a small process holding the disks open. One
instance with two disks runs on node1; it is then live-migrated node1 → node2 and
back, and failed over node1 → node2 and back, one job at a time.

For each job: the opcode's wall time (``started`` → ``ended`` in the job record) minus
the time covered by its steps. Each step's job-log line (type ``step``) is written when
the step ends and carries its ``duration``, so the step ran over
``[timestamp - duration, timestamp]``; the union of those intervals is subtracted, so
that steps run concurrently (``run_many``, one per disk or node) count once. What is
left is the engine's own time: locks, prerequisite checks, journal and store writes,
configuration updates, log lines and waits between steps. The figures are medians over
the jobs of each kind.
"""

from __future__ import annotations

import shutil
import statistics
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from bench.infra import (
    ClientKey,
    DaemonProcess,
    Node,
    add_nodes_via_api,
    current_user,
    install_provider,
    start_embedded_nodes,
)

PROVIDER = "benchnoop"
DISKS = 2


def provider_scripts(volumes: Path) -> dict[str, str]:
    noop = "#!/bin/sh\nexit 0\n"
    scripts = dict.fromkeys(
        ("create", "remove", "grow", "detach", "setinfo", "verify", "open", "close"), noop
    )
    # Userspace only: an empty first line, then the fake hypervisor's path.
    scripts["attach"] = (
        f'#!/bin/sh\n: >>{volumes}/"$VOL_NAME"\nprintf \'\\nfake:%s\\n\' {volumes}/"$VOL_NAME"\n'
    )
    scripts["parameters.list"] = ""
    return scripts


def _install(nodes: list[Node], volumes: Path) -> None:
    # One volume directory for all nodes: the storage is shared, as a SAN would be.
    volumes.mkdir(parents=True, exist_ok=True)
    for node in nodes:
        install_provider(node, PROVIDER, provider_scripts(volumes))


def step_intervals(job: dict[str, Any]) -> list[tuple[float, float]]:
    """``(start, end)`` of every step of the job, from its job-log lines."""
    spans = []
    for entry in job.get("log", []):
        data = entry.get("data") or {}
        if entry.get("type") == "step" and data.get("duration") is not None:
            end = float(entry["timestamp"])
            spans.append((end - float(data["duration"]), end))
    return spans


def union_length(spans: list[tuple[float, float]], lo: float, hi: float) -> float:
    """Length of the union of ``spans`` clipped to ``[lo, hi]``."""
    total = 0.0
    cur_start = cur_end = None
    for start, end in sorted((max(s, lo), min(e, hi)) for s, e in spans):
        if end <= start:
            continue
        if cur_end is None or start > cur_end:
            if cur_end is not None and cur_start is not None:
                total += cur_end - cur_start
            cur_start, cur_end = start, end
        else:
            cur_end = max(cur_end, end)
    if cur_end is not None and cur_start is not None:
        total += cur_end - cur_start
    return total


def overhead(job: dict[str, Any]) -> dict[str, float]:
    """Wall time of the job's opcode(s), the time covered by steps, and the rest (ms)."""
    started = min(op["started"] for op in job["ops"])
    ended = max(op["ended"] for op in job["ops"])
    spans = step_intervals(job)
    in_steps = union_length(spans, started, ended)
    wall = ended - started
    return {
        "wall_ms": round(wall * 1000, 2),
        "steps_ms": round(in_steps * 1000, 2),
        "step_sum_ms": round(sum(e - s for s, e in spans) * 1000, 2),
        "steps": len(spans),
        "overhead_ms": round((wall - in_steps) * 1000, 2),
    }


def _check(job: dict[str, Any], what: str) -> dict[str, Any]:
    if job["status"] != "success":
        errors = [op.get("error") for op in job["ops"] if op.get("error")]
        raise RuntimeError(f"flows benchmark: {what} failed: {errors}")
    return job


def _stop_guests(run_dir: Path) -> None:
    """Kill any fake guest still running (each leads a process group of its own)."""
    for pidfile in run_dir.rglob("*.pid"):
        text = pidfile.read_text().strip()
        if text.isdigit():
            subprocess.run(["kill", "-KILL", "--", f"-{text}"], capture_output=True, check=False)


def run_flows_bench(workdir: Path, key: ClientKey, *, rounds: int) -> dict[str, Any]:
    """``rounds`` migrations and ``rounds`` failovers (alternating directions)."""
    # Short and private: the fake hypervisor keeps pid files under it.
    run_dir = Path(tempfile.mkdtemp(prefix="xjb", dir="/tmp"))
    jobs: dict[str, list[dict[str, Any]]] = {"migrate": [], "failover": []}
    try:
        with start_embedded_nodes(3, workdir / "nodes", key) as nodes:
            _install(nodes, workdir / "volumes")
            daemon = DaemonProcess(workdir / "daemon", key)
            client = daemon.start()
            try:
                add_nodes_via_api(daemon, nodes, current_user())
                _check(
                    daemon.run_job(
                        [{"OP_ID": "OP_CLUSTER_SET_PARAMS", "hv_run_dir": str(run_dir)}]
                    ),
                    "setting the hypervisor run directory",
                )
                disks = [{"size": 16, "provider": PROVIDER, "access": "userspace"}] * DISKS
                _check(
                    daemon.run_job(
                        [
                            {
                                "OP_ID": "OP_INSTANCE_CREATE",
                                "instance_name": "flow1",
                                "pnode": "node1",
                                "disks": disks,
                                "hypervisor": "fake",
                            }
                        ]
                    ),
                    "instance add",
                )
                here, there = "node1", "node2"
                for kind, op_id in (
                    ("migrate", "OP_INSTANCE_MIGRATE"),
                    ("failover", "OP_INSTANCE_FAILOVER"),
                ):
                    # One untimed move first: connections to both nodes, caches warm.
                    for i in range(rounds + 1):
                        job = _check(
                            daemon.run_job(
                                [{"OP_ID": op_id, "instance_name": "flow1", "target_node": there}]
                            ),
                            f"{kind} {here} -> {there}",
                        )
                        if i:
                            jobs[kind].append(client.job(job["id"]))
                        here, there = there, here
                daemon.run_job([{"OP_ID": "OP_INSTANCE_REMOVE", "instance_name": "flow1"}])
            finally:
                daemon.stop()
    finally:
        _stop_guests(run_dir)
        shutil.rmtree(run_dir, ignore_errors=True)
    out: dict[str, Any] = {"rounds": rounds, "disks": DISKS, "provider": PROVIDER}
    for kind, done in jobs.items():
        rows = [overhead(job) for job in done]
        out[kind] = {
            "overhead_ms": round(statistics.median(r["overhead_ms"] for r in rows), 2),
            "wall_ms": round(statistics.median(r["wall_ms"] for r in rows), 2),
            "steps_ms": round(statistics.median(r["steps_ms"] for r in rows), 2),
            "steps": rows[0]["steps"],
            "runs": rows,
        }
    return out
