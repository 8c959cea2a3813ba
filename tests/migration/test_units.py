"""Pure parts of moving instances: QMP migration messages, opcodes, the journal tag, and
programs run on the master (fence commands)."""

from __future__ import annotations

import functools
import os
import signal
import time
from pathlib import Path

import anyio
import pytest

from extjobs.engine.local import run_local_process
from extjobs.errors import CommandTimeoutError, HypervisorError, InputError
from extjobs.hypervisors import get_hypervisor
from extjobs.hypervisors.migration import (
    incoming_commands,
    is_leftover,
    listening_port,
    migrate_commands,
    parse_progress,
    run_state,
    tcp_uri,
)
from extjobs.model.cluster import Instance
from extjobs.model.opcodes import OpInstanceMigrate, OpNodeSetParams, decode_opcode
from extjobs.model.remote import DEFAULT_PATH
from extjobs.nodes import loop
from tests.harness.procs import is_alive

INST = Instance(name="vm1", primary="n1", hypervisor="kvm", uuid="k-1")
ENV = {"PATH": DEFAULT_PATH, "LC_ALL": "C"}


@pytest.mark.parametrize(
    ("host", "port", "uri"),
    [
        pytest.param("127.0.0.1", 4444, "tcp:127.0.0.1:4444", id="ipv4"),
        pytest.param("node2.example", 1, "tcp:node2.example:1", id="name"),
        pytest.param("::1", 4444, "tcp:[::1]:4444", id="ipv6"),
    ],
)
def test_tcp_uri(host: str, port: int, uri: str) -> None:
    assert tcp_uri(host, port) == uri


def test_incoming_and_migrate_commands() -> None:
    assert incoming_commands("10.0.0.2", None) == [
        ("migrate-incoming", {"uri": "tcp:10.0.0.2:0"}),
        ("query-migrate", {}),
    ]
    assert incoming_commands("10.0.0.2", 8102)[0][1] == {"uri": "tcp:10.0.0.2:8102"}
    assert migrate_commands("h", 5, live=True) == [("migrate", {"uri": "tcp:h:5"})]
    assert migrate_commands("h", 5, live=False) == [("stop", {}), ("migrate", {"uri": "tcp:h:5"})]


def test_listening_port() -> None:
    reply = {"socket-address": [{"port": "42643", "host": "127.0.0.1", "type": "inet"}]}
    assert listening_port(reply, where="n2") == 42643
    with pytest.raises(HypervisorError, match="does not say where it listens"):
        listening_port({}, where="n2")
    with pytest.raises(HypervisorError):
        listening_port({"socket-address": [{"port": "0"}]}, where="n2")


def test_progress() -> None:
    active = parse_progress(
        {
            "status": "active",
            "ram": {"total": 100 << 20, "remaining": 25 << 20, "transferred": 80 << 20},
        }
    )
    assert (active.final, active.percent) == (False, 75)
    assert active.describe() == "active: 75% (80.0 MiB sent, 25.0 MiB of 100.0 MiB left)"
    done = parse_progress(
        {"status": "completed", "downtime": 4, "total-time": 15, "ram": {"transferred": 1 << 20}}
    )
    assert (done.final, done.percent) == (True, 100)
    assert done.describe() == "completed: 1.0 MiB sent in 15 ms, downtime 4 ms"
    failed = parse_progress({"status": "failed", "error-desc": "Unable to write"})
    assert failed.final
    assert failed.describe() == "failed: Unable to write"
    assert parse_progress({}).status == "none"
    assert parse_progress({"status": "setup", "ram": {"total": 0}}).percent == 0
    with pytest.raises(HypervisorError):
        parse_progress([])


def test_run_state() -> None:
    assert run_state({"status": "running", "running": True}) == "running"
    with pytest.raises(HypervisorError):
        run_state({"running": True})
    assert is_leftover("postmigrate")
    assert is_leftover("inmigrate")
    assert not is_leftover("running")
    assert not is_leftover("paused")


def test_incoming_commands_of_the_backends() -> None:
    kvm = get_hypervisor("kvm")
    command = kvm.incoming_command(INST, ["/dev/loop3"], "run/n2", timeout=9)
    assert command.argv[-2:] == ("-incoming", "defer")
    assert command.argv[:-2] == kvm.start_command(INST, ["/dev/loop3"], "run/n2", timeout=9).argv
    assert kvm.transfers_memory
    fake = get_hypervisor("fake")
    assert not fake.transfers_memory
    assert fake.incoming_command(INST, ["/a"], "r", timeout=5) == fake.start_command(
        INST, ["/a"], "r", timeout=5
    )


@pytest.mark.parametrize(
    ("body", "field"),
    [
        pytest.param(
            {"OP_ID": "OP_INSTANCE_MIGRATE", "instance_name": "a", "mode": "x"}, "mode", id="mode"
        ),
        pytest.param(
            {
                "OP_ID": "OP_INSTANCE_MIGRATE",
                "instance_name": "a",
                "cleanup": True,
                "target_node": "n",
            },
            "target_node",
            id="cleanup-with-target",
        ),
        pytest.param(
            {"OP_ID": "OP_INSTANCE_MIGRATE", "instance_name": "a", "migration_port": 70000},
            "migration_port",
            id="port",
        ),
        pytest.param(
            {"OP_ID": "OP_INSTANCE_FAILOVER", "instance_name": "a", "shutdown_timeout": -1},
            "shutdown_timeout",
            id="timeout",
        ),
        pytest.param(
            {"OP_ID": "OP_NODE_SET_PARAMS", "node_name": "n"}, "node_name", id="no-change"
        ),
        pytest.param(
            {"OP_ID": "OP_NODE_SET_PARAMS", "node_name": "n", "fence_command": ["", "x"]},
            "fence_command",
            id="fence-empty-program",
        ),
        pytest.param(
            {"OP_ID": "OP_NODE_SET_PARAMS", "node_name": "n", "fence_command": ["a\0b"]},
            "fence_command",
            id="fence-nul",
        ),
    ],
)
def test_bad_opcodes(body: dict[str, object], field: str) -> None:
    with pytest.raises(InputError) as info:
        decode_opcode(body)
    assert info.value.fields.get("field") == field


def test_good_opcodes() -> None:
    op = decode_opcode({"OP_ID": "OP_INSTANCE_MIGRATE", "instance_name": "a", "mode": "non-live"})
    assert op == OpInstanceMigrate(instance_name="a", mode="non-live")
    op = decode_opcode({"OP_ID": "OP_NODE_SET_PARAMS", "node_name": "n", "fence_command": []})
    assert op == OpNodeSetParams(node_name="n", fence_command=())


@pytest.mark.spawns
async def test_run_local_process(tmp_path: Path) -> None:
    result = await run_local_process(
        ["/bin/sh", "-c", 'echo "out $EXTJOBS_NODE"; echo err >&2; exit 3'],
        {**ENV, "EXTJOBS_NODE": "n1"},
        timeout=10,
    )
    assert (result.exit_status, result.stdout, result.stderr) == (3, "out n1\n", "err\n")
    missing = await run_local_process([str(tmp_path / "nope")], ENV, timeout=10)
    assert missing.exit_status == 127
    assert "cannot run" in missing.stderr
    capped = await run_local_process(
        ["/bin/sh", "-c", "head -c 5000 /dev/zero"], ENV, timeout=10, cap=100
    )
    assert (len(capped.stdout), capped.stdout_dropped) == (100, 4900)


@pytest.mark.spawns
@pytest.mark.parametrize("event_loop", ["asyncio", "uvloop"])
def test_run_local_process_ends_with_the_program_not_with_its_daemon(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, event_loop: str
) -> None:
    """A fence command may start a daemon with its output sent elsewhere: the run ends
    when the program does, on either event loop the daemon can run on."""
    monkeypatch.setenv(loop.EVENT_LOOP_ENV, event_loop)
    pidfile = tmp_path / "daemon"
    script = f"sleep 30 </dev/null >/dev/null 2>&1 & echo $! >{pidfile}; echo fenced"
    try:
        run = functools.partial(run_local_process, timeout=10.0)
        result = loop.run(run, ["/bin/sh", "-c", script], ENV)
    finally:
        if pidfile.exists():
            os.kill(int(pidfile.read_text()), signal.SIGKILL)
    assert (result.exit_status, result.stdout) == (0, "fenced\n")


@pytest.mark.spawns
async def test_run_local_process_kills_the_group_on_timeout(tmp_path: Path) -> None:
    pidfile = tmp_path / "child"
    script = f"sleep 60 & echo $! >{pidfile}; wait"
    started = time.monotonic()
    with pytest.raises(CommandTimeoutError, match=r"took longer than 0\.5s"):
        await run_local_process(["/bin/sh", "-c", script], ENV, timeout=0.5)
    assert time.monotonic() - started < 10
    child = int(pidfile.read_text())
    for _ in range(100):
        if not is_alive(child):
            break
        await anyio.sleep(0.05)
    assert not is_alive(child)


@pytest.mark.spawns
async def test_run_local_process_is_cancellable(tmp_path: Path) -> None:
    pidfile = tmp_path / "child"
    with anyio.move_on_after(0.5):
        await run_local_process(
            ["/bin/sh", "-c", f"echo $$ >{pidfile}; exec sleep 60"], ENV, timeout=30
        )
    pid = int(pidfile.read_text())
    for _ in range(100):
        if not is_alive(pid):
            break
        await anyio.sleep(0.05)
    assert not is_alive(pid)
