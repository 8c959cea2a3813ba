"""kvm hot-plug, hot-unplug and I/O freezing over a scripted link: the QMP and guest-agent
messages, what the backend makes of the answers, and the errors an operator gets."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from extjobs.errors import CommandTimeoutError, HypervisorError, NodeError
from extjobs.hypervisors import get_hypervisor, hotplug
from extjobs.hypervisors.link import ByteStream

GREETING = {"QMP": {"version": {"qemu": {"major": 9, "minor": 0}}}}
SOCK = "/r/n1/k.qmp"

Answer = Callable[[str, dict[str, Any]], Any]


class Server:
    """One end of a socket: QMP (greets) or the guest agent (silent unless spoken to).

    ``answer`` returns a value, an exception (an error reply), or ``(value, events)``
    for a reply followed by events; ``None`` from a silent agent means no reply at all
    (the receive then times out, as a real one with nobody behind it does)."""

    def __init__(self, answer: Answer, said: list[tuple[str, Any]], *, greet: bool) -> None:
        self._answer = answer
        self._said = said
        self._out = [json.dumps(GREETING).encode() + b"\r\n"] if greet else []

    async def send(self, data: bytes) -> None:
        message = json.loads(data)
        command = message["execute"]
        arguments = message.get("arguments", {})
        self._said.append((command, arguments))
        value = {} if command == "qmp_capabilities" else self._answer(command, arguments)
        if value is None:
            return
        events: list[dict[str, Any]] = []
        if isinstance(value, tuple):
            value, events = value
        reply: dict[str, Any]
        if isinstance(value, Exception):
            qmp_class = getattr(value, "qmp_class", "GenericError")
            reply = {"error": {"class": qmp_class, "desc": str(value)}}
        else:
            reply = {"return": value}
        if "id" in message:
            reply["id"] = message["id"]
        self._out.append(json.dumps(reply).encode() + b"\r\n")
        self._out += [json.dumps(e).encode() + b"\r\n" for e in events]

    async def receive(self, max_bytes: int = 65536) -> bytes:
        if not self._out:
            raise CommandTimeoutError("nothing came", timeout=1)
        return self._out.pop(0)


class Link:
    def __init__(self, qmp: Answer, agent: Answer | None = None) -> None:
        self.qmp = qmp
        self.agent = agent
        self.said: list[tuple[str, Any]] = []
        self.logs: list[str] = []

    @contextlib.asynccontextmanager
    async def open_unix_stream(
        self, node: str, path: str, *, timeout: float, description: str
    ) -> AsyncIterator[ByteStream]:
        if path.endswith(".qga"):
            if self.agent is None:
                raise NodeError(f"connection to {path} refused", node=node)
            yield Server(self.agent, self.said, greet=False)
        else:
            yield Server(self.qmp, self.said, greet=True)

    def log(self, message: str, *, kind: str = "message") -> None:
        self.logs.append(message)

    async def sleep(self, seconds: float) -> None:
        pass


class QmpError(Exception):
    def __init__(self, text: str, qmp_class: str = "GenericError") -> None:
        super().__init__(text)
        self.qmp_class = qmp_class


def blocks(*indexes: int) -> list[dict[str, Any]]:
    return [
        {
            "device": "",
            "qdev": f"/machine/peripheral/disk{i}-dev/virtio-backend",
            "inserted": {
                "node-name": f"disk{i}",
                "file": f"/dev/loop{i}",
                "image": {"virtual-size": 1 << 20},
            },
        }
        for i in indexes
    ]


async def test_hotplug_adds_a_block_node_and_a_scsi_disk() -> None:
    def answer(command: str, arguments: dict[str, Any]) -> Any:
        return blocks(0, 3) if command == "query-block" else {}

    link = Link(answer)
    seen = await get_hypervisor("kvm").hotplug_disk(link, "n1", SOCK, 3, "/dev/loop3", block=True)
    assert seen["file"] == "/dev/loop3"
    assert link.said[1:3] == [
        (
            "blockdev-add",
            {
                "driver": "raw",
                "node-name": "disk3",
                "file": {"driver": "host_device", "filename": "/dev/loop3"},
            },
        ),
        (
            "device_add",
            {
                "driver": "scsi-hd",
                "bus": "scsi0.0",
                "drive": "disk3",
                "id": "disk3-dev",
                "scsi-id": 3,
            },
        ),
    ]
    assert hotplug.plug_commands(1, "/v/x.img", block=False)[0][1]["file"]["driver"] == "file"


async def test_a_refused_device_add_deletes_the_block_node_again() -> None:
    def answer(command: str, arguments: dict[str, Any]) -> Any:
        return QmpError("Bus 'scsi0.0' not found") if command == "device_add" else {}

    link = Link(answer)
    with pytest.raises(HypervisorError, match=r"Bus 'scsi0\.0' not found"):
        await get_hypervisor("kvm").hotplug_disk(link, "n1", SOCK, 1, "/dev/loop1", block=True)
    assert link.said[-1] == ("blockdev-del", {"node-name": "disk1"})


async def test_unplug_waits_for_device_deleted_then_checks_qemu_let_go() -> None:
    def answer(command: str, arguments: dict[str, Any]) -> Any:
        if command == "device_del":
            other = {"event": "DEVICE_DELETED", "data": {"path": "/machine/peripheral/x"}}
            mine = {"event": "DEVICE_DELETED", "data": {"device": "disk1-dev"}}
            return {}, [other, mine]
        if command == "blockdev-del":
            return QmpError("Failed to find node with node-name='disk1'")
        return blocks(0)

    link = Link(answer)
    await get_hypervisor("kvm").unplug_disk(link, "n1", SOCK, 1, timeout=5)
    assert [c for c, _ in link.said] == [
        "qmp_capabilities",
        "device_del",
        "blockdev-del",
        "query-block",
    ]
    assert any("released disk1-dev (DEVICE_DELETED)" in line for line in link.logs)


async def test_unplug_without_device_deleted_fails_clearly() -> None:
    def answer(command: str, arguments: dict[str, Any]) -> Any:
        return {} if command == "device_del" else blocks(0, 1)

    link = Link(answer)
    with pytest.raises(HypervisorError) as info:
        await get_hypervisor("kvm").unplug_disk(link, "n1", SOCK, 1, timeout=7)
    assert "did not release disk1 within 7s (no DEVICE_DELETED for disk1-dev)" in info.value.message
    assert "stays plugged in" in info.value.message
    assert ("blockdev-del", {"node-name": "disk1"}) not in link.said


async def test_unplug_of_a_disk_the_guest_no_longer_has_succeeds() -> None:
    def answer(command: str, arguments: dict[str, Any]) -> Any:
        if command == "device_del":
            return QmpError("Device 'disk1-dev' not found", "DeviceNotFound")
        return {} if command == "blockdev-del" else blocks(0)

    await get_hypervisor("kvm").unplug_disk(Link(answer), "n1", SOCK, 1, timeout=5)


async def test_unplug_refuses_when_qemu_still_holds_the_disk() -> None:
    def answer(command: str, arguments: dict[str, Any]) -> Any:
        if command == "device_del":
            return {}, [{"event": "DEVICE_DELETED", "data": {"device": "disk1-dev"}}]
        return {} if command == "blockdev-del" else blocks(0, 1)

    with pytest.raises(HypervisorError, match="still holds disk1"):
        await get_hypervisor("kvm").unplug_disk(Link(answer), "n1", SOCK, 1, timeout=5)


async def test_freeze_uses_the_guest_agent_when_one_answers() -> None:
    def agent(command: str, arguments: dict[str, Any]) -> Any:
        if command == "guest-sync":
            return arguments["id"]
        return {"guest-ping": {}, "guest-fsfreeze-freeze": 2, "guest-fsfreeze-thaw": 2}[command]

    def qmp(command: str, arguments: dict[str, Any]) -> Any:
        raise AssertionError(f"QMP {command} while an agent answers")

    link = Link(qmp, agent)
    hv = get_hypervisor("kvm")
    assert await hv.freeze_io(link, "n1", SOCK) == "fsfreeze"
    assert ("guest-fsfreeze-freeze", {}) in link.said
    await hv.thaw_io(link, "n1", SOCK, "fsfreeze")
    assert link.said[-1] == ("guest-fsfreeze-thaw", {})


@pytest.mark.parametrize("agent", [None, lambda c, a: None], ids=["no-socket", "silent"])
async def test_freeze_pauses_when_no_agent_answers(agent: Answer | None) -> None:
    state = {"status": "running"}

    def qmp(command: str, arguments: dict[str, Any]) -> Any:
        if command == "stop":
            state["status"] = "paused"
        elif command == "cont":
            state["status"] = "running"
        return dict(state) if command == "query-status" else {}

    link = Link(qmp, agent)
    hv = get_hypervisor("kvm")
    assert await hv.freeze_io(link, "n1", SOCK) == "pause"
    assert state["status"] == "paused"
    assert any("pausing the guest instead" in line for line in link.logs)
    # Recovery does not know how it was frozen: it resumes a paused guest.
    await hv.thaw_io(link, "n1", SOCK, None)
    assert state["status"] == "running"


def test_fake_hypervisor_replugs_by_a_command_and_kvm_by_its_socket() -> None:
    fake, kvm = get_hypervisor("fake"), get_hypervisor("kvm")
    assert fake.replugs
    assert not kvm.replugs
    command = fake.replug_command("k", "run/n1", ["/dev/loop1", "/v/a b"], timeout=9)
    assert command is not None
    assert command.argv[3:] == ("sh", "run/n1", "k", "/dev/loop1", "/v/a b")
    assert kvm.replug_command("k", "run/n1", [], timeout=9) is None
    with pytest.raises(HypervisorError, match=r"index 0\.\.255"):
        hotplug.plug_commands(256, "/dev/x", block=True)
