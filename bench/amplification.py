"""Write amplification of the embedded store: what a job costs the state directory.

``n`` jobs of one opcode with one remote step each (``OP_TEST_DELAY`` on a node, a node
runner that answers at once) through the in-process engine on SQLite. Figures per job:

* ``stored_bytes``: growth of the store once the WAL is checkpointed and truncated —
  what the state directory keeps;
* ``written_bytes``: bytes the process handed to ``write`` (``wchar`` of
  ``/proc/self/io``): the WAL frames and the checkpoint, i.e. what the disk is asked to
  absorb;
* ``transactions``: commits, counted at the store;
* ``document_bytes``: the size of the job's final document, the log lines' and the
  journal's rows as text — the payload the rest is measured against.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import anyio

from bench.calls import NullRunner
from extjobs.model.cluster import Node
from extjobs.model.config import Config
from extjobs.model.opcodes import OpClusterInit, OpTestDelay
from extjobs.store.base import WriteBatch, job_doc
from extjobs.store.sqlite import SqliteStore
from extjobs.testing.engine import open_engine


def _wchar() -> int:
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("wchar:"):
            return int(line.split()[1])
    return 0


def _stored(db: Path) -> int:
    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return sum(p.stat().st_size for p in db.parent.glob(db.name + "*"))


class _CountingStore(SqliteStore):
    transactions = 0

    def write(self, batch: WriteBatch, *, again: bool = False) -> list[int]:
        _CountingStore.transactions += 1
        return super().write(batch, again=again)


async def run_amplification(workdir: Path, n: int = 500) -> dict[str, Any]:
    await anyio.Path(workdir).mkdir(parents=True, exist_ok=True)
    db = workdir / "extjobs.db"
    store = _CountingStore(db)
    config = Config(state_dir=workdir)
    async with open_engine(config, NullRunner(), store=store) as engine:  # type: ignore[arg-type]
        await engine.run(OpClusterInit(cluster_name="bench"))
        node = Node(name="node1", host="127.0.0.1", port=22, host_key="x y")
        engine.configmgr.update(lambda cfg: cfg.with_node(node))
        op = OpTestDelay(duration=0.0, on_master=False, on_nodes=("node1",))
        await engine.run(op)
        before, written, commits = _stored(db), _wchar(), _CountingStore.transactions
        ids = [engine.submit(op) for _ in range(n)]
        for job_id in ids:
            await engine.wait(job_id)
        written = _wchar() - written
        commits = _CountingStore.transactions - commits
        stored = _stored(db) - before
        last = engine.queue.get(ids[-1])
        payload = len(job_doc(last)) + sum(
            len(e.message) + len(str(e.data or "")) for e in engine.log(ids[-1])
        )
        payload += sum(len(str(r)) for r in store.load_journal(ids[-1]))
    return {
        "jobs": n,
        "stored_bytes_per_job": round(stored / n),
        "written_bytes_per_job": round(written / n),
        "transactions_per_job": round(commits / n, 2),
        "document_bytes_per_job": payload,
    }
