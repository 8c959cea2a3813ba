"""Queue throughput and latency: many no-op jobs through a daemon process and its API.

``n`` jobs of ``OP_TEST_DELAY(duration=0)`` on the master are submitted through
``POST /v1/jobs`` in batches of ``batch`` by one client, back to back. Figures:

* ``jobs_per_s``: jobs divided by the time from the first submit request to the end
  of the last job (the daemon's ``ended`` stamp; client and daemon share the clock);
* with ``history``, the store already holds that many finished jobs when the daemon
  starts, as a long-running daemon's does;
* ``queue_p50_ms`` / ``queue_p99_ms``: per job, from ``received`` (the daemon queued
  it) to ``started`` (its opcode began running), so queueing, dispatch, locks and the
  store writes in between are all in it.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from bench.infra import ClientKey, DaemonProcess
from extjobs.model.jobs import Job, OpState
from extjobs.model.states import OpStatus
from extjobs.store.sqlite import SqliteStore


def _prefill(db: Path, count: int) -> None:
    """``count`` finished (not yet archived) jobs in the store, as a daemon that has been
    running for a while keeps them (finished jobs are archived after a week by default)."""
    store = SqliteStore(db)
    now = time.time() - 3600
    op = {"OP_ID": "OP_TEST_DELAY", "duration": 0.0}
    jobs = [
        Job(
            id=store.next_job_id(),
            ops=(OpState(0, op, OpStatus.SUCCESS, {"slept": 0.0}, None, now, now),),
            received=now,
            started=now,
            ended=now,
        )
        for _ in range(count)
    ]
    store.save_jobs(jobs)
    store.close()


def run_queue_bench(
    workdir: Path, key: ClientKey, *, n: int, batch: int, history: int = 0, store_url: str = ""
) -> dict[str, Any]:
    """One run; ``history`` finished jobs are put in the (SQLite) store before the daemon
    starts. ``store_url``: a PostgreSQL database instead (the daemon as one of several
    masters, alone: it elects itself)."""
    daemon = DaemonProcess(workdir, key, store_url=store_url)
    if history:
        _prefill(workdir / "state" / "extjobs.db", history)
    client = daemon.start()
    try:
        job = daemon.run_job([{"OP_ID": "OP_CLUSTER_INIT", "cluster_name": "bench"}])
        if job["status"] != "success":
            raise RuntimeError(f"cluster init failed: {job}")
        op = {"OP_ID": "OP_TEST_DELAY", "duration": 0}
        bodies = [
            {"jobs": [{"ops": [op]} for _ in range(min(batch, n - i))]} for i in range(0, n, batch)
        ]
        t0 = time.time()
        ids: list[int] = []
        for body in bodies:
            ids += client.submit(body)
        submitted = time.time()
        for job_id in reversed(ids):
            daemon.wait(job_id, timeout=600)
        wanted = set(ids)
        jobs = [j for j in client.jobs() if j["id"] in wanted]
    finally:
        daemon.stop()
    if len(jobs) != n or any(j["status"] != "success" for j in jobs):
        bad = [j for j in jobs if j["status"] != "success"][:3]
        raise RuntimeError(f"queue benchmark: {len(jobs)} jobs listed, failures: {bad}")
    end = max(j["ended"] for j in jobs)
    latencies = sorted((j["started"] - j["received"]) * 1000 for j in jobs)
    return {
        "jobs": n,
        "batch": batch,
        "history": history,
        "store": "postgresql" if store_url else "sqlite",
        "elapsed_s": round(end - t0, 3),
        "submit_s": round(submitted - t0, 3),
        "jobs_per_s": round(n / (end - t0), 1),
        "queue_p50_ms": round(latencies[len(latencies) // 2], 3),
        "queue_p99_ms": round(latencies[min(n - 1, int(n * 0.99))], 3),
        "queue_max_ms": round(latencies[-1], 3),
    }
