"""The crash matrix's flows, the outcome docs/reliability.md promises for each crash point,
and the checks made after every restart.

A crash point is ``WHERE:K`` (:class:`Point`): the K-th step of a job (remote commands,
tree copies and local runs, numbered in the order they are journalled — see
``CrashPoint`` in :mod:`extjobs.engine.context`), ``before`` it is journalled, once it
is journalled as ``started`` but before its command runs, or ``after`` its result is
recorded. The reference run (the flow without a crash) names the step of each K, and
:func:`check_killed_at` proves from the journal the dead daemon left that each job
stopped at its point and nowhere else.

One crash serves many points: the flow runs on one instance per point at once, each
job waits at its own point, and the daemon kills itself once all of them are there.
Instances are independent (their own volumes, guests and locks; each add its own copy
of the provider, since adds of one provider share a diagnose), so each job is left as
a crash at its point alone would leave it. ``storage install`` (a copy locks the nodes
exclusively), the fenced failover and the node fence (fencing node1 stops every guest
there) would disturb one another: they take one crash per point.

What each flow must end as after the restart (:class:`Outcome`, from the reference
steps and the point):

========== ====================================================================
add        ``error``; the instance does not exist; no volume and no attachment
           or open marker is left (the journal's inverses were run).
grow       ``success``; the disk is 8 MiB in the configuration and on the storage
           (run again to the same target, never grown twice); runs on node1.
shutdown   ``success``; down on node1, its disks held nowhere.
startup    ``success``; runs on node1, its disks held there only.
remove     ``success``; the instance and its volumes are gone.
migrate    if no step of the move was journalled: run again, ``success`` on node2.
           Once the guest moved (stopped on its source): ``success`` on node2, the
           job's result saying so. Before that: ``error``, running on node1, the
           error saying where it runs.
failover   ``success`` on node2: run again before the source released the disks,
           finished on the target after.
fenced     the same with node1 offline and fenced (a local run on the master):
           ``success`` on node2, node1 fenced at least once.
cleanup    ``migrate --cleanup`` of an instance that moved but whose source kept
           its disks: run again, ``success``; runs on node2, node1 holds nothing.
install    ``storage install`` (an SFTP copy beside the provider and a swap on each
           node, then diagnose): run again, ``success``; every node has the whole
           provider, byte for byte, and no staged copy is left.
reboot     ``success``; runs on node1 (recovery starts the guest again wherever the
           reboot stopped; it never stays down).
deactivate ``deactivate-disks`` of a stopped instance whose disks were activated: run
           again, ``success``; down, its disks held nowhere.
activate-  ``activate-disks`` of a stopped instance: run again, ``success``; down, its
disks      disks held on node1 only (attached, open exclusively), recorded as
           activated so that verify leaves them there.
node-      ``node migrate node1 --target node2`` of one running instance: before the
migrate    submission is journalled, run again, ``success``, the instance's job moves it
           to node2. Once it is journalled: ``error`` saying the jobs may exist; the
           instance is on node2 if its job was queued (after the step), else on node1.
disk-add   ``instance modify --disk add:…`` of a running guest: before the first
           provider step of the new disk, run again, ``success`` with two disks;
           after it, ``error``: the new volume is plugged out and removed, one disk.
           Either way the guest holds exactly its configured disks.
disk-rm    ``--disk 1:remove`` of a running guest: run again, ``success``; one disk,
           the volume gone, the guest holds disk 0 only.
disk-det   ``--disk 1:detach``: run again, ``success``; the volume kept as a detached
           disk, attached and open nowhere; the guest holds disk 0 only.
snapshot   ``instance snapshot`` of a running guest: a snapshot step never started on
           the node runs again; ``success``, the snapshot recorded and on the storage.
disk-move  ``--disk attach:from=<name>-src,disk=0`` (a detached disk of an instance on
           node2 into a running guest on node1): before the disk's first step on node1,
           run again, ``success``; after it, ``error``, its steps undone. Either way the
           disk is the receiver's or still its source's detached disk, never both.
node-      ``node fence node1`` (a local run on the master, as the watcher submits it
fence      for a dead node) of an offline node1 running one instance: ``success`` at
           every point, the fence command run exactly once in all. Journalled as done:
           not run again, recovery marks node1 offline and fenced. Not yet run (before
           its step, or journalled as started): the op runs again and fences. node1
           ends offline and ``fenced`` exactly when the job succeeded; the instance
           stays on node1, marked up, its guest stopped by the fence and its disks held
           nowhere (verify clean); the failover that follows (before the instances are
           removed) does not fence node1 again.
========== ====================================================================

``canceled`` is never accepted: nobody cancels a job here, and a crash is not a cancel.
An opcode found ``running`` after a restart goes to its LU's ``recover``; only one found
``canceling`` is compensated and ends ``canceled``, so a ``canceled`` job in this matrix
would be a recovery that lost what the job was doing.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import attrs

from extjobs.api.client import Client
from extjobs.model.journal import StepStatus
from tests.harness.cluster import PROVIDERS
from tests.harness.journal import Record, read_journal
from tests.instances.conftest import Cluster
from tests.migration.conftest import MoveCluster
from tests.migration.invariants import check as check_instance
from tests.migration.invariants import guest_processes
from tests.migration.invariants import markers as inv_markers

STRICT = Path(__file__).resolve().parents[1] / "data" / "providers" / "strict"
NAME = "crash1"
POSITIONS = ("before", "started", "after")
FAIL = 'echo "injected failure" >&2\nexit 1\n'
#: How long one crash may take to come: every job of the batch runs to its point.
CRASH_TIMEOUT = 120.0


@attrs.frozen
class Point:
    """Where a job stops: at step ``k`` (1-based), ``where`` in :data:`POSITIONS`."""

    where: str
    k: int

    def journalled(self, index: int) -> bool:
        """Whether step ``index`` was in the journal when the daemon died."""
        return index < self.k or (index == self.k and self.where != "before")

    def ran(self, index: int) -> bool:
        """Whether step ``index`` had run and its result was recorded."""
        return index < self.k or (index == self.k and self.where == "after")

    def __str__(self) -> str:
        return f"{self.where}:{self.k}"


@attrs.frozen
class Outcome:
    """What a flow must end as after a crash and a restart."""

    status: str
    #: The instance's primary afterwards; ``None``: the instance must not exist.
    primary: str | None
    running: bool = False
    #: Words the job's recovery lines or its error must contain (``{name}``: the
    #: instance's name).
    says: str = ""
    #: How many times node1's fence command ran, in all (``None``: not counted).
    fences: int | None = None


Expect = Callable[[list[Record], Point], Outcome]
Names = Sequence[str]


def _no_check(c: MoveCluster, vols: Path, name: str, what: str) -> None:
    pass


def _no_reset(c: MoveCluster, vols: Path, names: Names) -> None:
    pass


@attrs.frozen
class Flow:
    name: str
    #: Prepares the instances (or whatever the op needs), all at once.
    setup: Callable[[MoveCluster, Path, Names], None]
    #: The opcode of the flow for one instance (or provider) name.
    op: Callable[[Path, str], dict[str, Any]]
    expect: Expect
    #: Checked after the outcome (the size of a grown disk, an installed tree).
    extra_check: Callable[[MoveCluster, Path, str, str], None] = _no_check
    #: Undoes what the flow and its setup left besides the instances.
    reset: Callable[[MoveCluster, Path, Names], None] = _no_reset
    #: Whether points may share a crash (see the module docstring).
    batched: bool = True
    #: Whether each node's steps run in a task of their own (install): their journal
    #: order across nodes then varies from run to run, and only each node's is fixed.
    per_node_order: bool = False
    #: Waits for what the flow's job left running on its own (the per-instance jobs a
    #: node migrate submitted) before anything is checked.
    settle: Callable[[MoveCluster], None] = lambda c: None
    #: How many steps the reference run has at least (a sanity check of the flow).
    min_steps: int = 3
    #: Runs once everything is checked, before the instances are removed (a fenced
    #: node's instances are failed over first: an offline node's cannot be removed).
    before_reset: Callable[[MoveCluster, Path, Names], None] = _no_reset


# -- ops and setups --------------------------------------------------------------------------


def add_op(
    vols: Path, name: str = NAME, *, start: bool = True, provider: str = "strict"
) -> dict[str, Any]:
    return {
        "OP_ID": "OP_INSTANCE_CREATE",
        "instance_name": name,
        "pnode": "node1",
        "disks": [{"size": 4, "provider": provider, "params": {"dir": str(vols)}}],
        "start": start,
    }


def _add_own_provider(vols: Path, name: str) -> dict[str, Any]:
    """An add whose disk's provider is the strict one installed under the instance's
    name: concurrent adds share a diagnose of the same providers (the first job asks,
    the others wait for its answer), which would tie every job to the first one's."""
    return add_op(vols, name, provider=name)


def _strict_as(c: MoveCluster, vols: Path, names: Names) -> None:
    for node in c.tc.nodes:
        for name in names:
            dest = c.tc.install_provider(node, name, STRICT)
            for script in dest.iterdir():
                if script.name not in ("parameters.list", "README.md", "common.sh", "node-id"):
                    script.chmod(script.stat().st_mode | stat.S_IXUSR)


def _op(op_id: str, **fields: Any) -> Callable[[Path, str], dict[str, Any]]:
    return lambda vols, name: {"OP_ID": op_id, "instance_name": name, **fields}


def run_all(c: Cluster, ops: list[dict[str, Any]], status: str = "success") -> list[Any]:
    """Run one job per opcode, all at once; each must end ``status``."""
    ids = c.tc.client.submit({"jobs": [{"ops": [op]} for op in ops]})
    jobs = [c.tc.wait(i, timeout=120) for i in ids]
    for job in jobs:
        assert job["status"] == status, json.dumps(job["log"][-8:], indent=1)
    return jobs


def run_ok(c: Cluster, op: dict[str, Any]) -> dict[str, Any]:
    [job] = run_all(c, [op])
    return dict(job)


def _nothing(c: MoveCluster, vols: Path, names: Names) -> None:
    pass


def _add(c: MoveCluster, vols: Path, names: Names) -> None:
    run_all(c, [add_op(vols, n) for n in names])


def _add_stopped(c: MoveCluster, vols: Path, names: Names) -> None:
    _add(c, vols, names)
    run_all(c, [_op("OP_INSTANCE_SHUTDOWN")(vols, n) for n in names])


def _add_on_offline_node(c: MoveCluster, vols: Path, names: Names) -> None:
    """Running on node1, which is then marked offline: a failover must fence it."""
    _add(c, vols, names)
    run_ok(c, {"OP_ID": "OP_NODE_SET_PARAMS", "node_name": "node1", "offline": True})


def _node1_online(c: MoveCluster, vols: Path, names: Names) -> None:
    """node1 back online, and its fence log emptied for the next point's check."""
    run_ok(c, {"OP_ID": "OP_NODE_SET_PARAMS", "node_name": "node1", "offline": False})
    c.fence_log.unlink(missing_ok=True)


def _moved_but_source_kept(c: MoveCluster, vols: Path, names: Names) -> None:
    """A migration whose source detach failed: the guest runs on node2, the configuration
    says so, node1 keeps the disks attached — what ``migrate --cleanup`` is for."""
    _add(c, vols, names)
    migrate = _op("OP_INSTANCE_MIGRATE", target_node="node2")
    with c.replaced("node1", "detach", FAIL):
        jobs = run_all(c, [migrate(vols, n) for n in names], status="error")
    for name, job in zip(names, jobs, strict=True):
        message = job["ops"][0]["error"]["message"]
        assert f"{name} was migrated to node2 and runs there" in message, message


def _modify_op(vols: Path, name: str, **change: Any) -> dict[str, Any]:
    return {"OP_ID": "OP_INSTANCE_SET_PARAMS", "instance_name": name, "disk": change}


def _disk_add_op(vols: Path, name: str, provider: str | None = None) -> dict[str, Any]:
    """A disk added with the strict provider installed under the instance's name (see
    :func:`_add_own_provider`: adds share a diagnose of the same provider)."""
    spec = {"size": 4, "provider": provider or name, "params": {"dir": str(vols)}}
    return _modify_op(vols, name, action="add", spec=spec)


def _add_with_own_provider(c: MoveCluster, vols: Path, names: Names) -> None:
    _strict_as(c, vols, names)
    _add(c, vols, names)


def _add_two_disks(c: MoveCluster, vols: Path, names: Names) -> None:
    _add(c, vols, names)
    run_all(c, [_disk_add_op(vols, n, "strict") for n in names])


def _holds_its_disks(c: MoveCluster, vols: Path, name: str, what: str) -> None:
    """The running fake guest holds exactly the configured disks' volumes; a detached
    disk's volume exists and is attached and open nowhere."""
    info = c.instance(name)
    [pid] = guest_processes(c.run_dir, info["uuid"]).values()
    fd_dir = Path(f"/proc/{pid}/fd")
    held = {Path(os.readlink(fd_dir / fd)).name for fd in os.listdir(fd_dir)}
    held = {h for h in held if h.endswith(".img")}
    wanted = {f"{d['volume']}.img" for d in info["disks"]}
    assert held == wanted, f"{what}: the guest holds {held}, configured {wanted}"
    for disk in info["detached_disks"]:
        assert (vols / f"{disk['volume']}.img").exists(), f"{what}: {disk['volume']} is gone"
        attached, opened = inv_markers(vols, disk["volume"])
        assert not attached, f"{what}: detached {disk['volume']} attached on {attached}"
        assert not opened, f"{what}: detached {disk['volume']} open on {opened}"


def _one_disk_left(c: MoveCluster, vols: Path, name: str, what: str) -> None:
    info = c.instance(name)
    assert [d["index"] for d in info["disks"]] == [0], f"{what}: disks {info['disks']}"
    _holds_its_disks(c, vols, name, what)


def _detached(c: MoveCluster, vols: Path, name: str, what: str) -> None:
    _one_disk_left(c, vols, name, what)
    detached = c.instance(name)["detached_disks"]
    assert [d["index"] for d in detached] == [1], f"{what}: detached {detached}"


def _snapshot_taken(c: MoveCluster, vols: Path, name: str, what: str) -> None:
    info = c.instance(name)
    [snap] = info["snapshots"]
    assert snap["name"] == "s1", f"{what}: {snap}"
    copy = vols / f"{info['disks'][0]['volume']}.snap-s1"
    assert copy.exists(), f"{what}: {copy} is missing"
    _holds_its_disks(c, vols, name, what)


def _grown_to_8(c: MoveCluster, vols: Path, name: str, what: str) -> None:
    [disk] = c.instance(name)["disks"]
    assert disk["size"] == 8, f"{what}: the configuration says {disk['size']} MiB"
    image = vols / f"{disk['volume']}.img"
    assert image.stat().st_size == 8 << 20, f"{what}: {image} is {image.stat().st_size} bytes"


def _install_op(vols: Path, name: str) -> dict[str, Any]:
    source = str(PROVIDERS / "sharedfile")
    return {"OP_ID": "OP_EXTSTORAGE_INSTALL", "source": source, "provider": name}


def _tree(top: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(top)): p.read_bytes() if p.is_file() else b"<dir>"
        for p in sorted(top.rglob("*"))
    }


def _installed_everywhere(c: MoveCluster, vols: Path, name: str, what: str) -> None:
    """The whole provider on every node, and no staged or replaced copy beside it."""
    source = _tree(PROVIDERS / "sharedfile")
    for node in c.tc.nodes:
        dest = _tree(c.tc.search_path(node) / name)
        assert dest == source, f"{what}: {node.name} has {sorted(dest)}"
        left = sorted(p.name for p in c.tc.search_path(node).glob(f".{name}.*"))
        assert left == [], f"{what}: {node.name} keeps {left}"


def _uninstall(c: MoveCluster, vols: Path, names: Names) -> None:
    for node in c.tc.nodes:
        for name in names:
            for path in [c.tc.search_path(node) / name, *c.tc.search_path(node).glob(f".{name}.*")]:
                shutil.rmtree(path, ignore_errors=True)


def _node2_in_group(c: MoveCluster, group: str) -> None:
    """node2 removed and added again in node group ``group`` (created when missing)."""
    if group not in c.tc.client.request("GET", "/v1/cluster")["groups"]:
        run_ok(c, {"OP_ID": "OP_GROUP_ADD", "group_name": group})
    run_ok(c, {"OP_ID": "OP_NODE_REMOVE", "node_name": "node2"})
    c.tc.add_node(c.tc.node("node2"), group=group)


def _add_node2_elsewhere(c: MoveCluster, vols: Path, names: Names) -> None:
    """node2 alone in group ``other``; the instances running on node1 (group default),
    each with its own copy of the provider: checking the providers in the new group
    is a diagnose that concurrent jobs of one provider would share (see ``add``)."""
    _node2_in_group(c, "other")
    _strict_as(c, vols, names)
    run_all(c, [_add_own_provider(vols, n) for n in names])


def _node2_back(c: MoveCluster, vols: Path, names: Names) -> None:
    _uninstall(c, vols, names)
    _node2_in_group(c, "default")


# -- expected outcomes -----------------------------------------------------------------------


def index_of(ref: list[Record], what: str, test: Callable[[Record], bool]) -> int:
    """The 1-based index of the one reference step passing ``test``."""
    found = [i for i, r in enumerate(ref, 1) if test(r)]
    assert len(found) == 1, f"the reference run has {len(found)} steps '{what}': {found}"
    return found[0]


def _tagged(ref: list[Record], point: Point, move: str, node: str | None = None) -> bool:
    """Whether a step of the move (on ``node``) was journalled when the daemon died."""
    return any(
        point.journalled(i)
        for i, r in enumerate(ref, 1)
        if r.move == move and (node is None or r.node == node)
    )


def expect_add(ref: list[Record], point: Point) -> Outcome:
    return Outcome("error", None, says="add of {name} interrupted")


def expect_rerun(primary: str | None, running: bool) -> Expect:
    return lambda ref, point: Outcome("success", primary, running)


def expect_migrate(ref: list[Record], point: Point) -> Outcome:
    if not _tagged(ref, point, "migrate"):
        return Outcome("success", "node2", True, "interrupted before anything changed")
    # The fake guest has moved once it is stopped on the source.
    moved = index_of(ref, "stop on node1", lambda r: r.is_hypervisor("stop", "node1"))
    if point.ran(moved):
        return Outcome("success", "node2", True, "{name} runs on node2")
    return Outcome("error", "node1", True, "{name} runs on node1")


def _expect_failover(released: Callable[[list[Record]], int]) -> Expect:
    def expect(ref: list[Record], point: Point) -> Outcome:
        if not _tagged(ref, point, "failover"):
            return Outcome("success", "node2", True, "interrupted before anything changed")
        if point.ran(released(ref)) or _tagged(ref, point, "failover", "node2"):
            return Outcome("success", "node2", True, "released the disks; finished on node2")
        return Outcome("success", "node2", True, "running it again towards node2")

    return expect


#: Released once the source's detach ran — or, offline, once its fence command did.
expect_failover = _expect_failover(
    lambda ref: index_of(ref, "detach on node1", lambda r: r.is_provider("detach", "node1"))
)
expect_fenced = _expect_failover(lambda ref: index_of(ref, "fence", lambda r: r.is_fence))


def expect_disk_add(ref: list[Record], point: Point) -> Outcome:
    first = index_of(ref, "verify of the new disk", lambda r: r.is_provider("verify", "node1"))
    if point.journalled(first):
        return Outcome("error", "node1", True, "what it had done was undone")
    return Outcome("success", "node1", True)


FLOWS = {
    f.name: f
    for f in [
        Flow("add", _strict_as, _add_own_provider, expect_add, reset=_uninstall),
        Flow(
            "grow",
            _add,
            _op("OP_INSTANCE_GROW_DISK", disk=0, amount=4),
            expect_rerun("node1", True),
            extra_check=_grown_to_8,
        ),
        Flow("shutdown", _add, _op("OP_INSTANCE_SHUTDOWN"), expect_rerun("node1", False)),
        Flow("startup", _add_stopped, _op("OP_INSTANCE_STARTUP"), expect_rerun("node1", True)),
        Flow("remove", _add, _op("OP_INSTANCE_REMOVE"), expect_rerun(None, False)),
        Flow("migrate", _add, _op("OP_INSTANCE_MIGRATE", target_node="node2"), expect_migrate),
        Flow("failover", _add, _op("OP_INSTANCE_FAILOVER", target_node="node2"), expect_failover),
        Flow(
            "fenced",
            _add_on_offline_node,
            _op("OP_INSTANCE_FAILOVER", target_node="node2"),
            expect_fenced,
            reset=_node1_online,
            batched=False,
        ),
        Flow(
            "cleanup",
            _moved_but_source_kept,
            _op("OP_INSTANCE_MIGRATE", cleanup=True),
            expect_rerun("node2", True),
        ),
        Flow(
            "change-group",
            _add_node2_elsewhere,
            _op("OP_INSTANCE_CHANGE_GROUP", group_name="other"),
            expect_migrate,
            reset=_node2_back,
        ),
        Flow(
            "disk-add",
            _add_with_own_provider,
            _disk_add_op,
            expect_disk_add,
            extra_check=_holds_its_disks,
            reset=_uninstall,
        ),
        Flow(
            "disk-rm",
            _add_two_disks,
            lambda vols, name: _modify_op(vols, name, action="remove", disk="1"),
            expect_rerun("node1", True),
            extra_check=_one_disk_left,
        ),
        Flow(
            "disk-det",
            _add_two_disks,
            lambda vols, name: _modify_op(vols, name, action="detach", disk="1"),
            expect_rerun("node1", True),
            extra_check=_detached,
        ),
        Flow(
            "snapshot",
            _add,
            _op("OP_INSTANCE_SNAPSHOT", snapshot_name="s1"),
            expect_rerun("node1", True),
            extra_check=_snapshot_taken,
        ),
        Flow(
            "install",
            _nothing,
            _install_op,
            expect_rerun(None, False),
            extra_check=_installed_everywhere,
            reset=_uninstall,
            batched=False,
            per_node_order=True,
        ),
    ]
}


# -- day-2 operations: reboot, deactivate-disks, node migrate ----------------------------------


def _add_with_disks_active(c: MoveCluster, vols: Path, names: Names) -> None:
    """Stopped, its disks attached and open on node1 (``instance activate-disks``)."""
    _add_stopped(c, vols, names)
    run_all(c, [_op("OP_INSTANCE_ACTIVATE_DISKS")(vols, n) for n in names])


def _node_migrate_op(vols: Path, name: str) -> dict[str, Any]:
    return {"OP_ID": "OP_NODE_MIGRATE", "node_name": "node1", "target_node": "node2"}


def _children_done(c: MoveCluster) -> None:
    """Every job still unfinished (the per-instance jobs of a node migrate) has ended."""
    for job in c.tc.client.jobs(statuses=["queued", "waiting", "running", "canceling"]):
        c.tc.wait(job["id"], timeout=120)


def expect_node_migrate(ref: list[Record], point: Point) -> Outcome:
    """Before the submission is journalled: run again, the instance's job moves it.
    Once it is journalled the jobs may exist: the node migrate fails saying so, and the
    instance is where its job (if it was queued) took it."""
    submit = index_of(ref, "submit", lambda r: r.description.startswith("submit jobs"))
    if not point.journalled(submit):
        return Outcome("success", "node2", True, "interrupted before any job was submitted")
    moved = point.ran(submit)
    return Outcome("error", "node2" if moved else "node1", True, "while it submitted")


DAY2_FLOWS = [
    Flow(
        "reboot",
        _add,
        _op("OP_INSTANCE_REBOOT", timeout=1),
        lambda ref, point: Outcome("success", "node1", True, "{name} runs on node1"),
    ),
    Flow(
        "deactivate",
        _add_with_disks_active,
        _op("OP_INSTANCE_DEACTIVATE_DISKS"),
        expect_rerun("node1", False),
    ),
    Flow(
        "node-migrate",
        _add,
        _node_migrate_op,
        expect_node_migrate,
        batched=False,
        settle=_children_done,
    ),
]
FLOWS.update({f.name: f for f in DAY2_FLOWS})


def _disks_held_on_node1(c: MoveCluster, vols: Path, name: str, what: str) -> None:
    """After activate-disks: the configuration records the activation."""
    assert c.instance(name)["disks_active"] is True, f"{what}: activation not recorded"


FLOWS["activate-disks"] = Flow(
    "activate-disks",
    _add_stopped,
    _op("OP_INSTANCE_ACTIVATE_DISKS"),
    expect_rerun("node1", False),
    extra_check=_disks_held_on_node1,
)


# -- checks ----------------------------------------------------------------------------------


def markers(vols: Path, suffix: str) -> dict[str, set[str]]:
    return {
        d.name.removesuffix(suffix): {p.name for p in d.iterdir()}
        for d in vols.glob(f"*{suffix}")
        if d.is_dir()
    }


def check_consistent(c: Cluster, vols: Path, what: str) -> None:
    """Whatever the flow: no volume the configuration does not know, and no marker of
    one; every instance runs on its primary only and holds its disks there only
    (attached, open exclusively), or, when it does not run, holds them nowhere; and
    verify finds nothing."""
    configured: dict[str, str] = {}
    for info in c.tc.client.instances():
        full = c.instance(info["name"])
        for disk in full["disks"] + full.get("detached_disks", []):
            configured[disk["volume"]] = info["name"]
    images = {p.name.removesuffix(".img") for p in vols.glob("*.img")}
    assert images <= set(configured), f"{what}: leaked volumes {images - set(configured)}"
    for suffix in (".attached", ".open"):
        for volume, holders in markers(vols, suffix).items():
            if volume not in configured:
                assert not holders, f"{what}: unconfigured {volume} {suffix} on {holders}"
    for name in sorted(set(configured.values())):
        try:
            check_instance(c, name, verify=False)
        except AssertionError as exc:
            raise AssertionError(f"{what}: {exc}") from None
    job = run_ok(c, {"OP_ID": "OP_CLUSTER_VERIFY"})
    findings = job["ops"][0]["result"]["findings"]
    assert findings == [], f"{what}: verify found {findings}"
    # Verify leaves every disk where it found it (activated ones of a stopped instance
    # stay attached).
    for name in sorted(set(configured.values())):
        try:
            check_instance(c, name, verify=False)
        except AssertionError as exc:
            raise AssertionError(f"{what}: after verify: {exc}") from None


#: The random part of a staged copy's name (storage install).
STAGED = re.compile(r"\.install-[0-9a-f]+")


def labels(records: list[Record], name: str) -> list[str]:
    """The steps' labels, the same for every instance of the flow."""
    return [STAGED.sub(".install-<random>", r.label.replace(name, "<name>")) for r in records]


def _same_start(taken: list[str], expected: list[str], per_node: bool) -> bool:
    """Whether ``taken`` begins the steps of ``expected``: in the same order, or (per
    node) in the same order on each node (a label starts with its node)."""
    if not per_node:
        return taken == expected[: len(taken)]
    nodes = {label.split(":", 1)[0] for label in taken + expected}
    for node in nodes:
        mine = [t for t in taken if t.startswith(f"{node}:")]
        theirs = [e for e in expected if e.startswith(f"{node}:")]
        if mine != theirs[: len(mine)]:
            return False
    return True


def check_killed_at(
    records: list[Record],
    ref: list[Record],
    point: Point,
    name: str,
    what: str,
    *,
    per_node: bool = False,
) -> None:
    """The journal the killed daemon left shows the job stopped at ``point`` of the
    reference run's steps: the steps journalled are the reference's first ones, as many
    as the point implies, and the K-th is in the state the point implies."""
    taken, expected = labels(records, name), labels(ref, REF_NAME)
    assert _same_start(taken, expected, per_node), (
        f"{what}: the crashed run took other steps than the reference run:\n"
        f"  crashed:   {taken}\n  reference: {expected}"
    )
    if point.where == "before":
        assert len(records) == point.k - 1, f"{what}: journalled {taken}"
        return
    assert len(records) >= point.k, f"{what}: only {taken} journalled"
    stopped = records[point.k - 1]
    if point.where == "started":
        assert len(records) == point.k, f"{what}: journalled {taken}"
        assert stopped.status is StepStatus.STARTED, f"{what}: {stopped}"
        assert stopped.pgid is None, f"{what}: '{stopped.label}' had started on the node"
    else:
        assert stopped.status is not StepStatus.STARTED, f"{what}: '{stopped.label}' unfinished"
        if stopped.entry.command is not None and stopped.node != "master":
            assert stopped.pgid is not None, f"{what}: no process group for '{stopped.label}'"


def recovery_text(job: dict[str, Any]) -> str:
    lines = [e["message"] for e in job["log"] if e["type"] == "recovery"]
    lines += [op["error"]["message"] for op in job["ops"] if op.get("error")]
    return "\n".join(lines)


def check_outcome(
    c: MoveCluster,
    flow: Flow,
    vols: Path,
    name: str,
    job: dict[str, Any],
    want: Outcome,
    what: str,
) -> None:
    text = recovery_text(job)
    assert job["status"] == want.status, f"{what}: {job['status']}, not {want.status}:\n{text}"
    says = want.says.format(name=name)
    assert says in text, f"{what}: the recovery does not say '{says}':\n{text}"
    assert "daemon restarted while this job ran; recovering" in text, text
    names = c.instance_names()
    if want.primary is None:
        assert name not in names, f"{what}: {name} exists"
    else:
        assert name in names, f"{what}: {name} is gone"
        try:
            check_instance(c, name, on=want.primary, running=want.running, verify=False)
        except AssertionError as exc:
            raise AssertionError(f"{what}: {exc}\n{text}") from None
    if flow.name in ("migrate", "failover", "fenced", "change-group") and want.status == "success":
        result = job["ops"][0]["result"]
        assert result["primary"] == want.primary, f"{what}: reported as {result}"
    if flow.name == "fenced":
        assert "node1" in c.fenced(), f"{what}: node1 was never fenced"
    if flow.name == "node-fence":
        [node] = [n for n in c.tc.client.nodes() if n["name"] == "node1"]
        done = job["status"] == "success"
        assert node["offline"] is done, f"{what}: {job['status']}, node1 {node}"
        assert node["fenced"] is done, f"{what}: {job['status']}, node1 {node}"
    if want.fences is not None:
        runs = c.fenced().count("node1")
        assert runs == want.fences, f"{what}: node1 fenced {runs} times, not {want.fences}"
    flow.extra_check(c, vols, name, what)


def reset(c: Cluster, vols: Path, names: Names = (NAME,)) -> None:
    """Remove the instances that exist; no volume may be left."""
    left = [n for n in names if n in c.instance_names()]
    if left:
        run_all(c, [{"OP_ID": "OP_INSTANCE_REMOVE", "instance_name": n} for n in left])
    assert list(vols.glob("*.img")) == []


# -- running a flow ----------------------------------------------------------------------------

#: The instance (or provider) the reference run of a flow works on.
REF_NAME = "crash-ref"


def state_dir(c: Cluster) -> Path:
    return c.tc.base / "state"


def reference(c: MoveCluster, flow: Flow, vols: Path) -> list[Record]:
    """The flow without a crash: its steps, in the order they were journalled."""
    flow.setup(c, vols, [REF_NAME])
    job = run_ok(c, flow.op(vols, REF_NAME))
    flow.settle(c)
    check_consistent(c, vols, f"{flow.name} without a crash")
    flow.extra_check(c, vols, REF_NAME, f"{flow.name} without a crash")
    steps = read_journal(state_dir(c), job["id"])
    assert all(r.status is StepStatus.DONE for r in steps), steps
    flow.before_reset(c, vols, [REF_NAME])
    reset(c, vols, [REF_NAME])
    flow.reset(c, vols, [REF_NAME])
    return steps


def wait_dead(c: Cluster, timeout: float) -> bool:
    process = c.tc.daemon.process
    assert process is not None
    deadline = time.monotonic() + timeout
    while process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    return process.poll() is not None


def crash_and_recover(
    c: MoveCluster, flow: Flow, vols: Path, ref: list[Record], points: Sequence[Point]
) -> list[dict[str, Any]]:
    """Set up one instance per point, run the flow on each until every job waits at its
    point and the daemon kills itself; check where each job stopped, restart the
    daemon, wait for every job to end and check what it ended as. The jobs."""
    names = [f"crash-{p.where}-{p.k:02d}" for p in points]
    whats = [
        f"{flow.name} killed {p.where} step {p.k}/{len(ref)} ({ref[p.k - 1].label})" for p in points
    ]
    crash_file = c.tc.base / "crash-at"
    flow.setup(c, vols, names)
    first = max(j["id"] for j in c.tc.client.jobs()) + 1
    crash_file.write_text("".join(f"{p}:{first + i}\n" for i, p in enumerate(points)))
    try:
        ids = c.tc.client.submit({"jobs": [{"ops": [flow.op(vols, n)]} for n in names]})
        assert ids == list(range(first, first + len(points)))
        if not wait_dead(c, CRASH_TIMEOUT):
            stuck = {
                w: [r.label for r in read_journal(state_dir(c), i)]
                for w, i in zip(whats, ids, strict=True)
            }
            raise AssertionError(f"the daemon did not crash; the jobs' steps: {stuck}")
    finally:
        crash_file.unlink()
    for point, name, job_id, what in zip(points, names, ids, whats, strict=True):
        records = read_journal(state_dir(c), job_id)
        check_killed_at(records, ref, point, name, what, per_node=flow.per_node_order)
    c.tc.client.close()
    c.tc.daemon.start()
    c.tc.client = Client(c.tc.daemon.socket)
    jobs = [c.tc.wait(i, timeout=120) for i in ids]
    flow.settle(c)
    for point, name, job, what in zip(points, names, jobs, whats, strict=True):
        check_outcome(c, flow, vols, name, job, flow.expect(ref, point), what)
    left = c.tc.client.jobs(statuses=["queued", "waiting", "running", "canceling"])
    assert left == [], f"{flow.name} {[str(p) for p in points]}: jobs left unfinished: {left}"
    check_consistent(c, vols, f"{flow.name} killed at {[str(p) for p in points]}")
    flow.before_reset(c, vols, names)
    reset(c, vols, names)
    flow.reset(c, vols, names)
    return jobs


# -- a detached disk moved to another instance (--disk attach:from=…) -------------------------


def _src_vols(vols: Path) -> Path:
    """Where the source instances' disks live: not ``vols``, which :func:`reset` wants
    empty once the receivers are gone (the sources go in the flow's own reset)."""
    path = vols.parent / f"{vols.name}-src"
    path.mkdir(exist_ok=True)
    return path


def _with_detached_source(c: MoveCluster, vols: Path, names: Names) -> None:
    """Each receiver running on node1; its source ``<name>-src``, stopped on node2, has
    its only disk (the strict provider installed under the receiver's name, so that no
    two jobs share a diagnose) detached."""
    _strict_as(c, vols, names)
    _add(c, vols, names)
    src = _src_vols(vols)
    adds = [{**add_op(src, f"{n}-src", start=False, provider=n), "pnode": "node2"} for n in names]
    run_all(c, adds)
    run_all(c, [_modify_op(vols, f"{n}-src", action="detach", disk="0") for n in names])


def _disk_move_op(vols: Path, name: str) -> dict[str, Any]:
    return _modify_op(vols, name, action="attach", disk="0", source_instance=f"{name}-src")


def expect_disk_move(ref: list[Record], point: Point) -> Outcome:
    """Before the moved disk's first step on node1: run again, ``success``. After it:
    ``error``, its steps undone; the disk stays a detached disk of its source."""
    first = min(i for i, r in enumerate(ref, 1) if r.is_provider("attach", "node1"))
    if point.journalled(first):
        return Outcome("error", "node1", True, "what it had done was undone")
    return Outcome("success", "node1", True)


def _moved_or_kept(c: MoveCluster, vols: Path, name: str, what: str) -> None:
    """The disk is the receiver's disk 1 or its source's detached disk, never both nor
    neither; its volume exists, under its old name, held only by a guest that has it."""
    _holds_its_disks(c, vols, name, what)
    src, dst = c.instance(f"{name}-src"), c.instance(name)
    moved = [d for d in dst["disks"] if d["index"] == 1]
    kept = src["detached_disks"]
    assert len(moved) + len(kept) == 1, f"{what}: moved {moved}, kept {kept}"
    assert src["disks"] == [], f"{what}: the source has {src['disks']}"
    [disk] = moved or kept
    assert disk["volume"].endswith(".ext.disk0"), f"{what}: {disk['volume']}"
    image = _src_vols(vols) / f"{disk['volume']}.img"
    assert image.exists(), f"{what}: {image} is gone"
    if kept:
        attached, opened = inv_markers(_src_vols(vols), disk["volume"])
        assert not attached, f"{what}: the kept disk is attached on {attached}"
        assert not opened, f"{what}: the kept disk is open on {opened}"


def _remove_sources(c: MoveCluster, vols: Path, names: Names) -> None:
    reset(c, _src_vols(vols), [f"{n}-src" for n in names])
    _uninstall(c, vols, names)


FLOWS["disk-move"] = Flow(
    "disk-move",
    _with_detached_source,
    _disk_move_op,
    expect_disk_move,
    extra_check=_moved_or_kept,
    reset=_remove_sources,
)


# -- a node fenced on its own (node fence, as the watcher submits it) -------------------------


def _fence_node1_op(vols: Path, name: str) -> dict[str, Any]:
    return {"OP_ID": "OP_NODE_FENCE", "node_name": "node1"}


def expect_node_fence(ref: list[Record], point: Point) -> Outcome:
    """``success`` at every point, the fence command run exactly once in all: journalled
    as done, recovery does not run it again and marks node1 offline and fenced; not yet
    run (before its step, or journalled as started: the crash comes before its command),
    the op runs again and fences. The instance stays on node1, marked up, its guest
    stopped by the fence and its disks held nowhere, until it is failed over."""
    fence = index_of(ref, "fence", lambda r: r.is_fence)
    if point.ran(fence):
        return Outcome(
            "success", "node1", False, "node1 had been fenced before the restart", fences=1
        )
    return Outcome("success", "node1", False, "fencing node1 interrupted", fences=1)


def _still_up_on_node1(c: MoveCluster, vols: Path, name: str, what: str) -> None:
    """The fence changes nothing of what should run: the instance is still marked up."""
    info = c.instance(name)
    assert info["admin_up"] is True, f"{what}: {info}"


def _fail_over_from_fenced(c: MoveCluster, vols: Path, names: Names) -> None:
    """Each instance failed over to node2 (what the watcher submits after the fence);
    node1 was fenced by the op, so the failover does not fence it again."""
    before = c.fenced()
    run_all(c, [_op("OP_INSTANCE_FAILOVER", target_node="node2")(vols, n) for n in names])
    assert c.fenced() == before, f"the failover fenced node1 again: {c.fenced()}"


FLOWS["node-fence"] = Flow(
    "node-fence",
    _add_on_offline_node,
    _fence_node1_op,
    expect_node_fence,
    extra_check=_still_up_on_node1,
    reset=_node1_online,
    batched=False,
    min_steps=1,
    before_reset=_fail_over_from_fenced,
)
