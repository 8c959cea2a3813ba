"""The crash matrix: SIGKILL the daemon at every journal point of every flow, restart it,
and check that each job ends as docs/reliability.md promises.

For each flow a reference run (no crash) gives its steps in journal order; then for
every step K and every position (``before`` it is journalled, ``started`` — journalled
but its command not yet run —, ``after`` its result is recorded) a job is stopped there
and the daemon killed. Before the restart the journal it left must show that each job
stopped at that very step; after it, each job must end as promised for its point
(:mod:`tests.crash.matrix` lists the outcomes) with a recovery line in its log, and the
cluster must be consistent: no volume the configuration does not know, a running
instance holding its disks on its primary only, a stopped one holding them nowhere, and
verify clean.

Every flow runs on embedded nodes; add, migrate, failover, install (SFTP), disk-add,
disk-move, node-fence and the day-2 flows (reboot, deactivate, activate-disks,
node-migrate, change-group) also run on OpenSSH nodes.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.crash.matrix import (
    FLOWS,
    POSITIONS,
    STRICT,
    Point,
    add_op,
    check_consistent,
    crash_and_recover,
    reference,
    reset,
    run_ok,
)
from tests.harness.journal import Record
from tests.instances.conftest import open_cluster
from tests.migration.conftest import MoveCluster, install_strict

# Re-exported: the HA tests kill a leader with the same crash file and checks.
__all__ = ["STRICT", "add_op", "check_consistent", "reset"]

# A flow killed at every point one at a time (install, fenced, node-fence), on a loaded two-core
# machine, may take longer than the default per-test timeout.
pytestmark = [pytest.mark.spawns, pytest.mark.slow, pytest.mark.timeout(300)]

#: Every job asks its nodes about providers: a diagnose remembered from an earlier job
#: would shift the step numbers of an add between the reference run and a crashed one.
SECTIONS = "[storage]\ndiagnose_cache = 0\n"


class Matrix:
    """A two-node cluster whose daemon honours the crash file, with the reference run
    of each flow (made once) and its volume directory."""

    def __init__(self, cluster: MoveCluster) -> None:
        self.c = cluster
        self._refs: dict[str, tuple[Path, list[Record]]] = {}

    def reference(self, flow_name: str) -> tuple[Path, list[Record]]:
        if flow_name not in self._refs:
            vols = self.c.vol_dir(f"crash-{flow_name}")
            self._refs[flow_name] = (vols, reference(self.c, FLOWS[flow_name], vols))
        return self._refs[flow_name]

    def run(self, flow_name: str, where: str) -> None:
        """Kill the daemon ``where`` every step of the flow: one crash for all the points
        of a batched flow, one per point otherwise."""
        flow = FLOWS[flow_name]
        vols, ref = self.reference(flow_name)
        assert len(ref) >= flow.min_steps, ref
        points = [Point(where, k) for k in range(1, len(ref) + 1)]
        for batch in [points] if flow.batched else [[p] for p in points]:
            crash_and_recover(self.c, flow, vols, ref, batch)


def open_matrix(kind: str, base: Path) -> Iterator[Matrix]:
    with open_cluster(kind, base, nodes=2, providers=(), sections=SECTIONS) as plain:
        c = MoveCluster(plain.tc, plain.run_dir)
        install_strict(c)
        c.tc.daemon.env = {"EXTJOBS_CRASH_FILE": str(c.tc.base / "crash-at")}
        c.tc.restart_daemon(kill=False)
        fence = {"OP_ID": "OP_NODE_SET_PARAMS", "node_name": "node1"}
        run_ok(c, {**fence, "fence_command": c.fence_command().split()})
        yield Matrix(c)


@pytest.fixture(scope="module")
def embedded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Matrix]:
    yield from open_matrix("embedded", tmp_path_factory.mktemp("crash"))


@pytest.fixture(scope="module")
def openssh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Matrix]:
    yield from open_matrix("openssh", tmp_path_factory.mktemp("crash-openssh"))


@pytest.mark.parametrize("where", POSITIONS)
@pytest.mark.parametrize("flow_name", list(FLOWS))
def test_crash_at_every_journal_point(embedded: Matrix, flow_name: str, where: str) -> None:
    embedded.run(flow_name, where)


@pytest.mark.openssh
@pytest.mark.parametrize("where", POSITIONS)
@pytest.mark.parametrize(
    "flow_name",
    [
        "add",
        "migrate",
        "failover",
        "install",
        "reboot",
        "deactivate",
        "node-migrate",
        "change-group",
        "activate-disks",
        "disk-add",
        "disk-move",
        "node-fence",
    ],
)
def test_crash_on_openssh_nodes(openssh: Matrix, flow_name: str, where: str) -> None:
    openssh.run(flow_name, where)
