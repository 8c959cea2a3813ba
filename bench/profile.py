"""Profile the engine under load with pyinstrument (install the ``bench`` extra).

Runs 32 no-op jobs in flight over 4 embedded nodes through the in-process engine for
a few seconds and writes the profile (text, call tree and a flat list) to the results
directory. This is how the hot spots listed in docs/benchmarks.md were found.
"""

from __future__ import annotations

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
