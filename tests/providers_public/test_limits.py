"""Per-action timeouts and capped output, through the daemon on real SSH nodes.

The cluster's daemon allows ``create`` two seconds (``[storage.timeouts]``). A provider
whose ``create`` leaves a background child and hangs is killed with its whole process
group on the node, and what it created is undone. A provider whose ``attach`` floods
100 MiB is recorded with bounded output tails and a count of the bytes dropped, and the
daemon's memory does not grow with the flood.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest

from tests.harness.procs import is_alive
from tests.instances.conftest import KINDS, needs_loop, open_files
from tests.providers_public.conftest import (
    LVM,
    MIB,
    PublicCluster,
    is_block_device,
    open_public_cluster,
)

pytestmark = needs_loop

CREATE_TIMEOUT = 2.0
FLOOD = 100 * MIB
#: What the daemon keeps of each stream of a run (``[storage] output_cap``, default).
OUTPUT_CAP = 65536
#: The daemon may grow by this much while a provider floods it (it should not grow at all).
RSS_SLACK = 50 * MIB
NOTHING_LEFT: dict[str, list[str]] = {"volumes": [], "links": [], "loops": []}


@pytest.fixture(scope="module", params=KINDS)
def cluster(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PublicCluster]:
    base = tmp_path_factory.mktemp(f"limits-{request.param}")
    timeouts = f"[storage.timeouts]\ncreate = {CREATE_TIMEOUT}\n"
    with open_public_cluster(request.param, base, storage_extra=timeouts) as c:
        yield c


# -- a create that hangs -------------------------------------------------------------------

SLOW_CREATE = """\
. ./common.sh
run_lvm lvcreate -L "${VOL_SIZE}M" -n "$VOL_NAME" "$EXTP_VG"
say "waiting for $LV to settle"
sleep 1000 &
sleep 999
"""


def processes_with_env(entry: str) -> dict[int, str]:
    """Live processes whose environment holds ``entry`` (``NAME=VALUE``): pid → cmdline."""
    wanted = entry.encode()
    found = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            environ = (proc / "environ").read_bytes().split(b"\0")
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
        if wanted in environ and is_alive(int(proc.name)):
            found[int(proc.name)] = cmdline
    return found


@attrs.frozen
class SlowAdd:
    job: dict[str, Any]
    provider_dir: Path
    #: The provider's processes seen on the node while create hung: pid → command line.
    running: dict[int, str]


@pytest.fixture(scope="module")
def slow_add(cluster: PublicCluster) -> SlowAdd:
    """One instance add whose only disk's ``create`` hangs past its timeout."""
    LVM.make_storage(cluster.tools, "vg-slow")
    provider_dir = cluster.install("lvmslow", LVM.provider, {"create": SLOW_CREATE})
    disk = {"size": 8, "provider": "lvmslow", "params": {"vg": "vg-slow"}}
    op = {"OP_ID": "OP_INSTANCE_CREATE", "instance_name": "slow", "pnode": "node1"}
    job_id = cluster.tc.client.submit({"ops": [{**op, "disks": [disk]}]})[0]

    # While create hangs, its script and both sleeps run on the node (this machine); they
    # carry the provider's environment, which is how they are told from other processes.
    deadline = time.monotonic() + 60
    running: dict[int, str] = {}
    wanted = {f"/bin/bash {provider_dir}/create", "sleep 1000", "sleep 999"}
    while time.monotonic() < deadline:
        # Short-lived tools (lvcreate) come and go; wait for the long-running three.
        running = {
            pid: cmd
            for pid, cmd in processes_with_env("EXTP_PROVIDER=lvmslow").items()
            if cmd in wanted
        }
        if len(running) == 3:
            break
        time.sleep(0.02)
    return SlowAdd(cluster.tc.wait(job_id), provider_dir, running)


def test_create_timeout_kills_the_script_and_its_child_and_undoes(
    cluster: PublicCluster, slow_add: SlowAdd
) -> None:
    assert sorted(slow_add.running.values()) == [
        f"/bin/bash {slow_add.provider_dir}/create",
        "sleep 1000",
        "sleep 999",
    ]
    job = slow_add.job
    assert job["status"] == "error"
    assert job["ops"][0]["error"]["message"] == (
        f"{slow_add.provider_dir}/create on node node1 timed out after "
        f"{CREATE_TIMEOUT:g}s and was killed"
    )
    (logged,) = [
        entry["data"]
        for entry in job["log"]
        if entry["type"] == "step"
        and entry["message"].startswith("node1: create disk0 (lvmslow): ")
    ]
    assert logged["error"]["kind"] == "timeout"

    # Nothing of the script is left running on the node: not the script, not its child.
    # (SIGKILL was sent before the job ended; allow the kernel a moment to reap.)
    deadline = time.monotonic() + 5
    while any(is_alive(pid) for pid in slow_add.running) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert [cmd for pid, cmd in slow_add.running.items() if is_alive(pid)] == []
    assert processes_with_env("EXTP_PROVIDER=lvmslow") == {}

    # The volume lvcreate made before the hang was removed by the undo.
    log = cluster.log_text(job)
    assert "undone: removed disk0" in log
    assert "partial add of slow undone; the configuration was not changed" in log
    assert "slow" not in cluster.instance_names()
    assert LVM.leftovers(cluster.tools, "vg-slow") == NOTHING_LEFT


def test_timed_out_create_keeps_what_it_printed(cluster: PublicCluster, slow_add: SlowAdd) -> None:
    """The output of every run is stored with the job (DESIGN §3), a killed one's too:
    what a hung script said last is the operator's best clue."""
    (logged,) = [
        entry["data"]
        for entry in slow_add.job["log"]
        if entry["type"] == "step"
        and entry["message"].startswith("node1: create disk0 (lvmslow): ")
    ]
    assert "lvmstyle: waiting for vg-slow/" in logged.get("stderr_tail", ""), logged


# -- attach flooding its output ------------------------------------------------------------

FLOOD_STDOUT = f"""\
. ./common.sh
run_lvm lvchange -ay "$LV"
echo "$DEV"
yes 'junk junk junk junk junk junk junk junk' | head -c {FLOOD}
"""

FLOOD_STDERR = f"""\
. ./common.sh
run_lvm lvchange -ay "$LV"
yes 'lvmflood: still attaching' | head -c {FLOOD} >&2
echo "$DEV"
"""

# Well-formed but more than the daemon keeps: the device, then `kvm:` URI lines.
FLOOD_URIS = f"""\
. ./common.sh
run_lvm lvchange -ay "$LV"
echo "$DEV"
yes 'kvm:rbd:pool/volume' | head -c {4 * OUTPUT_CAP}
"""


def test_attach_flooding_stdout_is_capped(cluster: PublicCluster) -> None:
    tools = cluster.tools
    LVM.make_storage(tools, "vg-flood-out")
    cluster.install("lvmfloodout", LVM.provider, {"attach": FLOOD_STDOUT})
    before = cluster.daemon_peak_rss()
    cluster.fails(
        "instance",
        "add",
        "floodout",
        "-n",
        "node1",
        "--disk",
        LVM.disk(0, "8M", "vg-flood-out", provider="lvmfloodout"),
        message="attach of provider 'lvmfloodout' on node 'node1' printed a line that is not "
        "<hypervisor>:<uri>: 'junk junk junk junk junk junk junk junk'",
    )
    job = cluster.last_job()
    assert cluster.daemon_peak_rss() - before < RSS_SLACK

    # The attach run is recorded: a bounded tail of its output and how much was dropped.
    (attach,) = cluster.steps(job, "attach")
    assert attach["exit_status"] == 0
    line1 = f"{LVM.link(tools, 'vg-flood-out', cluster.volume_of(job))}\n"
    total = len(line1) + FLOOD
    assert total - OUTPUT_CAP <= attach["stdout_dropped"] < total
    assert 0 < len(attach["stdout_tail"]) <= 2000
    assert attach["stdout_tail"].endswith("junk junk\n")
    error = job["ops"][0]["error"]["message"]
    assert error.count("junk") < 200, "the error shows a bounded excerpt"

    log = cluster.log_text(job)
    assert "undone: detached disk0" in log
    assert "undone: removed disk0" in log
    assert LVM.leftovers(tools, "vg-flood-out") == NOTHING_LEFT


def test_attach_flooding_stderr_still_attaches(cluster: PublicCluster) -> None:
    tools = cluster.tools
    LVM.make_storage(tools, "vg-flood-err")
    cluster.install("lvmflooderr", LVM.provider, {"attach": FLOOD_STDERR})
    before = cluster.daemon_peak_rss()
    cluster.ok(
        "instance",
        "add",
        "flooderr",
        "-n",
        "node1",
        "--disk",
        LVM.disk(0, "8M", "vg-flood-err", provider="lvmflooderr"),
    )
    job = cluster.last_job()
    assert cluster.daemon_peak_rss() - before < RSS_SLACK

    link = LVM.link(tools, "vg-flood-err", cluster.volume_of(job))
    (attach,) = cluster.steps(job, "attach")
    assert attach["stdout_tail"] == f"{link}\n"
    assert attach["stdout_dropped"] == 0
    assert FLOOD - OUTPUT_CAP <= attach["stderr_dropped"] < FLOOD
    assert 0 < len(attach["stderr_tail"]) <= 2000
    assert is_block_device(link)
    pid = cluster.guest_pid("flooderr")
    assert pid is not None
    assert str(link.resolve()) in open_files(pid)

    cluster.ok("instance", "remove", "flooderr")
    assert LVM.leftovers(tools, "vg-flood-err") == NOTHING_LEFT


def test_attach_output_beyond_the_cap_is_not_blamed_on_the_provider(
    cluster: PublicCluster,
) -> None:
    """Every line this attach prints keeps the contract (a block device, then
    ``<hypervisor>:<uri>`` lines); there are just more of them than the daemon keeps.
    What is kept (line 1 and the first URIs, which win) is all the parse needs. The
    cut the daemon makes -- a line split at the edge of the kept head, the
    ``[... N bytes dropped ...]`` marker between head and tail -- is not something the
    provider printed, and must not be reported as a broken line of its output."""
    tools = cluster.tools
    LVM.make_storage(tools, "vg-flood-uris")
    cluster.install("lvmflooduris", LVM.provider, {"attach": FLOOD_URIS})
    result = cluster.cli(
        "instance",
        "add",
        "flooduris",
        "-n",
        "node1",
        "--disk",
        LVM.disk(0, "8M", "vg-flood-uris", provider="lvmflooduris"),
    )
    job = cluster.last_job()
    error = (job["ops"][0].get("error") or {}).get("message", "")
    assert job["status"] == "success", error[:300]
    assert result.returncode == 0
    (attach,) = cluster.steps(job, "attach")
    assert attach["stdout_dropped"] > 0
    pid = cluster.guest_pid("flooduris")
    assert pid is not None
    link = LVM.link(tools, "vg-flood-uris", cluster.volume_of(job))
    assert str(link.resolve()) in open_files(pid)
    cluster.ok("instance", "remove", "flooduris")
    assert LVM.leftovers(tools, "vg-flood-uris") == NOTHING_LEFT
