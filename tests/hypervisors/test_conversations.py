"""The backends' conversations with a running guest, over a scripted link: what the
kvm backend says on which node's QMP socket, and what it makes of the answers.

The LUs only hand their step context to these methods; the QMP they spell lives here.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from extjobs.errors import HypervisorError
from extjobs.hypervisors import get_hypervisor
from extjobs.hypervisors.link import ByteStream

Answer = Callable[[str, dict[str, Any]], Any]

GREETING = {"QMP": {"version": {"qemu": {"major": 9, "minor": 0, "micro": 0}}}}


class ScriptedQmp:
    """One QMP server end: greets, then answers each command with ``answer``."""

    def __init__(self, node: str, answer: Answer, said: list[tuple[str, str]]) -> None:
        self._node = node
        self._answer = answer
        self._said = said
        self._out = [json.dumps(GREETING).encode() + b"\r\n"]

    async def send(self, data: bytes) -> None:
        message = json.loads(data)
        command = message["execute"]
        self._said.append((self._node, command))
        if command == "qmp_capabilities":
            value: Any = {}
        else:
            value = self._answer(command, message.get("arguments", {}))
        if isinstance(value, Exception):
            reply = {"error": {"class": "GenericError", "desc": str(value)}, "id": message["id"]}
        else:
            reply = {"return": value, "id": message["id"]}
        event = {"event": "STOP", "timestamp": {}}
        self._out.append(json.dumps(event).encode() + b"\r\n")
        self._out.append(json.dumps(reply).encode() + b"\r\n")

    async def receive(self, max_bytes: int = 65536) -> bytes:
        return self._out.pop(0) if self._out else b""


class ScriptedLink:
    """A :class:`GuestLink` whose nodes answer from ``answers`` and which records
    every command, stream and log line."""

    def __init__(self, answers: dict[str, Answer]) -> None:
        self.answers = answers
        self.said: list[tuple[str, str]] = []
        self.streams: list[tuple[str, str, str]] = []
        self.logs: list[tuple[str, str]] = []

    @contextlib.asynccontextmanager
    async def open_unix_stream(
        self, node: str, path: str, *, timeout: float, description: str
    ) -> AsyncIterator[ByteStream]:
        self.streams.append((node, path, description))
        yield ScriptedQmp(node, self.answers[node], self.said)

    def log(self, message: str, *, kind: str = "message") -> None:
        self.logs.append((kind, message))

    async def sleep(self, seconds: float) -> None:
        pass


def target_answers(state: str = "running") -> Answer:
    def answer(command: str, arguments: dict[str, Any]) -> Any:
        if command == "migrate-incoming":
            assert arguments == {"uri": "tcp:10.0.0.2:0"}
            return {}
        if command == "query-migrate":
            return {"status": "setup", "socket-address": [{"type": "inet", "port": "4711"}]}
        if command == "query-status":
            return {"status": state, "running": state == "running"}
        if command == "cont":
            return {}
        raise AssertionError(command)

    return answer


def source_answers(*statuses: str) -> Answer:
    polls = iter(statuses)

    def answer(command: str, arguments: dict[str, Any]) -> Any:
        if command in ("stop", "migrate"):
            return {}
        if command == "query-migrate":
            status = next(polls)
            ram = {"transferred": 32 << 20, "remaining": 32 << 20, "total": 64 << 20}
            return {"status": status, "ram": ram, "error-desc": "Address already in use"}
        raise AssertionError(command)

    return answer


async def transfer(link: ScriptedLink, *, live: bool = True) -> None:
    await get_hypervisor("kvm").transfer_memory(
        link,
        source="n1",
        source_socket="/r/n1/k.qmp",
        target="n2",
        target_socket="/r/n2/k.qmp",
        host="10.0.0.2",
        port=None,
        live=live,
    )


async def test_live_transfer_in_order() -> None:
    link = ScriptedLink(
        {"n1": source_answers("active", "completed"), "n2": target_answers("running")}
    )
    await transfer(link)
    spoken = [(node, c) for node, c in link.said if c != "qmp_capabilities"]
    assert spoken == [
        ("n2", "migrate-incoming"),
        ("n2", "query-migrate"),
        ("n1", "migrate"),
        ("n1", "query-migrate"),
        ("n1", "query-migrate"),
        ("n2", "query-status"),
    ]
    assert [d for _, _, d in link.streams] == [
        "QMP migrate-incoming",
        "QMP migrate",
        "QMP query-status",
    ]
    messages = [m for _, m in link.logs]
    assert "n2: waiting for the guest on 10.0.0.2:4711" in messages
    assert ("qmp", "n1: QMP migrate {'uri': 'tcp:10.0.0.2:4711'}: ok") in link.logs
    assert any(k == "progress" and m.startswith("n1: migration completed") for k, m in link.logs)
    assert "n2: the guest runs (query-status: running)" in messages


async def test_non_live_transfer_pauses_then_continues() -> None:
    link = ScriptedLink({"n1": source_answers("completed"), "n2": target_answers("paused")})
    with pytest.raises(HypervisorError, match="is paused after the migration"):
        await transfer(link, live=False)
    assert ("n1", "stop") in link.said
    assert ("n2", "cont") in link.said


async def test_a_failed_transfer_says_why() -> None:
    link = ScriptedLink({"n1": source_answers("failed"), "n2": target_answers()})
    with pytest.raises(HypervisorError, match="failed: Address already in use") as info:
        await transfer(link)
    assert info.value.fields.get("node") == "n1"
    assert ("n2", "query-status") not in link.said


async def test_the_fake_backend_moves_no_memory() -> None:
    fake = get_hypervisor("fake")
    assert not fake.transfers_memory
    with pytest.raises(HypervisorError, match="does not transfer memory"):
        await fake.transfer_memory(
            ScriptedLink({}),
            source="n1",
            source_socket="s",
            target="n2",
            target_socket="t",
            host="h",
            port=None,
            live=True,
        )


async def test_resize_notice_reports_what_the_guest_sees() -> None:
    def answer(command: str, arguments: dict[str, Any]) -> Any:
        if command == "block_resize":
            assert arguments == {"device": "disk1", "node-name": "disk1", "size": 32 << 20}
            return {}
        assert command == "query-block"
        return [{"device": "disk1", "inserted": {"image": {"virtual-size": 32 << 20}}}]

    link = ScriptedLink({"n1": answer})
    assert await get_hypervisor("kvm").notify_resize(link, "n1", "/s", 1, 32) == 32 << 20
    assert link.streams == [("n1", "/s", "QMP block_resize, query-block")]
    assert await get_hypervisor("fake").notify_resize(link, "n1", "/s", 1, 32) is None


async def test_guest_state_cancels_a_migration_under_way() -> None:
    polls = iter(["active", "cancelling", "cancelled"])

    def answer(command: str, arguments: dict[str, Any]) -> Any:
        if command == "query-status":
            return {"status": "postmigrate"}
        if command == "query-migrate":
            return {"status": next(polls)}
        assert command == "migrate_cancel"
        return {}

    kvm = get_hypervisor("kvm")
    link = ScriptedLink({"n1": answer})
    state = await kvm.guest_state(link, "n1", "/s")
    assert kvm.is_leftover(state)
    assert ("n1", "migrate_cancel") in link.said
    assert any("migration under way was cancelled" in m for _, m in link.logs)


async def test_an_error_reply_is_a_hypervisor_error() -> None:
    link = ScriptedLink({"n1": lambda command, arguments: RuntimeError("no such device")})
    with pytest.raises(HypervisorError, match="QMP cont on n1:/s failed: GenericError"):
        await get_hypervisor("kvm").resume(link, "n1", "/s")


def test_settings_become_one_migrate_set_parameters_before_migrate() -> None:
    from extjobs.hypervisors.base import MigrationSettings
    from extjobs.hypervisors.migration import migrate_commands

    settings = MigrationSettings(max_downtime=250, bandwidth=40, converge_timeout=60)
    assert migrate_commands("10.0.0.2", 4711, live=False, settings=settings) == [
        ("migrate-set-parameters", {"downtime-limit": 250, "max-bandwidth": 40 << 20}),
        ("stop", {}),
        ("migrate", {"uri": "tcp:10.0.0.2:4711"}),
    ]
    assert migrate_commands("10.0.0.2", 4711, live=True) == [
        ("migrate", {"uri": "tcp:10.0.0.2:4711"})
    ]


async def test_a_transfer_that_does_not_converge_is_cancelled_and_the_source_kept() -> None:
    from extjobs.hypervisors.base import MigrationSettings

    parameters: list[dict[str, Any]] = []
    cancelled = []

    def source(command: str, arguments: dict[str, Any]) -> Any:
        if command == "migrate-set-parameters":
            parameters.append(arguments)
            return {}
        if command == "migrate":
            return {}
        if command == "migrate_cancel":
            cancelled.append(True)
            return {}
        if command == "query-migrate":
            ram = {"transferred": 8 << 20, "remaining": 1 << 20, "total": 64 << 20}
            return {"status": "cancelled" if cancelled else "active", "ram": ram}
        if command == "query-status":
            return {"status": "running", "running": True}
        raise AssertionError(command)

    link = ScriptedLink({"n1": source, "n2": target_answers("inmigrate")})
    settings = MigrationSettings(max_downtime=1, bandwidth=1, converge_timeout=1e-9)
    with pytest.raises(HypervisorError, match="did not converge within") as caught:
        await get_hypervisor("kvm").transfer_memory(
            link,
            source="n1",
            source_socket="/r/n1/k.qmp",
            target="n2",
            target_socket="/r/n2/k.qmp",
            host="10.0.0.2",
            port=None,
            live=True,
            settings=settings,
        )
    assert "the guest keeps running on n1" in caught.value.message
    assert parameters == [{"downtime-limit": 1, "max-bandwidth": 1 << 20}]
    spoken = [c for node, c in link.said if node == "n1" and c != "qmp_capabilities"]
    assert spoken[:3] == ["migrate-set-parameters", "migrate", "query-migrate"]
    assert spoken[3:] == ["migrate_cancel", "query-migrate", "query-status"]
    assert any("cancelled" in message for _, message in link.logs)
    # Nothing more is asked of the target once the transfer was cancelled.
    assert [c for node, c in link.said if node == "n2" and c != "qmp_capabilities"] == [
        "migrate-incoming",
        "query-migrate",
    ]
