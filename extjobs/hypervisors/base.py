"""The interface every hypervisor backend offers.

A backend answers these questions for the instance LUs:

- which path of an attached disk it uses (:meth:`Hypervisor.disk_path`): the block
  device printed on line 1 of ``attach``, or the ``<hypervisor>:`` URI of a
  userspace-only volume;
- how to start, stop and query a guest on a node (:class:`RemoteCommand` objects whose
  scripts are constants; names and paths are positional arguments);
- what the status command printed (:func:`parse_status`);
- how a running guest learns that a disk grew (:meth:`Hypervisor.notify_resize`);
- how a running guest moves between nodes (:attr:`Hypervisor.transfers_memory`,
  :meth:`Hypervisor.transfer_memory`), and which of two processes is the guest after
  an interrupted move (:meth:`Hypervisor.guest_state`).

Everything is pure translation except the conversations with a running guest (QMP for
kvm), which go through a :class:`~extjobs.hypervisors.link.GuestLink` the caller hands
in; the LUs never spell a control-socket command.

Runtime files live in the node's run directory, ``<hv_run_dir>/<node>`` (default
``run/extjobs/<node>``, relative to the login directory of the node's SSH user): the
node name keeps nodes that share one machine and one login apart.
"""

from __future__ import annotations

import abc
import math
import re
from collections.abc import Sequence
from typing import Any, ClassVar

import attrs

from extjobs.errors import HypervisorError, InputError
from extjobs.extstorage.attach import AttachInfo
from extjobs.hypervisors.link import GuestLink
from extjobs.hypervisors.process import (
    GUESTS_SCRIPT,
    NODE_INFO_SCRIPT,
    STATUS_SCRIPT,
    STOP_SCRIPT,
    process_command,
)
from extjobs.model.cluster import Cluster, HypervisorName, Instance
from extjobs.model.remote import RemoteCommand

DEFAULT_RUN_DIR = "run/extjobs"

_RUN_DIR_RE = re.compile(r"[A-Za-z0-9_./+-]+")


def run_dir_for(cluster: Cluster | None, node: str) -> str:
    """The run directory of hypervisor files on ``node``.

    Raises :class:`InputError` when the configured base is unusable (characters that
    qemu options or shells would misread, or ``..``).
    """
    base = (cluster.hv_run_dir if cluster is not None else None) or DEFAULT_RUN_DIR
    if not _RUN_DIR_RE.fullmatch(base) or ".." in base.split("/"):
        raise InputError(
            f"hypervisor run directory {base!r} may only use letters, digits and ._/+-",
            field="hv_run_dir",
        )
    return f"{base.rstrip('/') or '/'}/{node}".replace("//", "/")


def instance_key(instance: Instance) -> str:
    """The name of an instance's files on a node: its uuid (stable across renames)."""
    return instance.uuid or instance.name


@attrs.frozen
class RuntimeStatus:
    """What the status command found on a node.

    ``run_dir`` is the absolute run directory (``None`` when it does not exist yet).
    """

    running: bool
    pid: int | None = None
    run_dir: str | None = None

    def path(self, key: str, suffix: str) -> str | None:
        return None if self.run_dir is None else f"{self.run_dir}/{key}{suffix}"


def parse_status(stdout: str, *, node: str) -> RuntimeStatus:
    """Parse ``running <pid> <dir>`` / ``stopped [<dir>]``; raises HypervisorError."""
    lines = [line for line in stdout.splitlines() if line.strip()]
    words = lines[-1].split(" ", 2) if lines else []
    if words[:1] == ["running"] and len(words) == 3 and words[1].isdigit():
        return RuntimeStatus(True, int(words[1]), words[2])
    if words[:1] == ["stopped"]:
        return RuntimeStatus(False, None, words[1] if len(words) > 1 else None)
    raise HypervisorError(
        f"hypervisor status on node {node!r} printed {stdout[-300:]!r}; expected "
        "'running PID DIR' or 'stopped [DIR]'",
        node=node,
    )


@attrs.frozen
class NodeInfo:
    """What a node offers guests, in MiB: its memory and how much of it the kernel
    says is available now (informative: placement counts what instances hold)."""

    memory_total: int
    memory_free: int


def parse_node_info(stdout: str, *, node: str) -> NodeInfo:
    """Parse ``memory_total N`` / ``memory_free N`` lines (any order, other lines
    ignored); raises HypervisorError quoting output without a memory total."""
    figures: dict[str, int] = {}
    for line in stdout.splitlines():
        words = line.split()
        if len(words) == 2 and words[1].isascii() and words[1].isdigit():
            figures[words[0]] = int(words[1])
    if "memory_total" not in figures:
        raise HypervisorError(
            f"node info of node {node!r} printed {stdout[-300:]!r}; expected "
            "'memory_total MIB' and 'memory_free MIB'",
            node=node,
        )
    total = figures["memory_total"]
    return NodeInfo(total, min(figures.get("memory_free", total), total))


def guests_command(run_dir: str, *, timeout: float) -> RemoteCommand:
    """Lists every guest running in ``run_dir`` on a node, whatever its backend (see
    :data:`~extjobs.hypervisors.process.GUESTS_SCRIPT`); :func:`parse_guests` reads it."""
    return process_command(GUESTS_SCRIPT, (run_dir,), timeout=timeout)


def parse_guests(stdout: str, *, node: str) -> dict[str, int]:
    """The guests :func:`guests_command` found: file key → pid. Raises HypervisorError
    when the output is not the listing."""
    lines = [line for line in stdout.splitlines() if line.strip()]
    if not lines or lines[0].split(" ", 1)[0] != "guests":
        raise HypervisorError(
            f"the guest listing on node {node!r} printed {stdout[-300:]!r}", node=node
        )
    found: dict[str, int] = {}
    for line in lines[1:]:
        words = line.split(" ")
        if len(words) != 3 or words[0] != "running" or not words[2].isdigit():
            raise HypervisorError(
                f"the guest listing on node {node!r} printed {line[:300]!r}", node=node
            )
        found[words[1]] = int(words[2])
    return found


class Hypervisor(abc.ABC):
    """One hypervisor backend. Stateless; one shared object per backend.

    What differs between backends is said here, as attributes and methods, so that the
    LUs never compare a hypervisor's name: a new backend is a subclass, a member of
    :class:`HypervisorName` and an entry in ``extjobs.hypervisors.HYPERVISORS``.
    """

    name: ClassVar[HypervisorName]
    #: How ``stop`` signals the guest: its whole process group, or the process only.
    stop_mode: ClassVar[str] = "process"
    #: The most disks one guest can have under this backend (``None``: no limit here).
    max_disks: ClassVar[int | None] = None

    def check_instance(self, *, disks: int) -> None:
        """Refuse, before anything runs, an instance this backend cannot hold.

        Raises :class:`InputError` naming the field.
        """
        if self.max_disks is not None and disks > self.max_disks:
            raise InputError(
                f"the {self.name.value} hypervisor holds at most {self.max_disks} disks",
                field="disks",
            )

    @abc.abstractmethod
    def disk_path(self, info: AttachInfo, access: str, *, node: str, provider: str) -> str:
        """The path or URI the guest uses for an attached disk; raises HypervisorError."""

    @abc.abstractmethod
    def start_command(
        self, instance: Instance, disk_paths: Sequence[str], run_dir: str, *, timeout: float
    ) -> RemoteCommand:
        """Start the guest unless it runs already; prints the status line when done."""

    def status_command(self, key: str, run_dir: str, *, timeout: float) -> RemoteCommand:
        """Prints the status line of the guest whose files are called ``key``."""
        return process_command(STATUS_SCRIPT, (run_dir, key), timeout=timeout)

    def stop_command(
        self, key: str, run_dir: str, *, grace: float, timeout: float
    ) -> RemoteCommand:
        """SIGTERM, SIGKILL after ``grace`` seconds; stopping a stopped guest succeeds."""
        seconds = str(max(1, math.ceil(grace)))
        args = (run_dir, key, seconds, self.stop_mode)
        return process_command(STOP_SCRIPT, args, timeout=max(timeout, grace + 10))

    def control_socket(self, key: str, status: RuntimeStatus) -> str | None:
        """The Unix socket that controls a running guest (QMP), if the backend has one."""
        return None

    def node_info_command(self, run_dir: str, *, timeout: float) -> RemoteCommand:
        """Prints what the node offers guests (:func:`parse_node_info`). Default: the
        node's ``/proc/meminfo``."""
        return process_command(NODE_INFO_SCRIPT, (run_dir,), timeout=timeout)

    def resize_commands(self, disk_index: int, size_mib: int) -> list[tuple[str, dict[str, Any]]]:
        """Control-socket commands telling a running guest that a disk now has this size."""
        return []

    async def notify_resize(
        self, link: GuestLink, node: str, socket: str, disk_index: int, size_mib: int
    ) -> int | None:
        """Tell the guest behind control socket ``socket`` on ``node`` that disk
        ``disk_index`` now has ``size_mib`` MiB; the size the guest then sees, in bytes
        (``None`` when the backend cannot tell). Raises HypervisorError."""
        return None

    async def guest_state(self, link: GuestLink, node: str, socket: str) -> str:
        """The run state of the guest process behind ``socket`` on ``node``, after
        cancelling a migration it is still sending (see :meth:`is_leftover`).
        Raises HypervisorError."""
        raise HypervisorError(f"the {self.name.value} hypervisor has no control socket")

    def is_leftover(self, state: str) -> bool:
        """Whether a process in ``state`` is a migration's leftover, not the guest."""
        return False

    async def resume(self, link: GuestLink, node: str, socket: str) -> None:
        """Continue a guest paused on ``node`` (a non-live migration paused it)."""
        raise HypervisorError(f"the {self.name.value} hypervisor has no control socket")

    async def powerdown(self, link: GuestLink, node: str, socket: str) -> bool:
        """Ask the guest behind ``socket`` on ``node`` to power itself down (ACPI); True
        when asked, False when the backend has no way to (the caller stops it hard).
        The guest may ignore the request. Raises HypervisorError."""
        return False

    # -- disks plugged into a running guest, I/O frozen for a snapshot ---------------

    #: Whether a running guest's disks change through :meth:`replug_command` (a step
    #: on the node) rather than through the control socket.
    replugs: ClassVar[bool] = False

    def replug_command(
        self, key: str, run_dir: str, disk_paths: Sequence[str], *, timeout: float
    ) -> RemoteCommand | None:
        """For a backend without a control socket: the command that makes the running
        guest whose files are called ``key`` hold exactly ``disk_paths`` (a disk added or
        removed while it runs); prints what it holds. ``None``: the backend plugs disks
        through its control socket (:meth:`hotplug_disk`, :meth:`unplug_disk`)."""
        return None

    async def hotplug_disk(
        self, link: GuestLink, node: str, socket: str, index: int, path: str, *, block: bool
    ) -> dict[str, Any]:
        """Give the guest behind ``socket`` disk ``index`` at ``path`` (``block``: a block
        device) without a restart; what the guest then shows of it. Raises
        HypervisorError."""
        raise HypervisorError(f"the {self.name.value} hypervisor cannot hot-plug disks")

    async def unplug_disk(
        self, link: GuestLink, node: str, socket: str, index: int, *, timeout: float
    ) -> None:
        """Take disk ``index`` away from the guest behind ``socket``, waiting at most
        ``timeout`` seconds for the guest to release it; afterwards the hypervisor holds
        nothing of it. Raises HypervisorError (the disk then stays plugged in)."""
        raise HypervisorError(f"the {self.name.value} hypervisor cannot hot-unplug disks")

    async def freeze_io(self, link: GuestLink, node: str, socket: str) -> str:
        """Make the running guest's disks consistent for a snapshot; how (``fsfreeze``
        or ``pause``). Raises HypervisorError."""
        raise HypervisorError(f"the {self.name.value} hypervisor cannot freeze a guest")

    async def thaw_io(self, link: GuestLink, node: str, socket: str, how: str | None) -> None:
        """Undo :meth:`freeze_io` (``how``: what it returned; ``None``: not known, undo
        whatever is in effect)."""
        raise HypervisorError(f"the {self.name.value} hypervisor cannot freeze a guest")

    # -- migration (see extjobs.hypervisors.migration) --------------------------------

    #: Whether a running guest moves by a memory transfer between two processes over
    #: the control socket (:meth:`transfer_memory`); otherwise it moves by starting the
    #: guest on the target and then stopping it on the source.
    transfers_memory: ClassVar[bool] = False

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
        """Move a running guest's memory from ``source`` to the receiving side started
        on ``target`` (:meth:`incoming_command`), over ``host:port`` (any free port when
        ``None``; ``live``: without pausing it first) with ``settings`` (downtime,
        bandwidth, the time it may take). Returns once the guest runs on the target;
        the source process is left for the caller to stop.

        Raises HypervisorError (and the node layer's errors for the connections).
        Only backends with :attr:`transfers_memory` implement it.
        """
        raise HypervisorError(f"the {self.name.value} hypervisor does not transfer memory")

    def incoming_command(
        self, instance: Instance, disk_paths: Sequence[str], run_dir: str, *, timeout: float
    ) -> RemoteCommand:
        """Start the receiving side of a migration on the target; prints the status line.

        Default: the ordinary start (the guest simply starts on the target).
        """
        return self.start_command(instance, disk_paths, run_dir, timeout=timeout)


@attrs.frozen
class MigrationSettings:
    """How a memory transfer may go: the longest pause of the guest at the switch-over
    (ms), the bandwidth (MiB/s), and how long it may run before it is cancelled (s)."""

    max_downtime: int
    bandwidth: int
    converge_timeout: float

    def describe(self) -> str:
        return (
            f"max downtime {self.max_downtime} ms, bandwidth {self.bandwidth} MiB/s, "
            f"cancelled after {self.converge_timeout:g} s without converging"
        )


def userspace_or_device(
    info: AttachInfo, access: str, hypervisor: str, *, node: str, provider: str
) -> str:
    """Ganeti's choice: the ``<hypervisor>:`` URI for userspace access (or when there is
    no block device), else the block device."""
    uri = info.uri_for(hypervisor)
    if uri is not None and (access == "userspace" or info.device is None):
        return uri
    if info.device is not None:
        return info.device
    raise HypervisorError(
        f"provider {provider!r} on node {node!r} gave no block device and no "
        f"{hypervisor}: URI (it gave {', '.join(sorted(info.uris)) or 'none'})",
        node=node,
        provider=provider,
    )
