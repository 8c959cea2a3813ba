"""``python -m bench [--quick] [--profile] [--only NAME ...]``: run the benchmarks.

Writes ``bench/results/<mode>-<timestamp>.json`` (and ``<mode>-latest.json``) and
prints, as its last line, one JSON object with the headline figures. The full run also
redraws ``docs/benchmarks-scaling.png`` and the generated part of
``docs/benchmarks.md``; ``--no-docs`` leaves the docs alone.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio

from bench import calls as calls_bench
from bench import report
from bench.amplification import run_amplification
from bench.contenders import have_openssh_client
from bench.flows import run_flows_bench
from bench.infra import make_key, start_embedded_nodes
from bench.jobqueue import run_queue_bench
from bench.scale import run_scale_bench
from bench.takeover import run_takeover_bench
from extjobs.testing.postgres import PostgresServer, find_bindir

RESULTS = Path(__file__).resolve().parent / "results"

PARTS = ("calls", "curve", "queue", "scale", "flows", "api", "cli", "thousand")


class Plan:
    """How much of everything a mode measures."""

    def __init__(self, quick: bool) -> None:
        self.quick = quick
        self.call_rounds = 6 if quick else 10
        self.call_n = 75 if quick else 120
        self.fresh_n = 6 if quick else 15
        self.tp_rounds = 5 if quick else 4
        self.tp_n = 320 if quick else 1000
        self.curve = () if quick else (1, 2, 4, 8, 16, 32, 64)
        self.queue_jobs = 2000
        # (batch size, finished jobs already in the store)
        self.queue_runs = (
            [(10, 0), (200, 0), (200, 20000)]
            if quick
            else [(1, 0), (10, 0), (50, 0), (200, 0), (10, 20000), (200, 20000)]
        )
        # (nodes, instance adds, node group size; 0: one group of all nodes)
        self.scale = (
            [(64, 16, 0)] if quick else [(8, 32, 0), (16, 64, 0), (32, 128, 0), (64, 256, 0)]
        )
        self.scale_grouped = [] if quick else [(64, 256, 8)]
        # bench/thousand.py: nodes served by one process, one add per node.
        self.thousand = [64] if quick else [64, 1000]
        # Timed migrations and failovers each (directions alternate).
        self.flow_rounds = 4 if quick else 10
        # Leader kills timed (two masters on PostgreSQL).
        self.takeover_kills = 3 if quick else 10


def run_queue_pg(plan: Plan, work: Path, key: Any) -> dict[str, Any]:
    """The queue benchmark on a PostgreSQL server of its own (durable settings: fsync on),
    in the same run as SQLite's; batches of 10 (latency) and 200 (throughput)."""
    bindir = find_bindir()
    if bindir is None:
        return {"note": "PostgreSQL is not installed (make test installs it)"}
    server = PostgresServer(bindir, durable=True)
    try:
        server.start()
        runs = []
        _log(f"takeover: {plan.takeover_kills} leader kills, two masters on PostgreSQL")
        takeover = run_takeover_bench(
            work / "takeover", key, url=server.create_database(), kills=plan.takeover_kills
        )
        _log("engine alone, SQLite then PostgreSQL (group writer)")
        engine = {
            "sqlite": anyio.run(calls_bench.engine_only, work / "engine-sqlite", 2000),
            "postgresql": anyio.run(
                calls_bench.engine_only, work / "engine-pg", 2000, server.create_database()
            ),
        }
        for batch in (10, 200):
            _log(f"queue on PostgreSQL: {plan.queue_jobs} jobs in batches of {batch}")
            runs.append(
                run_queue_bench(
                    work / f"{batch}",
                    key,
                    n=plan.queue_jobs,
                    batch=batch,
                    store_url=server.create_database(),
                )
            )
    finally:
        server.destroy()
    return {
        "runs": runs,
        "headline": report.queue_headline(runs),
        "takeover": takeover,
        "engine": engine,
    }


def _log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


async def run_calls(plan: Plan, work: Path, out: dict[str, Any], parts: set[str]) -> None:
    key = make_key(work / "key")
    openssh = ["openssh_master", "openssh_fresh"] if have_openssh_client() else []
    names = ["asyncssh", "asyncssh_gcm", "runner", "extjobs", *calls_bench.API_CONTENDERS, *openssh]
    if not plan.quick:
        names.insert(1, "asyncssh_run")
    if not parts & {"calls", "curve"}:
        # The API part alone: the reference, the engine and the API's ways of calling.
        names = ["asyncssh", "asyncssh_gcm", "extjobs", *calls_bench.API_CONTENDERS]
    with start_embedded_nodes(4, work / "nodes", key) as nodes:
        async with calls_bench.open_contenders(names, nodes, key, work) as calls:
            if parts & {"calls", "api"}:
                _log("engine alone (a node runner that costs nothing)")
                out["engine_only"] = await calls_bench.engine_only(work / "engine-only", 2000)
                _log("where the time of one call goes")
                out["cost"] = {
                    k: await calls_bench.where_time_goes(
                        calls[k], nodes, plan.call_n * 2, calls_bench.SERVER_PIDS.get(k)
                    )
                    for k in calls
                    if k.startswith(("asyncssh", "extjobs")) and k != "asyncssh_run"
                }
                _log("per-call overhead, one call in flight")
                n = {k: plan.fresh_n if k == "openssh_fresh" else plan.call_n for k in calls}
                serial = await calls_bench.compare(
                    calls, rounds=plan.call_rounds, n=n, in_flight=1, spread=False
                )
                out["serial"] = calls_bench.summary(serial)
                # Median latencies: one slow call (a page fault, a neighbour's burst)
                # must not decide a round on this shared machine. Means are kept too.
                out["serial_ratios"] = {
                    k: calls_bench.ratio(serial, "extjobs", k, "p50_ms") for k in calls
                }
                out["serial_ratios_api"] = {
                    k: calls_bench.ratio(serial, "extjobs_api", k, "p50_ms") for k in calls
                }
                out["serial_ratios_api_oneshot"] = {
                    k: calls_bench.ratio(serial, "extjobs_api_oneshot", k, "p50_ms") for k in calls
                }
                out["serial_ratios_mean"] = {
                    k: calls_bench.ratio(serial, "extjobs", k, "per_call_ms") for k in calls
                }
                _log("throughput, 32 calls in flight over 4 nodes")
                # The quick run spends its time on more rounds of the two that the
                # target compares, rather than on the other contenders.
                skip = {"openssh_fresh"} | ({"openssh_master"} if plan.quick else set())
                tp_calls = {k: v for k, v in calls.items() if k not in skip}
                n = {k: plan.tp_n // 2 if k.startswith("openssh") else plan.tp_n for k in tp_calls}
                tp = await calls_bench.compare(
                    tp_calls, rounds=plan.tp_rounds, n=n, in_flight=32, spread=True
                )
                out["inflight32"] = calls_bench.summary(tp)
                out["inflight32_ratios"] = {
                    k: calls_bench.ratio(tp, "extjobs", k, "calls_per_s") for k in tp_calls
                }
                out["inflight32_ratios_api"] = {
                    k: calls_bench.ratio(tp, "extjobs_api", k, "calls_per_s") for k in tp_calls
                }
                out["inflight32_ratios_api_oneshot"] = {
                    k: calls_bench.ratio(tp, "extjobs_api_oneshot", k, "calls_per_s")
                    for k in tp_calls
                }
            if "curve" in parts and plan.curve:
                curve_names = ["asyncssh", "runner", "extjobs", "extjobs_api", *openssh[:1]]
                curve_calls = {k: calls[k] for k in curve_names if k in calls}
                out["curve"] = {k: [] for k in curve_calls}
                for k in plan.curve:
                    _log(f"scaling curve: {k} in flight")
                    n = {
                        name: min(100 * k, 800) // (2 if name.startswith("openssh") else 1)
                        for name in curve_calls
                    }
                    rows = await calls_bench.compare(
                        curve_calls, rounds=1, n=n, in_flight=k, spread=True, warmup=2 * k
                    )
                    for name, summary in calls_bench.summary(rows).items():
                        out["curve"][name].append({"in_flight": k, **summary})


def headline(results: dict[str, Any]) -> dict[str, Any]:
    calls = results.get("calls", {})
    serial = calls.get("serial_ratios", {})
    tp = calls.get("inflight32_ratios", {})
    queue = results.get("queue", {}).get("headline", {})
    queue_pg = results.get("queue_pg", {}).get("headline", {})
    takeover = results.get("queue_pg", {}).get("takeover", {})
    engine_pg = results.get("queue_pg", {}).get("engine", {})
    amplification = results.get("amplification", {})
    scale = results.get("scale", {}).get("headline", {})
    flows = results.get("flows", {})

    def r(value: Any, digits: int = 3) -> Any:
        return None if value is None else round(value, digits)

    def kib(key: str, digits: int) -> Any:
        value = amplification.get(key)
        return None if value is None else round(value / 1024, digits)

    return {
        "call_overhead_ratio": r(serial.get("asyncssh")),
        "call_overhead_ratio_mean": r(calls.get("serial_ratios_mean", {}).get("asyncssh")),
        "call_overhead_ratio_api": r(calls.get("serial_ratios_api", {}).get("asyncssh")),
        "call_overhead_ratio_api_oneshot": r(
            calls.get("serial_ratios_api_oneshot", {}).get("asyncssh")
        ),
        # Over raw asyncssh offering the same ciphers as extjobs (AES-GCM first): what
        # the engine and the API add, apart from the cipher.
        "call_overhead_ratio_same_cipher": r(serial.get("asyncssh_gcm")),
        "call_overhead_ratio_api_same_cipher": r(
            calls.get("serial_ratios_api", {}).get("asyncssh_gcm")
        ),
        "call_overhead_vs_openssh_master": r(serial.get("openssh_master")),
        "call_overhead_vs_openssh_fresh": r(serial.get("openssh_fresh")),
        "throughput_ratio_32": r(tp.get("asyncssh")),
        "throughput_ratio_32_api": r(calls.get("inflight32_ratios_api", {}).get("asyncssh")),
        "throughput_ratio_32_api_oneshot": r(
            calls.get("inflight32_ratios_api_oneshot", {}).get("asyncssh")
        ),
        "throughput_ratio_32_same_cipher": r(tp.get("asyncssh_gcm")),
        "throughput_ratio_32_api_same_cipher": r(
            calls.get("inflight32_ratios_api", {}).get("asyncssh_gcm")
        ),
        "throughput_vs_openssh_master_32": r(tp.get("openssh_master")),
        "engine_us_per_job": calls.get("engine_only", {}).get("serial_us_per_job"),
        "jobs_per_s": queue.get("jobs_per_s"),
        "queue_p50_ms": queue.get("queue_p50_ms"),
        "queue_p99_ms": queue.get("queue_p99_ms"),
        "jobs_per_s_history_20k": queue.get("jobs_per_s_history"),
        "jobs_per_s_pg": queue_pg.get("jobs_per_s"),
        "queue_p50_ms_pg": queue_pg.get("queue_p50_ms"),
        "engine_cpu_us_per_job_sqlite": engine_pg.get("sqlite", {}).get("serial_cpu_us_per_job"),
        "engine_cpu_us_per_job_pg": engine_pg.get("postgresql", {}).get("serial_cpu_us_per_job"),
        "store_written_kb_per_job": kib("written_bytes_per_job", 1),
        "store_kept_kb_per_job": kib("stored_bytes_per_job", 2),
        "takeover_s_p50": takeover.get("takeover_s_p50"),
        "takeover_s_max": takeover.get("takeover_s_max"),
        "scale_ratio_64": scale.get("scale_ratio"),
        "rss_mb_per_node": scale.get("rss_mb_per_node"),
        "cli_job_list_over_floor_ms": results.get("cli", {}).get("cli_job_list_over_floor_ms"),
        **thousand_headline(results),
        "failover_overhead_ms": r(flows.get("failover", {}).get("overhead_ms"), 1),
        "migrate_overhead_ms": r(flows.get("migrate", {}).get("overhead_ms"), 1),
        "notes": {
            **({"scale_ratio_64": scale["note"]} if "note" in scale else {}),
        },
    }


def thousand_headline(results: dict[str, Any]) -> dict[str, Any]:
    """The largest thousand-node run's figures, and the engine's cost per job by size."""
    scale = results.get("scale", {})
    runs = scale.get("thousand") or [{}]
    big = runs[-1]
    engine = {row["nodes"]: row for row in scale.get("engine_by_nodes", [])}

    def us(size: int) -> Any:
        return engine.get(size, {}).get("serial_cpu_us_per_job")

    return {
        "cluster_nodes": big.get("nodes"),
        "cluster_node_add_s": big.get("node_add_s"),
        "cluster_rss_mb_per_node": big.get("rss_mb_per_node"),
        "cluster_diagnose_s": big.get("diagnose_s"),
        "cluster_node_list_ms_p50": big.get("node_list_ms_p50"),
        "cluster_instance_list_ms_p50": big.get("instance_list_ms_p50"),
        "cluster_add_ratio": big.get("add_ratio"),
        "engine_cpu_us_per_job_64_nodes": us(64),
        "engine_cpu_us_per_job_1000_nodes": us(1000),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="the short set (about a minute)")
    parser.add_argument("--only", nargs="+", choices=PARTS, help="run only these parts")
    parser.add_argument("--no-docs", action="store_true", help="do not touch docs/")
    parser.add_argument(
        "--profile",
        action="store_true",
        help=(
            "also profile the engine under load, and with the scale part the daemon in"
            " a scale run (pyinstrument), into bench/results/"
        ),
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    plan = Plan(args.quick)
    parts = set(args.only or PARTS)
    mode = "quick" if args.quick else "full"
    results: dict[str, Any] = {"mode": mode, "machine": report.machine()}
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="extjobs-bench-") as tmp:
        work = Path(tmp)
        if parts & {"calls", "curve", "api"}:
            results["calls"] = {}
            anyio.run(run_calls, plan, work / "calls", results["calls"], parts)
        if "queue" in parts:
            key = make_key(work / "queue-key")
            runs = []
            for batch, history in plan.queue_runs:
                _log(f"queue: {plan.queue_jobs} jobs in batches of {batch}, {history} before")
                runs.append(
                    run_queue_bench(
                        work / f"queue-{batch}-{history}",
                        key,
                        n=plan.queue_jobs,
                        batch=batch,
                        history=history,
                    )
                )
            results["queue"] = {"runs": runs, "headline": report.queue_headline(runs)}
            _log("write amplification of the embedded store: 500 one-step jobs")
            results["amplification"] = anyio.run(run_amplification, work / "amplification", 500)
            results["queue_pg"] = run_queue_pg(plan, work / "queue-pg", key)
        if "scale" in parts:
            key = make_key(work / "scale-key")
            runs = []
            for nodes, instances, group in plan.scale + plan.scale_grouped:
                _log(f"scale: {nodes} nodes, {instances} adds, groups of {group or nodes}")
                runs.append(
                    run_scale_bench(
                        work / f"scale-{nodes}-{group}",
                        key,
                        nodes=nodes,
                        instances=instances,
                        group_size=group,
                    )
                )
            one_group = [r for r in runs if r.get("group_size") in (None, r.get("nodes"))]
            results["scale"] = {"runs": runs, "headline": one_group[-1]}
        if parts & {"scale", "thousand"}:
            from bench.thousand import run_thousand_bench

            key = make_key(work / "thousand-key")
            results.setdefault("scale", {})

            sizes = (64, 1000)
            results["scale"]["engine_by_nodes"] = []
            for size in sizes:
                _log(f"engine alone in a cluster of {size} nodes, {4 * size} instances")
                results["scale"]["engine_by_nodes"].append(
                    anyio.run(
                        functools.partial(
                            calls_bench.engine_only,
                            work / f"engine-{size}",
                            1000,
                            nodes=size,
                            instances=4 * size,
                        )
                    )
                )
            results["scale"]["thousand"] = []
            for size in plan.thousand:
                _log(f"{size} nodes in one process: node adds, diagnose, {size} adds, lists")
                results["scale"]["thousand"].append(
                    run_thousand_bench(work / f"thousand-{size}", key, nodes=size)
                )
        if "cli" in parts:
            from bench.cli import run_cli_bench

            _log("CLI start-up: extjobs job list beside python -c pass")
            results["cli"] = run_cli_bench(work / "cli", rounds=15 if plan.quick else 30)
        if "flows" in parts:
            _log(f"flows: {plan.flow_rounds} live migrations and failovers, fake hypervisor")
            results["flows"] = run_flows_bench(
                work / "flows", make_key(work / "flows-key"), rounds=plan.flow_rounds
            )
        if args.profile:
            from bench.profile import profile_engine, profile_scale

            _log("profiling the engine under load")
            results["profile"] = str(profile_engine(work / "profile", RESULTS))
            if "scale" in parts:
                # The full run's largest single-group run, in either mode.
                nodes, instances, _ = Plan(quick=False).scale[-1]
                _log(f"profiling the daemon: scale, {nodes} nodes, {instances} adds")
                results["profile_scale"] = profile_scale(
                    work / "profile-scale", RESULTS, nodes=nodes, instances=instances
                )
    results["elapsed_s"] = round(time.monotonic() - started, 1)
    results["headline"] = headline(results)
    path = report.write_results(RESULTS, mode, results)
    _log(f"results written to {path}")
    if not args.quick and not args.no_docs and parts == set(PARTS):
        report.update_docs(results)
        _log("docs/benchmarks.md and docs/benchmarks-scaling.png updated")
    print(json.dumps(results["headline"], sort_keys=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
