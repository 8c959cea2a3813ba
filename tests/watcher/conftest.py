"""A cluster whose daemon runs the watcher every half second, and helpers to follow it.

Three nodes of one group, the strict provider (it records where each volume is attached
and open), the fake hypervisor unless a test says otherwise. The watcher's settings are
short so that its rounds, backoff and dead-node delay fit in a test; a test that needs
others rewrites the ``[watcher]`` section and restarts the daemon (:func:`set_watcher`).
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from tests.instances.conftest import open_cluster
from tests.migration.conftest import MoveCluster, install_strict

T = TypeVar("T")

WATCHER = {
    "interval": 0.5,
    "node_dead_after": 1.0,
    # A loaded machine must not make a node look dead (a stopped server refuses at once).
    "probe_timeout": 10.0,
    "restart_backoff": 0.5,
    "restart_backoff_max": 1.0,
    "max_restarts": 3,
    "restart_window": 3600,
}


def watcher_section(**overrides: float) -> str:
    values = {**WATCHER, **overrides}
    return "[watcher]\n" + "".join(f"{k} = {v}\n" for k, v in values.items())


@contextlib.contextmanager
def open_watched_cluster(kind: str, base: Path, *, nodes: int = 3) -> Iterator[MoveCluster]:
    with open_cluster(kind, base, nodes=nodes, providers=(), sections=watcher_section()) as plain:
        cluster = MoveCluster(plain.tc, plain.run_dir)
        install_strict(cluster)
        yield cluster


def set_watcher(cluster: MoveCluster, **overrides: float) -> None:
    """Restart the daemon (gracefully) with these ``[watcher]`` settings."""
    config = cluster.tc.daemon.config
    text = config.read_text()
    text = re.sub(r"\[watcher\]\n(?:[a-z_]+ = [^\n]*\n)*", watcher_section(**overrides), text)
    config.write_text(text)
    cluster.tc.restart_daemon(kill=False)


def wait_for(what: str, probe: Callable[[], T | None], timeout: float = 60.0) -> T:
    """``probe()`` until it returns something other than None/False; fails after
    ``timeout`` seconds naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value is not None and value is not False:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def watcher_jobs(cluster: MoveCluster, op_id: str | None = None) -> list[dict[str, Any]]:
    """Every job the watcher submitted (oldest first), optionally only ``op_id`` ones."""
    return [
        job
        for job in cluster.tc.client.jobs()
        if job["submitter"] == "watcher"
        and (op_id is None or [s.split("(")[0] for s in job["summary"]] == [op_id])
    ]


def jobs_for(cluster: MoveCluster, op_id: str, instance: str) -> list[dict[str, Any]]:
    """The watcher's ``op_id`` jobs about ``instance``, in full."""
    found = []
    for job in watcher_jobs(cluster, op_id):
        full = cluster.tc.client.job(job["id"])
        if full["ops"][0]["input"].get("instance_name") == instance:
            found.append(full)
    return found


def observed(cluster: MoveCluster, name: str) -> dict[str, Any]:
    """The instance's observation after a fresh round of the watcher."""
    data = cluster.tc.client.instance(name, refresh=20)
    assert data["refreshed"] is True, data
    result: dict[str, Any] = data["observed"]
    return result


def rounds(cluster: MoveCluster, n: int) -> None:
    """Let ``n`` fresh rounds pass."""
    for _ in range(n):
        body = cluster.tc.client.request(
            "GET", "/v1/instances", params={"refresh": "1", "timeout": "20"}, patience=20
        )
        assert body["refreshed"] is True


def kill_guest(cluster: MoveCluster, name: str, node: str) -> int:
    """SIGKILL the instance's guest on ``node`` (as if it crashed); its pid."""
    from tests.migration.invariants import guest_pid

    uuid = cluster.instance(name)["uuid"]
    pid = guest_pid(cluster.run_dir, node, uuid)
    assert pid is not None, f"{name} does not run on {node}"
    # The guest leads its process group (its session): the whole group dies, as in a crash.
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        os.kill(pid, signal.SIGKILL)
    wait_for(f"{name}'s guest to die", lambda: guest_pid(cluster.run_dir, node, uuid) is None)
    return pid


#: A fence command for tests: records the call, then "powers the node off": kills its
#: guests, drops its hold on the strict provider's volumes, and leaves a mark that the
#: node is off (the tests never start its SSH server again). Arguments: LOG RUN_DIR
#: VOLS_ROOT OFF_DIR.
POWER_OFF = r"""#!/bin/sh
set -u
log=$1 run=$2 vols=$3 off=$4
node=${EXTJOBS_NODE:?}
printf '%s %s\n' "$node" "${EXTJOBS_NODE_HOST:-}" >>"$log"
for pidfile in "$run/$node"/*.pid; do
  [ -e "$pidfile" ] || continue
  pid=$(cat "$pidfile")
  kill -s KILL -- "-$pid" 2>/dev/null
  kill -s KILL "$pid" 2>/dev/null
  rm -f -- "$pidfile"
done
find "$vols" -path "*.attached/$node" -delete 2>/dev/null
find "$vols" -path "*.open/$node.*" -delete 2>/dev/null
: >"$off/$node"
exit 0
"""

#: A fence command whose power controller does not answer. Arguments: LOG.
FENCE_FAILS = r"""#!/bin/sh
printf '%s\n' "${EXTJOBS_NODE:?}" >>"$1"
echo "power controller of $EXTJOBS_NODE does not answer" >&2
exit 1
"""


class Fences:
    def __init__(self, cluster: MoveCluster) -> None:
        base = cluster.tc.base
        self.log = base / "fence-calls.log"
        self.off = base / "powered-off"
        self.off.mkdir(exist_ok=True)
        power_off = base / "power-off.sh"
        power_off.write_text(POWER_OFF)
        power_off.chmod(0o755)
        fails = base / "fence-fails.sh"
        fails.write_text(FENCE_FAILS)
        fails.chmod(0o755)
        self.power_off = f"{power_off} {self.log} {cluster.run_dir} {base / 'vols'} {self.off}"
        self.fails = f"{fails} {self.log}"

    def calls(self) -> list[str]:
        if not self.log.exists():
            return []
        return [line.split()[0] for line in self.log.read_text().splitlines()]
