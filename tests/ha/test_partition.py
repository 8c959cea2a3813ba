"""The leader cut off from PostgreSQL (its connection goes through a proxy the test
cuts) while a step of an instance add runs: the standby, which still reaches the
database, takes over and rolls the add back; every provider script run is recorded on
the node side, and no two runs on one volume overlap in time."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest

from tests.ha.test_takeover import Pair, store_section
from tests.harness.proxy import TcpProxy
from tests.instances.conftest import Cluster, open_cluster

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

ACTIONS = ("create", "remove", "grow", "attach", "detach", "setinfo", "verify", "open", "close")


#: Waits (in a session of its own: a kill takes the script's process group whole) until
#: process $1 is gone — a zombie counts as gone: it waits only for its parent to reap it —
#: then records the end of the run, so a killed run gets its end time too.
WATCH = r"""
while [ -e "/proc/$1" ]; do
  state=$(sed -n 's/.*) \([A-Za-z]\).*/\1/p' "/proc/$1/stat" 2>/dev/null)
  [ "$state" = Z ] && break
  sleep 0.005
done
printf "end %s %s %s\n" "$(date +%s.%N)" "$2" "$3" >>"$4"
"""


def recorder(log: Path, action: str) -> str:
    """A provider script that records its run (start, end, volume) and becomes the real
    one; ``create`` takes two seconds, so that the cut comes while it runs."""
    slow = "sleep 2\n" if action == "create" else ""
    return (
        f'log="{log}"\n'
        f'printf "start %s {action} %s\\n" "$(date +%s.%N)" "$VOL_NAME" >>"$log"\n'
        # Detached twice (its parent exits at once): a kill of the script's session and
        # descendants does not reach it, so it records the end of a killed run too.
        f'(setsid "${{0%/*}}/watch" $$ {action} "$VOL_NAME" "$log" </dev/null >/dev/null 2>&1 &)\n'
        f"{slow}"
        f'exec "${{0%/*}}/{action}.real"\n'
    )


def through(proxy: TcpProxy, url: str) -> str:
    parts = urlsplit(url)
    netloc = parts.netloc.rsplit(":", 1)[0] + f":{proxy.port}"
    return urlunsplit(parts._replace(netloc=netloc))


@pytest.fixture
def cut_off(tmp_path: Path, postgres_server: Any) -> Iterator[tuple[Pair, TcpProxy, Path]]:
    url = postgres_server.create_database()
    proxy = TcpProxy("127.0.0.1", urlsplit(url).port or 5432)
    steps = tmp_path / "steps.log"
    try:
        section = store_section(through(proxy, url), "m1")
        with open_cluster("embedded", tmp_path / "c", nodes=2, providers=(), sections=section) as c:
            scripts = {a: recorder(steps, a) for a in ACTIONS}
            c.install_copy("recorder", "sharedfile", {**scripts, "watch": WATCH})
            with c.tc.client as client:
                deadline = time.monotonic() + 20
                while not client.masters()["leads"] and time.monotonic() < deadline:
                    time.sleep(0.05)
            pair = Pair(c, url, crash_file=False)
            try:
                assert pair.wait_leader() == "m1"
                yield pair, proxy, steps
            finally:
                for daemon in pair.daemons.values():
                    if daemon.process is not None and daemon.process.poll() is None:
                        daemon.stop()
    finally:
        proxy.close()


def intervals(steps: Path) -> dict[str, list[tuple[float, float, str]]]:
    """Per volume, the (start, end, action) of every script run, in start order."""
    open_runs: dict[tuple[str, str], float] = {}
    found: dict[str, list[tuple[float, float, str]]] = {}
    for line in steps.read_text().splitlines():
        kind, at, action, volume = line.split(" ", 3)
        if kind == "start":
            open_runs[(action, volume)] = float(at)
        else:
            start = open_runs.pop((action, volume))
            found.setdefault(volume, []).append((start, float(at), action))
    assert not open_runs, f"runs that never ended: {open_runs}"
    return {v: sorted(runs) for v, runs in found.items()}


def test_a_leader_cut_off_from_the_database_is_replaced_and_no_runs_overlap(
    cut_off: tuple[Pair, TcpProxy, Path],
) -> None:
    pair, proxy, steps = cut_off
    c: Cluster = pair.c
    vols = c.vol_dir("partition")
    disk = {"size": 4, "provider": "recorder", "params": {"dir": str(vols)}}
    op = {"OP_ID": "OP_INSTANCE_CREATE", "instance_name": "cut1", "pnode": "node1", "disks": [disk]}
    with pair.client("m2") as client:  # submitted through the standby
        [job_id] = client.submit({"ops": [op]})
    deadline = time.monotonic() + 30
    while " create " not in (steps.read_text() if steps.exists() else ""):
        if time.monotonic() > deadline:
            with pair.client("m2") as client:
                log = [e["message"] for e in client.job(job_id)["log"]]
            raise AssertionError(f"the create never started: {log[-6:]}")
        time.sleep(0.02)
    proxy.cut()  # m1 can no longer reach the database; m2 still can
    cut_at = time.monotonic()
    assert pair.wait_leader(timeout=30) == "m2"
    pair.point_cluster_at("m2")
    job = c.tc.wait(job_id, timeout=60)
    took = time.monotonic() - cut_at
    assert job["status"] == "error", job["log"][-5:]
    assert any("interrupted" in e["message"] for e in job["log"] if e["type"] == "recovery")
    # Rolled back by the new leader: nothing left on the storage, verify clean.
    assert list(vols.glob("*.img")) == []
    verify = c.cli("verify", "--output", "json")
    assert verify.returncode == 0, verify.stdout + verify.stderr
    # Node side: on every volume, each script run ended before the next one began.
    runs = intervals(steps)
    assert runs, "no provider script ran"
    for volume, seq in runs.items():
        for (_, end, first), (start, _, second) in itertools.pairwise(seq):
            assert end <= start, f"{volume}: {first} and {second} overlap"
    assert any(a == "remove" for seq in runs.values() for _, _, a in seq)
    # The network back, the former leader stands by.
    proxy.restore()
    deadline = time.monotonic() + 20
    while pair.roles() != {"m1": False, "m2": True}:
        assert time.monotonic() < deadline, pair.roles()
        time.sleep(0.1)
    assert took < 30
