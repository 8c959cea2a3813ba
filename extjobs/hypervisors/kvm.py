"""The ``kvm`` hypervisor: one ``qemu-system-x86_64`` process per running instance.

The command line is built here from the instance and the paths of its attached disks::

    qemu-system-x86_64 -name NAME -machine accel=kvm:tcg -m MEM -smp VCPUS
        -display none -nodefaults -no-user-config
        -device virtio-scsi-pci,id=scsi0
        -drive file=PATH,format=raw,if=none,id=disk0
        -device scsi-hd,bus=scsi0.0,drive=disk0,id=disk0-dev,scsi-id=0 ...
        -device virtio-serial-pci,id=vser0
        -device virtserialport,bus=vser0.0,chardev=qga0,name=org.qemu.guest_agent.0
        -pidfile <run dir>/<key>.pid -qmp unix:<run dir>/<key>.qmp,server=on,wait=off
        -chardev socket,id=qga0,path=<run dir>/<key>.qga,server=on,wait=off
        -daemonize

``-display none`` keeps it headless without ``-nographic`` (which would take over
stdio). ``accel=kvm:tcg`` uses KVM where ``/dev/kvm`` exists and falls back to TCG.
The start script resolves the run directory to an absolute path, so the pid file and
the QMP socket are absolute (qemu changes to ``/`` when it daemonises); the daemon
reaches the socket through SSH stream-local forwarding. Disk ``N`` (its index, stable
across removals) is the drive ``diskN`` on the SCSI device ``diskN-dev`` at SCSI id N —
what ``block_resize``, hot-plug and hot-unplug name (:mod:`.hotplug`); ``<key>.qga``
is where a guest agent, if the guest runs one, answers.

Conversations with a running qemu are QMP (:mod:`.qmp`; migration: :mod:`.migration`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import attrs

from extjobs.errors import HypervisorError
from extjobs.extstorage.attach import AttachInfo
from extjobs.hypervisors import hotplug, migration, qmp
from extjobs.hypervisors.base import (
    Hypervisor,
    MigrationSettings,
    RuntimeStatus,
    instance_key,
    userspace_or_device,
)
from extjobs.hypervisors.hotplug import drive_id
from extjobs.hypervisors.link import GuestLink
from extjobs.hypervisors.process import PROCESS_FUNCTIONS, process_command
from extjobs.model.cluster import HypervisorName, Instance
from extjobs.model.remote import RemoteCommand

QEMU = "qemu-system-x86_64"
MIB = 1024 * 1024

# Arguments: RUNDIR KEY QEMU-ARGV...
START_SCRIPT = (
    PROCESS_FUNCTIONS
    + r"""
key=$2
mkdir -p -- "$1" && cd -- "$1" || exit 1
dir=$(pwd -P)
shift 2
if pid=$(running_pid "$key"); then
  printf 'running %s %s\n' "$pid" "$dir"
  exit 0
fi
case $dir in
  *,*) printf 'run directory %s contains a comma, which qemu options cannot take\n' "$dir" >&2
       exit 1 ;;
esac
sock=$dir/$key.qmp
# A Unix socket path has at most 107 bytes (108 with the terminating NUL).
if [ "${#sock}" -gt 107 ]; then
  printf 'QMP socket path %s is longer than 107 bytes; choose a shorter run directory\n' \
    "$sock" >&2
  exit 1
fi
rm -f -- "$key.pid" "$key.qmp" "$key.qga"
"$@" -pidfile "$dir/$key.pid" -qmp "unix:$sock,server=on,wait=off" \
  -chardev "socket,id=qga0,path=$dir/$key.qga,server=on,wait=off" -daemonize || exit $?
pid=$(running_pid "$key") || { printf 'qemu exited after daemonising\n' >&2; exit 1; }
printf 'running %s %s\n' "$pid" "$dir"
"""
)


def _escape(value: str) -> str:
    """qemu option syntax: a comma inside a value is written twice."""
    return value.replace(",", ",,")


def qemu_argv(instance: Instance, disk_paths: Sequence[str], *, binary: str = QEMU) -> list[str]:
    """The qemu command line without the run-directory options the start script adds."""
    argv = [
        binary,
        "-name",
        _escape(instance.name),
        "-machine",
        "accel=kvm:tcg",
        "-m",
        str(instance.memory),
        "-smp",
        str(instance.vcpus),
        "-display",
        "none",
        "-nodefaults",
        "-no-user-config",
        "-device",
        "virtio-scsi-pci,id=scsi0",
    ]
    # Disk N keeps its index (and so its SCSI id) however many disks went before it.
    indexes = (
        [d.index for d in instance.disks]
        if len(instance.disks) == len(disk_paths)
        else list(range(len(disk_paths)))
    )
    for index, path in zip(indexes, disk_paths, strict=True):
        hotplug.check_index(index)
        argv += [
            "-drive",
            f"file={_escape(path)},format=raw,if=none,id={drive_id(index)}",
            "-device",
            (
                f"scsi-hd,bus=scsi0.0,drive={drive_id(index)},id={hotplug.device_id(index)},"
                f"scsi-id={index}"
            ),
        ]
    argv += [
        "-device",
        "virtio-serial-pci,id=vser0",
        "-device",
        f"virtserialport,bus=vser0.0,chardev=qga0,name={hotplug.AGENT_NAME}",
    ]
    return argv


class KvmHypervisor(Hypervisor):
    name: ClassVar[HypervisorName] = HypervisorName.KVM
    stop_mode: ClassVar[str] = "process"

    def disk_path(self, info: AttachInfo, access: str, *, node: str, provider: str) -> str:
        return userspace_or_device(info, access, self.name.value, node=node, provider=provider)

    def start_command(
        self, instance: Instance, disk_paths: Sequence[str], run_dir: str, *, timeout: float
    ) -> RemoteCommand:
        for path in disk_paths:
            if "\n" in path or "\0" in path:
                raise HypervisorError(
                    f"disk path {path!r} of {instance.name} cannot be given to qemu",
                    instance=instance.name,
                )
        argv = qemu_argv(instance, disk_paths)
        return process_command(
            START_SCRIPT, (run_dir, instance_key(instance), *argv), timeout=timeout
        )

    def control_socket(self, key: str, status: RuntimeStatus) -> str | None:
        return status.path(key, ".qmp") if status.running else None

    def resize_commands(self, disk_index: int, size_mib: int) -> list[tuple[str, dict[str, Any]]]:
        # A start-time disk is the drive diskN, a hot-plugged one the block node diskN:
        # qemu looks the device name up first, then the node name.
        name = drive_id(disk_index)
        return [("block_resize", {"device": name, "node-name": name, "size": size_mib * MIB})]

    async def notify_resize(
        self, link: GuestLink, node: str, socket: str, disk_index: int, size_mib: int
    ) -> int | None:
        commands = [*self.resize_commands(disk_index, size_mib), ("query-block", {})]
        replies = await qmp.execute_all(link, node, socket, commands)
        seen = hotplug.guest_disks(replies[-1]).get(hotplug.device_id(disk_index))
        if seen is not None and isinstance(seen["size"], int):
            return int(seen["size"])
        return qmp.block_sizes(replies[-1]).get(drive_id(disk_index))

    async def hotplug_disk(
        self, link: GuestLink, node: str, socket: str, index: int, path: str, *, block: bool
    ) -> dict[str, Any]:
        return await hotplug.plug(link, node, socket, index, path, block=block)

    async def unplug_disk(
        self, link: GuestLink, node: str, socket: str, index: int, *, timeout: float
    ) -> None:
        await hotplug.unplug(link, node, socket, index, timeout=timeout)

    async def freeze_io(self, link: GuestLink, node: str, socket: str) -> str:
        return await hotplug.freeze(link, node, socket)

    async def thaw_io(self, link: GuestLink, node: str, socket: str, how: str | None) -> None:
        await hotplug.thaw(link, node, socket, how)

    async def guest_state(self, link: GuestLink, node: str, socket: str) -> str:
        return await migration.guest_state(link, node, socket)

    async def powerdown(self, link: GuestLink, node: str, socket: str) -> bool:
        """QMP ``system_powerdown``: an ACPI power-button press the guest may ignore."""
        await qmp.execute_all(link, node, socket, [("system_powerdown", {})])
        return True

    def is_leftover(self, state: str) -> bool:
        return migration.is_leftover(state)

    async def resume(self, link: GuestLink, node: str, socket: str) -> None:
        await migration.resume(link, node, socket)

    transfers_memory: ClassVar[bool] = True

    def incoming_command(
        self, instance: Instance, disk_paths: Sequence[str], run_dir: str, *, timeout: float
    ) -> RemoteCommand:
        """The same qemu, waiting for a migration (``-incoming defer``): it listens once
        told where by QMP ``migrate-incoming`` (see :mod:`.migration`)."""
        command = self.start_command(instance, disk_paths, run_dir, timeout=timeout)
        return attrs.evolve(command, argv=(*command.argv, "-incoming", "defer"))

    async def transfer_memory(
        self,
        link: GuestLink,
        *,
        source: str,
        source_socket: str,
        target: str,
        target_socket: str,
        host: str,
        port: int | None,
        live: bool,
        settings: MigrationSettings | None = None,
    ) -> None:
        await migration.transfer(
            link,
            source=source,
            source_socket=source_socket,
            target=target,
            target_socket=target_socket,
            host=host,
            port=port,
            live=live,
            settings=settings,
        )
