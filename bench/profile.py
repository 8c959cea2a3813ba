"""Profile the engine under load with pyinstrument (install the ``bench`` extra).

:func:`profile_engine` runs 32 no-op jobs in flight over 4 embedded nodes through the
in-process engine for a few seconds; :func:`profile_scale` runs one scale benchmark with
the daemon process under pyinstrument (its whole life: start, node adds, instance adds,
stop). Both write the profile (text, call tree and a flat list) to the results
directory. This is how the hot spots listed in docs/benchmarks.md were found.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import anyio

from bench import contenders as c
from bench.calls import measure
from bench.infra import (
    add_nodes_in_engine,
    current_user,
    make_key,
    open_engine,
    start_embedded_nodes,
)
from bench.scale import run_scale_bench


async def _profile(work: Path, calls: int) -> Any:
    from pyinstrument import Profiler

    key = make_key(work / "key")
    with start_embedded_nodes(4, work / "nodes", key) as nodes:
        async with open_engine(work / "engine", key) as engine:
            await add_nodes_in_engine(engine, nodes, current_user())
            async with c.open_extjobs(engine, nodes) as call:
                await measure(call, 200, 32, spread=True)
                profiler = Profiler(interval=0.001, async_mode="disabled")
                profiler.start()
                await measure(call, calls, 32, spread=True)
                profiler.stop()
    return profiler


def profile_engine(work: Path, out: Path, calls: int = 3000) -> Path:
    profiler = anyio.run(_profile, work, calls)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"profile-{time.strftime('%Y%m%d-%H%M%S')}.txt"
    tree = profiler.output_text(unicode=False, color=False)
    flat = profiler.output_text(unicode=False, color=False, flat=True)
    path.write_text(tree + "\n\nFlat (self time):\n" + flat)
    return path


def _render_session(session: Path, *options: str) -> str:
    return subprocess.run(
        [sys.executable, "-m", "pyinstrument", f"--load={session}", "--no-color", *options],
        capture_output=True,
        text=True,
        check=True,
    ).stdout


def profile_scale(work: Path, out: Path, *, nodes: int, instances: int) -> dict[str, Any]:
    """One scale run with the daemon profiled; returns the run's figures and the path."""
    out.mkdir(parents=True, exist_ok=True)
    session = work / "daemon.pyisession"
    key = make_key(work / "key")
    run = run_scale_bench(work / "run", key, nodes=nodes, instances=instances, profile=session)
    path = out / f"profile-scale-{time.strftime('%Y%m%d-%H%M%S')}.txt"
    tree = _render_session(session, "--no-unicode")
    flat = _render_session(session, "--no-unicode", "-p", "flat=true")
    path.write_text(tree + "\n\nFlat (self time):\n" + flat)
    return {"path": str(path), "run": run}
