"""CLI start-up: the wall time of ``extjobs job list`` against an idle daemon, beside
the interpreter's own start (``python -c pass``), in one run, taking turns.

The figure is ``cli_job_list_over_floor_ms``: the median wall time of the whole
command (interpreter start, imports, one request, the table) minus the median of
``python -c pass`` run by the same interpreter (same ``site``, same environment).
The system ``python3 -c pass`` is recorded beside it. ``-X importtime`` of the same
command gives the modules that cost the most (cumulative), recorded as they are.

Bytecode is cached as on an installed system (pip compiles what it installs): with
``PYTHONDONTWRITEBYTECODE`` set, as on the machine these figures come from, an
editable install would compile extjobs's own modules from source on every start
(~80 ms here); the commands run with a bytecode cache of their own instead
(``PYTHONPYCACHEPREFIX`` in the work directory), written by the warm-up runs.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.infra import DaemonProcess, make_key


def _wall(argv: list[str], env: dict[str, str]) -> float:
    t = time.perf_counter()
    subprocess.run(argv, env=env, check=True, stdout=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    return time.perf_counter() - t


def import_times(argv: list[str], env: dict[str, str], top: int = 15) -> list[dict[str, Any]]:
    """The ``top`` imports by cumulative time (µs) of one run with ``-X importtime``."""
    out = subprocess.run(
        [argv[0], "-X", "importtime", *argv[1:]],
        env=env,
        check=True,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    rows = []
    for line in out.stderr.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        self_us, cumulative, name = line.removeprefix("import time:").split("|")
        rows.append(
            {"module": name.strip(), "self_us": int(self_us), "cumulative_us": int(cumulative)}
        )
    rows.sort(key=lambda r: -r["cumulative_us"])
    return rows[:top]


def extjobs_modules(env: dict[str, str], args: list[str]) -> list[str]:
    """The ``extjobs.*`` modules a command imports (``-X importtime``), in order."""
    out = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "extjobs", *args],
        env=env,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        check=True,
    )
    return [
        line.rsplit("|", 1)[1].strip()
        for line in out.stderr.splitlines()
        if line.startswith("import time:") and line.rsplit("|", 1)[1].strip().startswith("extjobs")
    ]


def run_cli_bench(workdir: Path, *, rounds: int = 15) -> dict[str, Any]:
    key = make_key(_mkdir(workdir / "key"))
    daemon = DaemonProcess(workdir / "daemon", key)
    daemon.start()
    try:
        env = {
            **os.environ,
            "EXTJOBS_SOCKET": str(daemon.socket),
            "COLUMNS": "120",
            "PYTHONPYCACHEPREFIX": str(workdir / "pycache"),
        }
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        script = str(Path(sys.executable).with_name("extjobs"))
        contenders = {
            "python_pass": [sys.executable, "-c", "pass"],
            "job_list": [script, "job", "list"],
            "job_list_json": [script, "job", "list", "--output", "json"],
        }
        system = shutil.which("python3")
        if system is not None:
            contenders["system_python3_pass"] = [system, "-c", "pass"]
        for argv in contenders.values():  # warm the page cache
            _wall(argv, env)
        times: dict[str, list[float]] = {k: [] for k in contenders}
        names = list(contenders)
        for r in range(rounds):
            for name in names[r % len(names) :] + names[: r % len(names)]:
                times[name].append(_wall(contenders[name], env))
        med = {k: statistics.median(v) * 1000 for k, v in times.items()}
        # Per round, the command minus the floor measured in the same round.
        over = statistics.median(
            (a - b) * 1000 for a, b in zip(times["job_list"], times["python_pass"], strict=True)
        )
        return {
            "rounds": rounds,
            "median_ms": {k: round(v, 1) for k, v in med.items()},
            "cli_job_list_over_floor_ms": round(over, 1),
            "importtime_top": import_times([sys.executable, "-m", "extjobs", "job", "list"], env),
        }
    finally:
        daemon.stop()


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path
