"""The invariants of moving instances, checked from the outside after every flow.

For each instance, from three independent sources:

- the configuration, through the API: its primary and whether it is marked up;
- the guests on every node, read on this machine (every test node runs here): every
  live guest process of the instance in ``/proc`` (see :func:`guest_processes`), and
  for kvm qemu's own run state asked on its QMP socket;
- the strict provider's markers in the shared volume directory:
  ``<VOL>.attached/<node>`` and ``<VOL>.open/<node>.{exclusive,shared}``.

They must agree: the guest process exists on at most one node, and that is the
primary; there the disks are attached and open exclusively, and nowhere else; when the
guest runs nowhere the disks are attached nowhere — unless the instance is stopped with
its disks activated for a repair (``disks_active``): then they are attached and open
exclusively on its primary only. Reading the nodes locally keeps the
check valid while a node's SSH server is stopped.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
from pathlib import Path
from typing import Any

import attrs

from tests.harness.procs import is_alive
from tests.instances.conftest import Cluster


@attrs.frozen
class Snapshot:
    """What one instance looks like from outside."""

    primary: str
    admin_up: bool
    #: node → qemu run state, or ``"running"`` for a fake guest
    guests: dict[str, str]
    #: volume → nodes with an attachment marker
    attached: dict[str, set[str]]
    #: volume → node → ``exclusive``/``shared``
    opened: dict[str, dict[str, str]]
    #: The disks were activated for a repair (``activate-disks``): a stopped instance
    #: holds them on its primary.
    disks_active: bool = False

    @property
    def running_on(self) -> list[str]:
        return sorted(self.guests)


def qmp(path: Path, *commands: str) -> list[Any]:
    """Run QMP commands on a local socket; their return values."""
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(10)
        sock.connect(str(path))
        stream = sock.makefile("rwb")
        json.loads(stream.readline())
        replies: list[Any] = []
        for execute in ("qmp_capabilities", *commands):
            stream.write(json.dumps({"execute": execute}).encode() + b"\n")
            stream.flush()
            while "event" in (reply := json.loads(stream.readline())):
                pass
            replies.append(reply.get("return", reply.get("error")))
    return replies[1:]


def guest_pid(run_dir: Path, node: str, uuid: str) -> int | None:
    """The pid of the instance's guest on ``node`` if it is alive and ours."""
    return guest_processes(run_dir, uuid).get(node)


def guest_processes(run_dir: Path, uuid: str) -> dict[str, int]:
    """Every live guest process of the instance, by node, found in ``/proc`` (not through
    pid files, which a crash or a fence may have removed).

    A fake guest's command line names ``extjobs-fake-<uuid>`` and it runs in its node's
    run directory; a qemu's names its pid file ``<run dir>/<node>/<uuid>.pid``.
    """
    found: dict[str, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"extjobs-fake-{uuid}".encode() in argv:
            try:
                where = Path(os.readlink(entry / "cwd"))
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat[stat.rindex(")") + 2 :].split()[2]) != pid:
                continue  # a child forked by the holder, not the holder (its group leader)
        elif argv[0].endswith(b"qemu-system-x86_64") and b"-pidfile" in argv[:-1]:
            pidfile = Path(os.fsdecode(argv[argv.index(b"-pidfile") + 1]))
            if pidfile.name != f"{uuid}.pid":
                continue
            where = pidfile.parent
        else:
            continue
        if not is_alive(pid):
            continue
        node = where.name if where.parent == run_dir.resolve() else f"?{where}"
        assert node not in found, f"two guest processes of {uuid} on {node}: {found[node]}, {pid}"
        found[node] = pid
    return found


def markers(directory: Path, volume: str) -> tuple[set[str], dict[str, str]]:
    attached_dir = directory / f"{volume}.attached"
    open_dir = directory / f"{volume}.open"
    attached = {p.name for p in attached_dir.iterdir()} if attached_dir.is_dir() else set()
    opened = (
        {p.name.rsplit(".", 1)[0]: p.name.rsplit(".", 1)[1] for p in open_dir.iterdir()}
        if open_dir.is_dir()
        else {}
    )
    return attached, opened


def snapshot(cluster: Cluster, name: str) -> Snapshot:
    info = cluster.instance(name)
    uuid = info["uuid"]
    guests: dict[str, str] = {}
    for node, _pid in sorted(guest_processes(cluster.run_dir, uuid).items()):
        state = "running"
        if info["hypervisor"] == "kvm":
            state = "no answer"
            with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
                state = qmp(cluster.run_dir / node / f"{uuid}.qmp", "query-status")[0]["status"]
        guests[node] = state
    attached: dict[str, set[str]] = {}
    opened: dict[str, dict[str, str]] = {}
    for disk in info["disks"]:
        if disk["provider"] != "strict":
            continue
        attached[disk["volume"]], opened[disk["volume"]] = markers(
            Path(disk["params"]["dir"]), disk["volume"]
        )
    return Snapshot(
        info["primary"],
        info["state"] == "up",
        guests,
        attached,
        opened,
        bool(info.get("disks_active")),
    )


def check(
    cluster: Cluster,
    name: str,
    *,
    on: str | None = None,
    running: bool | None = None,
    verify: bool = True,
) -> Snapshot:
    """Assert the invariants for instance ``name`` (see the module docstring).

    ``on``: the expected primary; ``running``: whether its guest should run. With
    ``verify``, ``extjobs verify`` must also find nothing (all nodes must answer).
    Returns the snapshot for further checks.
    """
    snap = snapshot(cluster, name)
    where = f"{name}: {snap}"
    assert len(snap.guests) <= 1, f"guest processes on several nodes: {where}"
    if on is not None:
        assert snap.primary == on, f"primary is not {on}: {where}"
    if running is not None:
        assert bool(snap.guests) == running, f"running should be {running}: {where}"
    if snap.guests:
        ((node, state),) = snap.guests.items()
        assert node == snap.primary, f"the guest runs on {node}, not on the primary: {where}"
        assert state == "running", f"the guest on {node} is {state}: {where}"
        for volume in snap.attached:
            assert snap.attached[volume] == {node}, f"{volume} attached elsewhere: {where}"
            assert snap.opened[volume] == {node: "exclusive"}, f"{volume} open: {where}"
    elif snap.disks_active and not snap.admin_up:
        for volume in snap.attached:
            held = snap.primary
            assert snap.attached[volume] == {held}, f"{volume} activated elsewhere: {where}"
            assert snap.opened[volume] == {held: "exclusive"}, f"{volume} open: {where}"
    else:
        for volume in snap.attached:
            assert snap.attached[volume] == set(), f"{volume} attached while down: {where}"
            assert snap.opened[volume] == {}, f"{volume} open while down: {where}"
    if verify:
        job = cluster.tc.run_job([{"OP_ID": "OP_CLUSTER_VERIFY"}])
        assert job["status"] == "success", job
        findings = job["ops"][0]["result"]["findings"]
        assert findings == [], findings
    return snap
