"""Providers written the way public ones are, through the daemon on real SSH nodes.

``lvmstyle`` and ``zfsstyle`` (``tests/data/providers``) are bash with ``set -e``, call
``lvcreate``/``zfs`` by bare name from ``PATH`` (stand-ins backed by loop devices),
source ``./common.sh`` or read ``./config`` by relative path, chatter on stderr, and
exit 0 after a failed storage command. Against them: the full life of an instance
(a real block device held open by the guest, grown, removed without a trace), and the
lies only extjobs' own checks catch.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator

import pytest

from tests.harness.procs import is_alive
from tests.instances.conftest import KINDS, needs_loop, open_files
from tests.providers_public.conftest import (
    LVM,
    MIB,
    ZFS,
    PublicCluster,
    Style,
    blockdev_size,
    is_block_device,
    open_public_cluster,
)

pytestmark = needs_loop

STYLES = [pytest.param(LVM, id="lvm"), pytest.param(ZFS, id="zfs")]

NOTHING_LEFT: dict[str, list[str]] = {"volumes": [], "links": [], "loops": []}


@pytest.fixture(scope="module", params=KINDS)
def cluster(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PublicCluster]:
    base = tmp_path_factory.mktemp(f"public-{request.param}")
    with open_public_cluster(request.param, base) as c:
        yield c


@pytest.mark.parametrize("style", STYLES)
def test_add_grow_remove(cluster: PublicCluster, style: Style) -> None:
    tools = cluster.tools
    storage = f"{style.param}-life"
    style.make_storage(tools, storage)
    name = f"life-{style.param}"

    out = cluster.ok("instance", "add", name, "-n", "node1", "--disk", style.disk(0, "8M", storage))
    assert f"instance {name} added on node1, running" in out
    job = cluster.last_job()
    volume = cluster.volume_of(job)

    # attach printed its /dev/VG/LV- or /dev/zvol/POOL/NAME-style path, a real block
    # device on the node …
    link = style.link(tools, storage, volume)
    (attach,) = cluster.steps(job, "attach")
    assert attach["stdout_tail"] == f"{link}\n"
    assert is_block_device(link)
    device = os.path.realpath(link)
    assert device.startswith("/dev/loop")
    assert style.leftovers(tools, storage)["loops"] == [device]
    assert blockdev_size(link) == 8 * MIB
    # … held open by the guest, which got the path attach printed.
    pid = cluster.guest_pid(name)
    assert pid is not None
    assert device in open_files(pid)
    assert style.metadata(tools, storage, volume) == f"originstname+{name}\n"
    # The chatter went to stderr, where the job keeps it.
    (create,) = cluster.steps(job, "create")
    assert f"{style.provider}: creating" in create["stderr_tail"]

    out = cluster.ok("instance", "grow-disk", name, "0", "8M")
    assert "8 → 16 MiB" in out
    assert blockdev_size(link) == 16 * MIB
    assert style.image(tools, storage, volume).stat().st_size == 16 * MIB
    assert [d["size"] for d in cluster.instance(name)["disks"]] == [16]
    assert cluster.guest_pid(name) == pid
    assert is_alive(pid)

    cluster.ok("instance", "remove", name)
    assert not is_alive(pid)
    assert name not in cluster.instance_names()
    assert style.leftovers(tools, storage) == NOTHING_LEFT


@pytest.mark.parametrize(
    ("style", "capacity", "bad_storage", "tool_error"),
    [
        # lvcreate refuses: the volume group has 32 MiB, disk 0 took 8 of them.
        pytest.param(LVM, 32, None, "insufficient free space", id="lvm-no-space"),
        # zfs create refuses: the pool does not exist (verify checks nothing).
        pytest.param(ZFS, None, "nopool", "no such pool 'nopool'", id="zfs-no-pool"),
    ],
)
def test_create_that_lies_is_caught_by_the_attach_check(
    cluster: PublicCluster,
    style: Style,
    capacity: int | None,
    bad_storage: str | None,
    tool_error: str,
) -> None:
    tools = cluster.tools
    storage = f"{style.param}-lie"
    style.make_storage(tools, storage, capacity)
    name = f"lie-{style.param}"
    cluster.fails(
        "instance",
        "add",
        name,
        "-n",
        "node1",
        "--disk",
        style.disk(0, "8M", storage),
        "--disk",
        style.disk(1, "64M", bad_storage or storage),
        message=f"attach of provider '{style.provider}' on node 'node1' printed",
    )
    job = cluster.last_job()
    assert job["status"] == "error"

    # The provider lied: its storage command failed, yet create exited 0 …
    (create,) = cluster.steps(job, "create", disk=1)
    assert create["exit_status"] == 0
    assert tool_error in create["stderr_tail"]
    # … and so did attach, printing the path of a device that does not exist.
    printed = style.link(tools, bad_storage or storage, cluster.volume_of(job, disk=1))
    (attach,) = cluster.steps(job, "attach", disk=1)
    assert (attach["exit_status"], attach["stdout_tail"]) == (0, f"{printed}\n")
    error = job["ops"][0]["error"]["message"]
    assert error.startswith(
        f"attach of provider '{style.provider}' on node 'node1' printed '{printed}', "
        "which is not a block device on the node (or does not exist); "
        "create had exited 0 but said on stderr: "
    )
    # The cause, not only the symptom: what the lying create printed.
    assert tool_error in error

    log = cluster.log_text(job)
    for undone in ("detached disk1", "removed disk1", "detached disk0", "removed disk0"):
        assert f"undone: {undone}" in log, log
    assert "the configuration was not changed" in log
    assert name not in cluster.instance_names()
    assert not list(cluster.run_dir.rglob("*.pid"))
    assert style.leftovers(tools, storage) == NOTHING_LEFT
    if bad_storage is not None:
        assert style.leftovers(tools, bad_storage) == NOTHING_LEFT


def test_chatter_on_stdout_before_the_device_is_refused(cluster: PublicCluster) -> None:
    tools = cluster.tools
    LVM.make_storage(tools, "vg-chatty")
    # A provider that forgot to send its progress message to stderr.
    cluster.install(
        "lvmchatty",
        LVM.provider,
        {
            "attach": ". ./common.sh\n"
            'echo "Activating logical volume $LV"\n'
            'run_lvm lvchange -ay "$LV"\n'
            'echo "$DEV"\n'
        },
    )
    cluster.fails(
        "instance",
        "add",
        "chatty",
        "-n",
        "node1",
        "--disk",
        LVM.disk(0, "8M", "vg-chatty", provider="lvmchatty"),
        message="attach of provider 'lvmchatty' on node 'node1' printed a first line that "
        "is not an absolute device path; it printed 'Activating logical volume vg-chatty/",
    )
    job = cluster.last_job()
    volume = cluster.volume_of(job)
    error = job["ops"][0]["error"]["message"]
    assert f"\\n{LVM.link(tools, 'vg-chatty', volume)}\\n'" in error
    log = cluster.log_text(job)
    assert "undone: detached disk0" in log
    assert "undone: removed disk0" in log
    assert "chatty" not in cluster.instance_names()
    assert LVM.leftovers(tools, "vg-chatty") == NOTHING_LEFT


@pytest.mark.parametrize(
    ("style", "relative_file"),
    [pytest.param(LVM, "./common.sh", id="lvm"), pytest.param(ZFS, "./config", id="zfs")],
)
def test_scripts_run_in_the_provider_directory(
    cluster: PublicCluster, style: Style, relative_file: str
) -> None:
    tools = cluster.tools
    storage = f"{style.param}-cwd"
    style.make_storage(tools, storage)
    node = cluster.tc.nodes[0]
    provider_dir = cluster.tc.search_path(node) / style.provider

    # Started anywhere else, the script cannot find the file it reads by relative path.
    env = {
        "PATH": tools.path_env,
        "LC_ALL": "C",
        "VOL_NAME": "0123abcd.ext.disk0",
        "VOL_SIZE": "4",
        f"EXTP_{style.param.upper()}": storage,
        "EXTP_PROVIDER": style.provider,
    }
    outside = subprocess.run(
        [str(provider_dir / "create")],
        cwd="/",
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        check=False,
    )
    assert outside.returncode != 0
    assert f"{relative_file}: No such file or directory" in outside.stderr
    assert style.leftovers(tools, storage)["volumes"] == []

    # Through extjobs every script finds it: extjobs runs them in the provider directory.
    name = f"cwd-{style.param}"
    cluster.ok(
        "instance",
        "add",
        name,
        "-n",
        "node1",
        "--no-start",
        "--disk",
        style.disk(0, "4M", storage),
    )
    job = cluster.last_job()
    volume = cluster.volume_of(job)
    for action in ("verify", "create", "attach", "setinfo"):
        (step,) = cluster.steps(job, action)
        assert step["exit_status"] == 0
        assert "No such file" not in step["stderr_tail"], (action, step["stderr_tail"])
    assert style.image(tools, storage, volume).stat().st_size == 4 * MIB
    assert style.metadata(tools, storage, volume) == f"originstname+{name}\n"
    cluster.ok("instance", "remove", name)
    assert style.leftovers(tools, storage) == NOTHING_LEFT
