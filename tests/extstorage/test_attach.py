import os
import stat
import subprocess

import pytest

from extjobs.errors import ProviderError
from extjobs.extstorage.attach import (
    AttachInfo,
    block_device_check_command,
    check_block_device_result,
    parse_attach_output,
)
from extjobs.model.remote import CommandResult


def parse(stdout: str) -> AttachInfo:
    return parse_attach_output(stdout, provider="rbd", node="node1")


@pytest.mark.parametrize(
    ("stdout", "expected"),
    [
        pytest.param("/dev/rbd0\n", AttachInfo("/dev/rbd0", {}), id="device"),
        pytest.param("/dev/rbd0", AttachInfo("/dev/rbd0", {}), id="no-newline"),
        pytest.param("/dev/rbd0\r\n", AttachInfo("/dev/rbd0", {}), id="crlf"),
        pytest.param(
            "/dev/rbd0\nkvm:rbd:pool/vol\nXen:file:/x\n\n",
            AttachInfo("/dev/rbd0", {"kvm": "rbd:pool/vol", "xen": "file:/x"}),
            id="device-and-uris",
        ),
        pytest.param(
            "\nkvm:/srv/v.img\n",
            AttachInfo(None, {"kvm": "/srv/v.img"}),
            id="userspace-only",
        ),
        pytest.param(
            "\nkvm:first\nkvm:second\n",
            AttachInfo(None, {"kvm": "first"}),
            id="first-uri-wins",
        ),
        pytest.param(
            "/dev/disk/by-label/My Disk\n",
            AttachInfo("/dev/disk/by-label/My Disk", {}),
            id="space-in-path",
        ),
    ],
)
def test_parse_attach_output(stdout: str, expected: AttachInfo) -> None:
    assert parse(stdout) == expected


def test_uri_lookup_is_case_insensitive() -> None:
    info = parse("\nKVM:gluster://h/v\n")
    assert info.uri_for("kvm") == "gluster://h/v"
    assert info.uri_for("Kvm") == "gluster://h/v"
    assert info.uri_for("xen") is None


@pytest.mark.parametrize(
    ("stdout", "why"),
    [
        pytest.param("", "printed nothing", id="empty"),
        pytest.param("\n\n", "printed nothing", id="blank"),
        pytest.param("dev/rbd0\n", "not an absolute device path", id="relative"),
        pytest.param("rbd0\n", "not an absolute device path", id="bare-name"),
        pytest.param("Error: no such pool\n", "not an absolute device path", id="garbage"),
        pytest.param("/dev/rbd0\nnot a uri\n", "not <hypervisor>:<uri>", id="bad-uri-line"),
        pytest.param("/dev/rbd0\nkvm:\n", "not <hypervisor>:<uri>", id="empty-uri"),
        pytest.param("\n\n\n", "printed nothing", id="only-newlines"),
        pytest.param("\n garbage\n", "not <hypervisor>:<uri>", id="userspace-garbage"),
    ],
)
def test_parse_attach_output_refuses_garbage(stdout: str, why: str) -> None:
    with pytest.raises(ProviderError) as info:
        parse(stdout)
    err = info.value
    assert why in err.message
    assert err.fields["provider"] == "rbd"
    assert err.fields["node"] == "node1"
    assert "'rbd'" in err.message
    assert "'node1'" in err.message
    assert repr(stdout) in err.message


def test_parse_attach_output_shortens_floods() -> None:
    with pytest.raises(ProviderError) as info:
        parse("x" * 10_000)
    assert len(info.value.message) < 1000


def test_block_device_check_command_is_argv_only() -> None:
    path = "/dev/x $(touch /tmp/pwned) 'q'"
    cmd = block_device_check_command(path, path_env="/usr/bin:/bin", timeout=5)
    assert cmd.argv == ("test", "-b", path)
    assert cmd.env_dict == {"PATH": "/usr/bin:/bin", "LC_ALL": "C"}
    assert cmd.timeout == 5


def _run_local(path: str) -> CommandResult:
    cmd = block_device_check_command(path)
    proc = subprocess.run(cmd.argv, env=cmd.env_dict, capture_output=True, text=True, check=False)
    return CommandResult(exit_status=proc.returncode, stdout=proc.stdout, stderr=proc.stderr)


def _find_block_device() -> str | None:
    for name in sorted(os.listdir("/dev")):
        path = f"/dev/{name}"
        try:
            if stat.S_ISBLK(os.stat(path).st_mode):
                return path
        except OSError:
            continue
    return None


@pytest.mark.spawns
def test_block_device_check_locally(tmp_path: os.PathLike[str]) -> None:
    regular = os.path.join(tmp_path, "file")
    with open(regular, "w"):
        pass
    with pytest.raises(ProviderError, match="is not a block device"):
        check_block_device_result(_run_local(regular), path=regular, provider="p", node="n")
    missing = os.path.join(tmp_path, "missing $(x)")
    with pytest.raises(ProviderError, match="is not a block device"):
        check_block_device_result(_run_local(missing), path=missing, provider="p", node="n")
    device = _find_block_device()
    if device is not None:
        check_block_device_result(_run_local(device), path=device, provider="p", node="n")


def test_block_device_check_other_failures() -> None:
    result = CommandResult(exit_status=None, signal="KILL")
    with pytest.raises(ProviderError, match="could not be checked") as info:
        check_block_device_result(result, path="/dev/x", provider="p", node="n")
    assert info.value.fields["device"] == "/dev/x"
