"""Results on disk: the JSON files, the generated part of docs/benchmarks.md, the plot."""

from __future__ import annotations

import json
import os
import platform
import re
import subprocess
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "benchmarks.md"
PLOT = REPO / "docs" / "benchmarks-scaling.png"
BEGIN = "<!-- bench:results:begin -->"
END = "<!-- bench:results:end -->"

#: (key, target text, check) for the headline table.
TARGETS: list[tuple[str, str, Any]] = [
    ("call_overhead_ratio", "≤ 1.5", lambda v: v <= 1.5),
    ("call_overhead_ratio_mean", "—", None),
    ("call_overhead_ratio_api", "≤ 1.4", lambda v: v <= 1.4),
    ("call_overhead_ratio_api_oneshot", "—", None),
    ("call_overhead_ratio_same_cipher", "—", None),
    ("call_overhead_ratio_api_same_cipher", "—", None),
    ("call_overhead_vs_openssh_master", "—", None),
    ("call_overhead_vs_openssh_fresh", "—", None),
    ("throughput_ratio_32", "≥ 0.7", lambda v: v >= 0.7),
    ("throughput_ratio_32_api", "≥ 0.6", lambda v: v >= 0.6),
    ("throughput_ratio_32_api_oneshot", "—", None),
    ("throughput_ratio_32_same_cipher", "—", None),
    ("throughput_ratio_32_api_same_cipher", "—", None),
    ("throughput_vs_openssh_master_32", "—", None),
    ("engine_us_per_job", "—", None),
    ("jobs_per_s", "≥ 500", lambda v: v >= 500),
    ("queue_p50_ms", "≤ 5", lambda v: v <= 5),
    ("queue_p99_ms", "—", None),
    ("jobs_per_s_history_20k", "—", None),
    ("scale_ratio_64", "≤ 1.25", lambda v: v <= 1.25),
    ("rss_mb_per_node", "—", None),
    ("cli_job_list_over_floor_ms", "≤ 150", lambda v: v <= 150),
    ("cluster_nodes", "—", None),
    ("cluster_node_add_s", "—", None),
    ("cluster_rss_mb_per_node", "≤ 0.2", lambda v: v <= 0.2),
    ("cluster_diagnose_s", "≤ 5", lambda v: v <= 5),
    ("cluster_node_list_ms_p50", "≤ 50", lambda v: v <= 50),
    ("cluster_instance_list_ms_p50", "≤ 50", lambda v: v <= 50),
    ("cluster_add_ratio", "≤ 1.3", lambda v: v <= 1.3),
    ("engine_cpu_us_per_job_64_nodes", "—", None),
    ("engine_cpu_us_per_job_1000_nodes", "—", None),
    ("failover_overhead_ms", "≤ 50", lambda v: v <= 50),
    ("migrate_overhead_ms", "≤ 50", lambda v: v <= 50),
]


def machine() -> dict[str, Any]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    try:
        commit = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
    except OSError:
        commit = ""
    try:
        ssh = subprocess.run(["ssh", "-V"], capture_output=True, text=True, check=False)
        openssh = (ssh.stderr or ssh.stdout).strip()
    except OSError:
        openssh = "not installed"
    import asyncssh

    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "memory_gib": round(mem_gib, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "asyncssh": asyncssh.__version__,
        "openssh": openssh,
        "commit": commit,
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }


def write_results(directory: Path, mode: str, results: dict[str, Any]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = directory / f"{mode}-{stamp}.json"
    text = json.dumps(results, indent=1, sort_keys=False) + "\n"
    path.write_text(text)
    (directory / f"{mode}-latest.json").write_text(text)
    return path


def queue_headline(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Throughput from the run with the largest batches (the queue saturated: capacity);
    latency from the run with batches of 10 (offered load below capacity, so the figure
    is the queue's own latency rather than the backlog's length)."""
    fresh = [r for r in runs if not r["history"]]
    saturated = max(fresh, key=lambda r: r["batch"])
    paced = next((r for r in fresh if r["batch"] == 10), fresh[0])
    history = [r for r in runs if r["history"] and r["batch"] == saturated["batch"]]
    return {
        "jobs_per_s_history": history[0]["jobs_per_s"] if history else None,
        "jobs_per_s": saturated["jobs_per_s"],
        "jobs_per_s_batch": saturated["batch"],
        "queue_p50_ms": paced["queue_p50_ms"],
        "queue_p99_ms": paced["queue_p99_ms"],
        "latency_batch": paced["batch"],
    }


def _fmt(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"
    return str(value)


def _verdict(value: Any, check: Any) -> str:
    if check is None or value is None:
        return ""
    return "met" if check(value) else "**not met**"


def render(results: dict[str, Any]) -> str:
    head = results["headline"]
    m = results["machine"]
    lines = [
        BEGIN,
        "",
        (
            f"Generated by `make bench` on {m['date']} (commit `{m['commit']}`), "
            f"{results['elapsed_s']:.0f} s."
        ),
        "",
        (
            f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB, Linux {m['kernel']}, "
            f"Python {m['python']}, asyncssh {m['asyncssh']}, {m['openssh']}."
        ),
        "",
        "| figure | value | target | |",
        "| --- | --- | --- | --- |",
    ]
    for key, target, check in TARGETS:
        value = head.get(key)
        lines.append(f"| `{key}` | {_fmt(value)} | {target} | {_verdict(value, check)} |")
    notes = head.get("notes", {})
    if notes:
        lines += ["", *(f"- `{k}`: {v}" for k, v in notes.items())]
    calls = results.get("calls", {})
    cost = calls.get("cost")
    if cost:
        lines += [
            "",
            "Where one call's time goes (one in flight; CPU per call):",
            "",
            "| contender | wall ms | client process CPU ms | daemon CPU ms | node server CPU ms |",
            "| --- | --- | --- | --- | --- |",
        ]
        for name, row in cost.items():
            daemon = row.get("daemon_cpu_ms_per_call")
            lines.append(
                f"| {name} | {row['wall_ms_per_call']:.2f} | "
                f"{row['client_cpu_ms_per_call']:.3f} | "
                f"{'—' if daemon is None else f'{daemon:.3f}'} | "
                f"{row['node_cpu_ms_per_call']:.3f} |"
            )
    engine = calls.get("engine_only")
    if engine:
        lines += [
            "",
            (
                f"Engine alone (node runner answering at once, {engine['jobs']} jobs): "
                f"{engine['serial_us_per_job']:.0f} µs per job one at a time "
                f"({engine['serial_cpu_us_per_job']:.0f} µs CPU), "
                f"{engine['inflight32_us_per_job']:.0f} µs per job with 32 in flight."
            ),
        ]
    for title, key in (
        ("One call in flight (median of rounds)", "serial"),
        ("32 calls in flight over 4 nodes (median of rounds)", "inflight32"),
    ):
        table = calls.get(key)
        if not table:
            continue
        lines += [
            "",
            f"{title}:",
            "",
            "| contender | ms per call | calls/s | p50 ms | p99 ms | client CPU ms per call |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        for name, row in table.items():
            lines.append(
                f"| {name} | {row['per_call_ms']:.2f} | {row['calls_per_s']:.0f} | "
                f"{row['p50_ms']:.2f} | {row['p99_ms']:.2f} | {row['cpu_ms_per_call']:.3f} |"
            )
    thousand = results.get("scale", {}).get("thousand", [])
    if thousand:
        lines += [
            "",
            (
                "A thousand nodes (one process serving every node; 1 s provider steps, "
                "max_running 256, four instances per node listed):"
            ),
            "",
            (
                "| nodes | node adds s | daemon MiB per node | diagnose s | adds | failed | "
                "add wall s | ideal s | ratio | node list p50 ms | instance list p50 ms |"
            ),
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for r in thousand:
            lines.append(
                f"| {r['nodes']} | {r['node_add_s']} | {r['rss_mb_per_node']} | "
                f"{r['diagnose_s']} | {r['adds']} | {r.get('adds_failed', 0)} | "
                f"{r['add_wall_s']} | {r['add_ideal_s']} | {r['add_ratio']} | "
                f"{r['node_list_ms_p50']} | {r['instance_list_ms_p50']} |"
            )
    by_nodes = results.get("scale", {}).get("engine_by_nodes", [])
    if by_nodes:
        lines += [
            "",
            (
                "Engine alone by cluster size (null runner, OP_TEST_DELAY on one node, "
                "four instances per node in the configuration):"
            ),
            "",
            "| nodes | instances | µs per job | CPU µs per job | CPU µs per job, 32 in flight |",
            "| --- | --- | --- | --- | --- |",
        ]
        for r in by_nodes:
            lines.append(
                f"| {r['nodes']} | {r['instances']} | {r['serial_us_per_job']:.0f} | "
                f"{r['serial_cpu_us_per_job']:.0f} | {r['inflight32_cpu_us_per_job']:.0f} |"
            )
    cli = results.get("cli")
    if cli:
        med = cli["median_ms"]
        lines += [
            "",
            f"CLI start-up ({cli['rounds']} rounds, median wall ms): "
            + ", ".join(f"`{k}` {v}" for k, v in med.items())
            + f"; `extjobs job list` over `python -c pass`: "
            f"{cli['cli_job_list_over_floor_ms']} ms.",
        ]
    queue = results.get("queue", {}).get("runs", [])
    if queue:
        lines += [
            "",
            "Queue, 2,000 no-op jobs through the API:",
            "",
            "| batch | finished jobs before | jobs/s | submit s | p50 ms | p99 ms | max ms |",
            "| --- | --- | --- | --- | --- | --- | --- |",
        ]
        for run in queue:
            lines.append(
                f"| {run['batch']} | {run['history']} | {run['jobs_per_s']:.0f} | "
                f"{run['submit_s']:.2f} | "
                f"{run['queue_p50_ms']:.2f} | {run['queue_p99_ms']:.2f} | "
                f"{run['queue_max_ms']:.2f} |"
            )
    scale = [r for r in results.get("scale", {}).get("runs", []) if r.get("scale_ratio")]
    if scale:
        lines += [
            "",
            "Scale, instance adds with 100 ms provider steps:",
            "",
            (
                "| nodes | group size | adds | wall s | ideal s | ratio | commands | "
                "daemon peak RSS MiB | MiB per node | provider step p50 ms | "
                "add outside steps p50 ms | daemon CPU s | node servers CPU s |"
            ),
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for run in scale:
            lines.append(
                f"| {run['nodes']} | {run['group_size']} | {run['instances']} | "
                f"{run['wall_s']:.2f} | "
                f"{run['ideal_s']:.2f} | {run['scale_ratio']:.2f} | {run['commands_run']} | "
                f"{run['daemon_peak_rss_mb']:.0f} | {run['rss_mb_per_node']:.2f} | "
                f"{_fmt(run.get('provider_step_ms_p50'))} | "
                f"{_fmt(run.get('add_overhead_ms_p50'))} | "
                f"{_fmt(run.get('daemon_cpu_s'))} | {_fmt(run.get('nodes_cpu_s'))} |"
            )
    flows = results.get("flows", {})
    if flows.get("migrate") or flows.get("failover"):
        lines += [
            "",
            (
                f"Flows, one instance with {flows['disks']} disks on a no-op provider, "
                f"fake hypervisor, {flows['rounds']} jobs of each kind (median):"
            ),
            "",
            "| flow | steps | wall ms | ms inside steps | overhead ms |",
            "| --- | --- | --- | --- | --- |",
        ]
        for name in ("migrate", "failover"):
            row = flows.get(name)
            if row:
                lines.append(
                    f"| {name} | {row['steps']} | {row['wall_ms']:.1f} | "
                    f"{row['steps_ms']:.1f} | {row['overhead_ms']:.1f} |"
                )
    lines += ["", f"![scaling curves]({PLOT.name})", "", END]
    return "\n".join(lines)


def update_docs(results: dict[str, Any]) -> None:
    plot(results, PLOT)
    text = DOC.read_text() if DOC.exists() else f"# Benchmarks\n\n{BEGIN}\n{END}\n"
    block = render(results)
    pattern = re.compile(re.escape(BEGIN) + ".*?" + re.escape(END), re.DOTALL)
    if pattern.search(text):
        text = pattern.sub(lambda _m: block, text)
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    DOC.write_text(text)


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curve = results.get("calls", {}).get("curve", {})
    scale = [r for r in results.get("scale", {}).get("runs", []) if r.get("scale_ratio")]
    thousand = results.get("scale", {}).get("thousand", [])
    fig, (left, right, third) = plt.subplots(1, 3, figsize=(16, 4.2))
    labels = {
        "asyncssh": "raw asyncssh (reused connection)",
        "runner": "extjobs SSH runner alone",
        "extjobs": "extjobs job, in-process engine",
        "extjobs_api": "extjobs job via daemon + HTTP API",
        "openssh_master": "OpenSSH ControlMaster",
    }
    for name, rows in curve.items():
        xs = [row["in_flight"] for row in rows]
        ys = [row["calls_per_s"] for row in rows]
        left.plot(xs, ys, marker="o", label=labels.get(name, name))
    left.set_xscale("log", base=2)
    left.set_xlabel("calls in flight (over 4 embedded nodes)")
    left.set_ylabel("no-op calls per second")
    left.set_title("Throughput against the transport")
    left.grid(True, alpha=0.3)
    left.legend(fontsize=8)
    if scale:
        single = [r for r in scale if r["group_size"] == r["nodes"]]
        grouped = [r for r in scale if r["group_size"] != r["nodes"]]
        xs = [r["nodes"] for r in single]
        right.plot(xs, [r["wall_s"] for r in single], marker="o", label="wall time, one group")
        right.plot(xs, [r["ideal_s"] for r in single], marker="s", label="critical-path ideal")
        for r in grouped:
            right.plot(
                [r["nodes"]],
                [r["wall_s"]],
                marker="^",
                linestyle="none",
                label=f"wall time, groups of {r['group_size']}",
            )
        right.set_xscale("log", base=2)
        right.set_yscale("log")
        right.set_xlabel("embedded nodes (4 instance adds per node)")
        right.set_ylabel("seconds")
        right.set_title("Instance adds, 100 ms provider steps")
        right.grid(True, alpha=0.3)
        right.legend(fontsize=8)
    else:
        right.text(0.5, 0.5, "scale benchmark pending", ha="center", va="center")
        right.set_axis_off()
    if thousand:
        thousand_panel(third, thousand)
    else:
        third.text(0.5, 0.5, "thousand-node benchmark not run", ha="center", va="center")
        third.set_axis_off()
    m = results["machine"]
    fig.suptitle(f"extjobs benchmarks — {m['cores']} cores, {m['date']}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def thousand_panel(ax: Any, runs: list[dict[str, Any]]) -> None:
    """The thousand-node runs (bench/thousand.py) against their node count."""
    xs = [r["nodes"] for r in runs]
    for key, label, marker in (
        ("add_wall_s", "instance adds (one per node), wall", "o"),
        ("add_ideal_s", "instance adds, critical-path ideal", "s"),
        ("node_add_s", "adding every node (keys pinned)", "^"),
        ("diagnose_s", "storage diagnose over every node", "v"),
    ):
        ax.plot(xs, [r[key] for r in runs], marker=marker, label=label)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("embedded nodes, one process serving them all")
    ax.set_ylabel("seconds")
    ax.set_title("Up to a thousand nodes, 1 s provider steps, 256 running")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)


def plot_thousand(runs: list[dict[str, Any]], path: Path, title: str) -> None:
    """The thousand-node panel alone, as its own figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.2))
    thousand_panel(ax, runs)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
