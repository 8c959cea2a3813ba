"""Pure translation of the backends: run directories, status lines, argv, disk paths."""

from __future__ import annotations

import attrs
import pytest

from extjobs.errors import HypervisorError, InputError
from extjobs.extstorage.attach import AttachInfo
from extjobs.hypervisors import get_hypervisor
from extjobs.hypervisors.base import RuntimeStatus, parse_node_info, parse_status, run_dir_for
from extjobs.hypervisors.fake import MAX_DISKS
from extjobs.hypervisors.kvm import qemu_argv
from extjobs.model.cluster import Cluster, Disk, Instance

INST = Instance(name="web1", primary="n1", hypervisor="kvm", memory=96, vcpus=2, uuid="u-1")


@pytest.mark.parametrize(
    ("base", "expected"),
    [
        pytest.param(None, "run/extjobs/n1", id="default-relative"),
        pytest.param("/var/run/xj/", "/var/run/xj/n1", id="absolute"),
        pytest.param("/", "/n1", id="root"),
    ],
)
def test_run_dir_is_per_node(base: str | None, expected: str) -> None:
    assert run_dir_for(Cluster(name="c", hv_run_dir=base), "n1") == expected


@pytest.mark.parametrize("base", ["/a,b", "/a/../b", "/a b", "/a\nb"])
def test_run_dir_refuses_unsafe_characters(base: str) -> None:
    with pytest.raises(InputError, match="run directory"):
        run_dir_for(Cluster(name="c", hv_run_dir=base), "n1")


def test_parse_status() -> None:
    assert parse_status("running 42 /r/n1\n", node="n1") == RuntimeStatus(True, 42, "/r/n1")
    assert parse_status("stopped /r/n1\n", node="n1") == RuntimeStatus(False, None, "/r/n1")
    assert parse_status("stopped\n", node="n1") == RuntimeStatus(False)
    with pytest.raises(HypervisorError, match="n1"):
        parse_status("what\n", node="n1")


def test_qemu_argv_is_headless_and_daemon_friendly() -> None:
    argv = qemu_argv(INST, ["/dev/loop3", "/srv/a,b.img", "rbd:pool/vol"])
    assert argv[0] == "qemu-system-x86_64"
    assert "-nographic" not in argv
    assert argv[argv.index("-display") + 1] == "none"
    assert argv[argv.index("-machine") + 1] == "accel=kvm:tcg"
    assert argv[argv.index("-m") + 1] == "96"
    assert argv[argv.index("-smp") + 1] == "2"
    drives = [argv[i + 1] for i, word in enumerate(argv) if word == "-drive"]
    assert drives == [
        "file=/dev/loop3,format=raw,if=none,id=disk0",
        "file=/srv/a,,b.img,format=raw,if=none,id=disk1",
        "file=rbd:pool/vol,format=raw,if=none,id=disk2",
    ]
    devices = [argv[i + 1] for i, word in enumerate(argv) if word == "-device"]
    assert devices[0] == "virtio-scsi-pci,id=scsi0"
    assert devices[1:4] == [
        f"scsi-hd,bus=scsi0.0,drive=disk{i},id=disk{i}-dev,scsi-id={i}" for i in range(3)
    ]
    assert "name=org.qemu.guest_agent.0" in devices[-1]


def test_qemu_argv_keeps_each_disks_index_after_a_removal() -> None:
    """Disks 0 and 2 (disk 1 was removed) stay disk0 and disk2, at SCSI ids 0 and 2:
    a migration target started from the configuration matches the hot-plugged source."""
    disks = (
        Disk(uuid="a", index=0, size=1, provider="p"),
        Disk(uuid="c", index=2, size=1, provider="p"),
    )
    argv = qemu_argv(attrs.evolve(INST, disks=disks), ["/dev/loop3", "/dev/loop5"])
    drives = [argv[i + 1] for i, word in enumerate(argv) if word == "-drive"]
    assert drives == [
        "file=/dev/loop3,format=raw,if=none,id=disk0",
        "file=/dev/loop5,format=raw,if=none,id=disk2",
    ]
    assert "scsi-hd,bus=scsi0.0,drive=disk2,id=disk2-dev,scsi-id=2" in argv


def test_kvm_start_command_passes_everything_as_arguments() -> None:
    cmd = get_hypervisor("kvm").start_command(INST, ["/dev/loop3"], "run/extjobs/n1", timeout=9)
    assert cmd.argv[:2] == ("/bin/sh", "-c")
    assert cmd.argv[3:6] == ("sh", "run/extjobs/n1", "u-1")
    assert "-daemonize" in cmd.argv[2]
    assert "-pidfile" in cmd.argv[2]
    assert "/dev/loop3" not in cmd.argv[2]  # data never spliced into the script
    assert cmd.timeout == 9


def test_kvm_resize_is_block_resize_in_bytes() -> None:
    assert get_hypervisor("kvm").resize_commands(1, 32) == [
        ("block_resize", {"device": "disk1", "node-name": "disk1", "size": 32 * 1024 * 1024})
    ]
    assert get_hypervisor("fake").resize_commands(1, 32) == []


@pytest.mark.parametrize(
    ("info", "access", "hv", "expected"),
    [
        pytest.param(AttachInfo("/dev/loop1", {}), "kernelspace", "kvm", "/dev/loop1", id="dev"),
        pytest.param(
            AttachInfo("/dev/rbd0", {"kvm": "rbd:p/v"}), "userspace", "kvm", "rbd:p/v", id="uri"
        ),
        pytest.param(
            AttachInfo("/dev/rbd0", {"kvm": "rbd:p/v"}),
            "kernelspace",
            "kvm",
            "/dev/rbd0",
            id="kernelspace-prefers-device",
        ),
        pytest.param(
            AttachInfo(None, {"kvm": "/s/v.img", "fake": "/s/f.img"}),
            "kernelspace",
            "fake",
            "/s/f.img",
            id="userspace-only",
        ),
    ],
)
def test_disk_path_choice(info: AttachInfo, access: str, hv: str, expected: str) -> None:
    assert get_hypervisor(hv).disk_path(info, access, node="n1", provider="p") == expected


def test_disk_path_refusals() -> None:
    with pytest.raises(HypervisorError, match="no block device and no fake: URI"):
        get_hypervisor("fake").disk_path(
            AttachInfo(None, {"kvm": "/x"}), "kernelspace", node="n1", provider="p"
        )
    with pytest.raises(HypervisorError, match="needs a path"):
        get_hypervisor("fake").disk_path(
            AttachInfo(None, {"fake": "rbd:x"}), "userspace", node="n1", provider="p"
        )


def test_fake_refuses_too_many_disks() -> None:
    paths = [f"/d{i}" for i in range(MAX_DISKS + 1)]
    with pytest.raises(HypervisorError, match=f"at most {MAX_DISKS} disks"):
        get_hypervisor("fake").start_command(INST, paths, "r/n1", timeout=5)


def test_unknown_hypervisor() -> None:
    with pytest.raises(InputError, match="unknown hypervisor 'xen'; use fake, kvm"):
        get_hypervisor("xen")


@pytest.mark.parametrize(
    ("text", "figures"),
    [
        pytest.param("memory_total 4096\nmemory_free 1000\n", (4096, 1000), id="both"),
        pytest.param("memory_free 10\nmemory_total 20\n", (20, 10), id="any-order"),
        pytest.param("memory_total 512\n", (512, 512), id="total-only"),
        pytest.param("memory_total 512\nmemory_free 900\n", (512, 512), id="free-capped"),
    ],
)
def test_node_info_is_parsed(text: str, figures: tuple[int, int]) -> None:
    info = parse_node_info(text, node="n1")
    assert (info.memory_total, info.memory_free) == figures


@pytest.mark.parametrize("text", ["", "memory_total lots\n", "memory_free 5\n", "4096\n"])
def test_node_info_without_a_total_is_refused_quoting_it(text: str) -> None:
    with pytest.raises(HypervisorError, match="node info of node 'n1' printed"):
        parse_node_info(text, node="n1")
