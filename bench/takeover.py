"""Takeover: how long from SIGKILL of the leading master until the standby runs the
interrupted job again.

Two master daemons share a PostgreSQL database (default lease, 3 s); one embedded node.
Each round: a job (one long ``sleep`` on the node) is submitted through the standby and
runs on the leader; the leader is SIGKILLed; the time is taken until the new leader's
recovery decides to run the job again (its ``recovery:`` log line, written just before
the first step of the recovered job). The job is then cancelled and the killed master
started again, as a standby.
"""

from __future__ import annotations

import getpass
import os
import signal
import statistics
import time
from pathlib import Path
from typing import Any

from bench.infra import DaemonProcess, add_nodes_via_api, start_embedded_nodes
from extjobs.api.client import Client
from extjobs.errors import ExtJobsError
from extjobs.testing.processes import ClientKey


def _leader(daemons: dict[str, DaemonProcess], timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for name, daemon in daemons.items():
            if daemon.process is None or daemon.process.poll() is not None:
                continue
            with Client(daemon.socket) as client:
                try:
                    if client.masters()["leads"]:
                        return name
                except ExtJobsError:  # its store connection broke: ask again
                    continue
        time.sleep(0.05)
    raise RuntimeError("no master took the lead")


def run_takeover_bench(work: Path, key: ClientKey, *, url: str, kills: int) -> dict[str, Any]:
    times: list[float] = []
    with start_embedded_nodes(1, work / "nodes", key) as nodes:
        daemons = {
            name: DaemonProcess(work / name, key, store_url=url, master_name=name)
            for name in ("m1", "m2")
        }
        try:
            daemons["m1"].start()
            _leader(daemons)
            daemons["m2"].start()
            add_nodes_via_api(daemons["m1"], nodes, getpass.getuser())
            for _ in range(kills):
                leader = _leader(daemons)
                standby = "m2" if leader == "m1" else "m1"
                client = daemons[standby].client
                assert client is not None
                delay = {"OP_ID": "OP_TEST_DELAY", "duration": 60, "on_nodes": ["node1"]}
                [job_id] = client.submit({"ops": [delay]})
                while client.job(job_id)["status"] != "running":
                    time.sleep(0.02)
                time.sleep(0.2)  # its sleep runs on the node
                killed = daemons[leader]
                assert killed.process is not None
                t_kill = time.time()
                os.kill(killed.process.pid, signal.SIGKILL)
                killed.process.wait()
                while True:
                    log = client.job(job_id)["log"]
                    again = [
                        e["timestamp"]
                        for e in log
                        if e["type"] == "recovery" and e["message"].startswith("recovery:")
                    ]
                    if again:
                        times.append(again[0] - t_kill)
                        break
                    time.sleep(0.02)
                client.cancel(job_id)
                daemons[standby].wait(job_id, timeout=60)
                killed.start()
        finally:
            for daemon in daemons.values():
                if daemon.process is not None and daemon.process.poll() is None:
                    daemon.stop()
    ordered = sorted(times)
    return {
        "kills": kills,
        "lease_s": 3.0,
        "takeover_s": [round(t, 3) for t in times],
        "takeover_s_p50": round(statistics.median(ordered), 3),
        "takeover_s_max": round(ordered[-1], 3),
    }
