"""kvm: disks plugged into and out of a running guest, and its I/O frozen for a snapshot.

Every disk of a kvm guest is a ``scsi-hd`` on the guest's virtio-scsi controller
``scsi0``, at SCSI id = the disk's index, with the device id ``disk<N>-dev`` and the
block node (or, for disks present at start, the drive) ``disk<N>``. SCSI hot-plug
needs no cooperation from the guest's firmware (PCI hot-plug waits for the guest OS to
acknowledge through ACPI), and the same index gives the same address after a restart
or a migration, so the two sides of a migration agree::

    hot-plug:    blockdev-add {driver raw, node-name disk<N>, file {host_device|file}}
                 device_add {scsi-hd, bus scsi0.0, drive disk<N>, id disk<N>-dev, scsi-id N}
                 query-block → the guest's view has disk<N>-dev
                 (device_add refused: blockdev-del again, nothing is left open)
    hot-unplug:  device_del disk<N>-dev → wait for DEVICE_DELETED (bounded)
                 blockdev-del disk<N> (a start-time drive went with its device)
                 query-block → nothing of disk<N> is left: qemu closed the volume

Freezing I/O for a snapshot prefers the guest agent (``<key>.qga``, a virtio-serial
port named ``org.qemu.guest_agent.0``): ``guest-sync`` answered within
:data:`AGENT_TIMEOUT` means an agent runs, and ``guest-fsfreeze-freeze`` flushes and
freezes its file systems; with no agent answering, QMP ``stop`` pauses the vCPUs.
:func:`thaw` undoes either; asked to thaw without knowing how the guest was frozen
(recovery after a crash), it thaws a frozen agent and continues a paused guest.
"""

from __future__ import annotations

import contextlib
import json
from typing import Any

from extjobs.errors import CommandTimeoutError, ExtJobsError, HypervisorError
from extjobs.hypervisors import qmp
from extjobs.hypervisors.link import GuestLink
from extjobs.model.jobs import LogKind

#: The guest agent must answer ``guest-sync`` within this many seconds.
AGENT_TIMEOUT = 3.0
#: Guest-agent replies ``guest-fsfreeze-freeze`` and ``-thaw`` may take longer (flushes).
FREEZE_TIMEOUT = 60.0
#: The highest disk index a guest can hold (virtio-scsi ids 0..255).
MAX_INDEX = 255
AGENT_NAME = "org.qemu.guest_agent.0"


def drive_id(index: int) -> str:
    return f"disk{index}"


def device_id(index: int) -> str:
    return f"disk{index}-dev"


def agent_socket(qmp_socket: str) -> str:
    """The guest agent's socket beside the QMP socket ``<key>.qmp``."""
    return qmp_socket.removesuffix(".qmp") + ".qga"


def check_index(index: int) -> None:
    if not 0 <= index <= MAX_INDEX:
        raise HypervisorError(
            f"a kvm guest holds disks with index 0..{MAX_INDEX}, not {index}", disk=index
        )


def plug_commands(index: int, path: str, *, block: bool) -> list[qmp.Command]:
    """The QMP commands that give a running guest disk ``index`` at ``path``."""
    check_index(index)
    return [
        (
            "blockdev-add",
            {
                "driver": "raw",
                "node-name": drive_id(index),
                "file": {"driver": "host_device" if block else "file", "filename": path},
            },
        ),
        (
            "device_add",
            {
                "driver": "scsi-hd",
                "bus": "scsi0.0",
                "drive": drive_id(index),
                "id": device_id(index),
                "scsi-id": index,
            },
        ),
    ]


def guest_disks(query_block: Any) -> dict[str, dict[str, Any]]:
    """The disks the guest has, by device id (``disk<N>-dev``), from ``query-block``:
    ``{"node", "file", "device", "size"}`` (block node, image file, drive name — empty
    for a hot-plugged disk —, virtual size in bytes)."""
    found: dict[str, dict[str, Any]] = {}
    if not isinstance(query_block, list):
        return found
    for entry in query_block:
        if not isinstance(entry, dict):
            continue
        qdev = str(entry.get("qdev") or "")
        inserted = entry.get("inserted") or {}
        name = qdev.removeprefix("/machine/peripheral/").split("/", 1)[0]
        if name.endswith("-dev") and inserted:
            found[name] = {
                "node": inserted.get("node-name"),
                "file": inserted.get("file"),
                "device": entry.get("device"),
                "size": (inserted.get("image") or {}).get("virtual-size"),
            }
    return found


def holds(query_block: Any, index: int) -> bool:
    """Whether the guest still has anything of disk ``index`` (device, drive or node)."""
    if device_id(index) in guest_disks(query_block):
        return True
    for entry in query_block if isinstance(query_block, list) else []:
        if not isinstance(entry, dict):
            continue
        inserted = entry.get("inserted") or {}
        if entry.get("device") == drive_id(index) or inserted.get("node-name") == drive_id(index):
            return True
    return False


async def plug(
    link: GuestLink, node: str, socket: str, index: int, path: str, *, block: bool
) -> dict[str, Any]:
    """Hot-plug disk ``index`` (``path`` on ``node``; ``block``: a block device) into the
    guest behind ``socket``; what the guest then shows of it (see :func:`guest_disks`).

    Raises HypervisorError; after a refused ``device_add`` the block node is deleted
    again, so qemu keeps nothing open."""
    add_node, add_device = plug_commands(index, path, block=block)
    async with qmp.open_session(
        link, node, socket, description=f"QMP hot-plug disk{index}"
    ) as session:
        await session.execute(*add_node)
        try:
            await session.execute(*add_device)
        except HypervisorError:
            try:
                await session.execute("blockdev-del", {"node-name": drive_id(index)})
            except HypervisorError as exc:
                link.log(
                    f"{node}: could not delete block node {drive_id(index)} again: {exc.message}",
                    kind=LogKind.WARNING,
                )
            raise
        view = guest_disks(await session.execute("query-block", quiet=True))
    seen = view.get(device_id(index))
    if seen is None:
        raise HypervisorError(
            f"the guest on {node} does not show disk{index} after device_add", node=node
        )
    link.log(f"{node}: the guest now has {device_id(index)} ({seen['file']})")
    return seen


async def unplug(link: GuestLink, node: str, socket: str, index: int, *, timeout: float) -> None:
    """Hot-unplug disk ``index`` from the guest behind ``socket`` and make sure qemu
    holds nothing of it any more. Unplugging a disk the guest no longer has succeeds.

    Raises HypervisorError naming the disk when the guest does not release it within
    ``timeout`` seconds (no ``DEVICE_DELETED``): the disk then stays plugged in."""
    device = device_id(index)
    async with qmp.open_session(
        link, node, socket, timeout=max(timeout, 1.0), description=f"QMP hot-unplug disk{index}"
    ) as session:
        try:
            await session.execute("device_del", {"id": device})
        except HypervisorError as exc:
            if exc.fields.get("qmp_class") != "DeviceNotFound":
                raise
            link.log(f"{node}: the guest has no {device} (already unplugged)")
        else:
            try:
                await session.wait_event("DEVICE_DELETED", lambda d: d.get("device") == device)
            except CommandTimeoutError:
                raise HypervisorError(
                    f"the guest on {node} did not release disk{index} within {timeout:g}s "
                    f"(no DEVICE_DELETED for {device}); the disk stays plugged in and "
                    "attached — try again, or shut the instance down and remove it then",
                    node=node,
                    disk=index,
                ) from None
            link.log(f"{node}: the guest released {device} (DEVICE_DELETED)", kind=LogKind.QMP)
        # A start-time drive is deleted with its device; then there is no node to delete.
        with contextlib.suppress(HypervisorError):
            await session.execute("blockdev-del", {"node-name": drive_id(index)}, quiet=True)
        blocks = await session.execute("query-block", quiet=True)
    if holds(blocks, index):
        raise HypervisorError(
            f"qemu on {node} still holds disk{index} after its device was deleted", node=node
        )


# -- freezing I/O for a snapshot ------------------------------------------------------------


async def _agent(link: GuestLink, node: str, socket: str, execute: str, *, timeout: float) -> Any:
    """One guest-agent command (after a ``guest-sync``) on ``socket``; its return value.
    Raises the node layer's errors (no socket, no answer) or HypervisorError."""
    where = f"{node}:{socket}"
    async with link.open_unix_stream(
        node, socket, timeout=timeout, description=f"guest agent {execute}"
    ) as stream:
        splitter = qmp.MessageSplitter(where=where)
        pending: list[dict[str, Any]] = []

        async def reply() -> dict[str, Any]:
            while not pending:
                data = await stream.receive()
                if not data:
                    raise HypervisorError(f"guest agent on {where} closed the connection")
                pending.extend(splitter.feed(data))
            return pending.pop(0)

        token = 0x5EC
        sync = {"execute": "guest-sync", "arguments": {"id": token}}
        await stream.send(json.dumps(sync).encode() + b"\n")
        while (message := await reply()).get("return") != token:
            pass
        await stream.send(json.dumps({"execute": execute}).encode() + b"\n")
        message = await reply()
        if "error" in message:
            error = message["error"] if isinstance(message["error"], dict) else {}
            raise HypervisorError(
                f"guest agent {execute} on {where} failed: {error.get('desc', message['error'])}"
            )
        return message.get("return")


async def freeze(link: GuestLink, node: str, socket: str) -> str:
    """Make the guest's disks consistent: ``"fsfreeze"`` (the guest agent froze its file
    systems) or ``"pause"`` (no agent answered; the vCPUs are stopped). Raises
    HypervisorError when neither worked."""
    agent = agent_socket(socket)
    try:
        await _agent(link, node, agent, "guest-ping", timeout=AGENT_TIMEOUT)
    except ExtJobsError as exc:
        link.log(f"{node}: no guest agent answers ({exc.message}); pausing the guest instead")
    else:
        count = await _agent(link, node, agent, "guest-fsfreeze-freeze", timeout=FREEZE_TIMEOUT)
        link.log(f"{node}: the guest agent froze {count} file system(s)", kind=LogKind.QMP)
        return "fsfreeze"
    await qmp.execute_all(link, node, socket, [("stop", {})])
    return "pause"


async def thaw(link: GuestLink, node: str, socket: str, how: str | None) -> None:
    """Undo :func:`freeze` (``how`` as it returned; ``None``: unknown — thaw whatever is
    frozen). Raises HypervisorError or the node layer's errors."""
    if how in ("fsfreeze", None):
        try:
            await _agent(
                link, node, agent_socket(socket), "guest-fsfreeze-thaw", timeout=FREEZE_TIMEOUT
            )
        except ExtJobsError:
            if how is not None:
                raise
    if how in ("pause", None):
        async with qmp.open_session(link, node, socket, description="QMP resume") as session:
            status = await session.execute("query-status", quiet=True)
            if isinstance(status, dict) and status.get("status") == "paused":
                await session.execute("cont")
