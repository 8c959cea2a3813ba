"""SSHRunner against real SSH servers: embedded asyncssh nodes and OpenSSH sshd nodes."""

from __future__ import annotations

import math
import os
import stat
import threading
import time
import tracemalloc
from pathlib import Path

import anyio
import asyncssh
import attrs
import pytest

from extjobs.errors import (
    CommandTimeoutError,
    HostKeyError,
    NodeError,
    NodeUnreachableError,
    StoreError,
)
from extjobs.model.config import SSHOptions
from extjobs.model.remote import CommandResult, Endpoint, RemoteCommand
from extjobs.nodes.runner import NodeRunner
from extjobs.nodes.ssh import SSHRunner, _Session
from tests.harness import HarnessNode
from tests.harness.procs import process_group, wait_group_gone, wait_line_in_file

SH = "/bin/sh"
PATH = "/usr/local/bin:/usr/bin:/bin"


def _script(node: HarnessNode, name: str, body: str) -> str:
    path = node.root / name
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return str(path)


async def _wait_gone(pgid: int) -> list[int]:
    return await anyio.to_thread.run_sync(wait_group_gone, pgid)


async def _wait_file(path: Path) -> str:
    return await anyio.to_thread.run_sync(wait_line_in_file, path)


async def test_runner_satisfies_the_protocol(ssh_options: SSHOptions) -> None:
    async with SSHRunner(ssh_options) as runner:
        assert isinstance(runner, NodeRunner)


async def test_result_carries_status_output_and_stdin(
    nodes: list[HarnessNode], ssh_options: SSHOptions
) -> None:
    cmd = RemoteCommand(
        (SH, "-c", "cat; echo out; echo err >&2; exit 3"), env={"PATH": PATH}, stdin=b"in\n"
    )
    async with SSHRunner(ssh_options) as runner:
        result = await runner.run(nodes[0].endpoint(), cmd)
    assert result.exit_status == 3
    assert result.stdout == "in\nout\n"
    assert result.stderr == "err\n"
    assert (result.stdout_dropped, result.stderr_dropped, result.signal) == (0, 0, None)
    assert result.duration > 0


async def test_death_by_signal_is_reported(
    nodes: list[HarnessNode], ssh_options: SSHOptions
) -> None:
    async with SSHRunner(ssh_options) as runner:
        result = await runner.run(nodes[0].endpoint(), RemoteCommand((SH, "-c", "kill -TERM $$")))
    assert result.exit_status is None
    assert result.signal == "TERM"


async def test_environment_is_exactly_the_given_one(
    nodes: list[HarnessNode], ssh_options: SSHOptions
) -> None:
    node = nodes[0]
    dump = node.root / "environ"
    # /proc/PID/environ is what the program got from exec, before its shell adds PWD.
    script = _script(node, "dump-env", f"cat /proc/$$/environ > {dump}\nenv\n")
    env = {"PATH": PATH, "LC_ALL": "C", "VOL_NAME": "disk0"}
    async with SSHRunner(ssh_options) as runner:
        result = await runner.run(node.endpoint(), RemoteCommand((script,), env=env, cwd="/"))
    assert result.ok, result.stderr
    assert dump.read_bytes() == b"LC_ALL=C\0PATH=" + PATH.encode() + b"\0VOL_NAME=disk0\0"
    # What `env` in the script shows: the given variables plus only its shell's PWD.
    shown = dict(line.split("=", 1) for line in result.stdout.splitlines())
    assert set(shown) - set(env) <= {"PWD"}


async def test_empty_environment_stays_empty(
    nodes: list[HarnessNode], ssh_options: SSHOptions
) -> None:
    async with SSHRunner(ssh_options) as runner:
        result = await runner.run(nodes[0].endpoint(), RemoteCommand(("/usr/bin/env",)))
    assert result.ok
    assert result.stdout == ""


HOSTILE = {
    "SUBST": "$(touch {marker}-subst)",
    "BACKTICK": "`touch {marker}-backtick`",
    "QUOTES": "it's \"quoted\" \\ back'\"'",
    "SEMI": "a; touch {marker}-semi; b",
    "SPACES": "  two  spaces  ",
    "NEWLINES": "line1\nline2\n\n",
    "UNICODE": "Größe ≤ 2 GiB — 日本語 🚀",
    "DOLLAR": "$HOME ${PATH} $$ $1 *",
    "OPTIONS": "-i --",
    "EMPTY": "",
}


async def test_values_reach_the_script_byte_identical(
    nodes: list[HarnessNode], ssh_options: SSHOptions, tmp_path: Path
) -> None:
    node = nodes[0]
    marker = tmp_path / "injected"
    env = {k: v.replace("{marker}", str(marker)) for k, v in HOSTILE.items()}
    dump = node.root / "environ"
    args_dump = node.root / "args"
    script = _script(
        node,
        "dump",
        f"cat /proc/$$/environ > {dump}\nprintf '%s\\0' \"$@\" > {args_dump}\n",
    )
    args = tuple(env.values())
    async with SSHRunner(ssh_options) as runner:
        result = await runner.run(node.endpoint(), RemoteCommand((script, *args), env=env))
    assert result.ok, result.stderr
    entries = dump.read_bytes().split(b"\0")[:-1]
    assert sorted(entries) == sorted(f"{k}={v}".encode() for k, v in env.items())
    assert args_dump.read_bytes() == b"".join(a.encode() + b"\0" for a in args)
    assert [p async for p in anyio.Path(tmp_path).glob("injected*")] == []


async def test_timeout_kills_the_whole_process_group(
    nodes: list[HarnessNode], ssh_options: SSHOptions
) -> None:
    node = nodes[0]
    pidfile = node.root / "hang.pid"
    script = _script(node, "hang", f"echo $$ > {pidfile}\nsleep 1000 &\nsleep 1000\n")
    async with SSHRunner(ssh_options) as runner:
        with pytest.raises(CommandTimeoutError) as caught:
            await runner.run(
                node.endpoint(), RemoteCommand((script,), env={"PATH": PATH}, timeout=1)
            )
        pgid = int(pidfile.read_text())
        assert await _wait_gone(pgid) == []
        # The runner is still usable, and the slot of the killed command was freed.
        assert (await runner.run(node.endpoint(), RemoteCommand(("/bin/true",)))).ok
        assert runner.statistics()["channels_in_use"][node.name] == 0
    error = caught.value
    assert str(error) == f"{script} on node {node.name} timed out after 1s and was killed"
    fields = dict(error.fields)
    tails = {k: fields.pop(k) for k in ("stdout_tail", "stderr_tail")}
    assert fields == {"node": node.name, "argv": [script], "timeout": 1}
    # What the killed script printed is kept (its stdout is empty here: it only sleeps).
    assert tails == {"stdout_tail": "", "stderr_tail": ""}


async def test_cancelling_the_caller_kills_the_remote_group(
    nodes: list[HarnessNode], ssh_options: SSHOptions
) -> None:
    node = nodes[0]
    pidfile = node.root / "hang.pid"
    script = _script(node, "hang", f"echo $$ > {pidfile}\nsleep 1000 &\nsleep 1000\n")
    async with SSHRunner(ssh_options) as runner:
        async with anyio.create_task_group() as tg:
            tg.start_soon(runner.run, node.endpoint(), RemoteCommand((script,), env={"PATH": PATH}))
            pgid = int(await _wait_file(pidfile))
            assert process_group(pgid)
            tg.cancel_scope.cancel()
        assert await _wait_gone(pgid) == []
        assert runner.statistics()["channels_in_use"][node.name] == 0


async def test_a_command_whose_group_cannot_be_recorded_is_killed(
    nodes: list[HarnessNode], ssh_options: SSHOptions
) -> None:
    node = nodes[0]
    pidfile = node.root / "unrecorded.pid"
    script = _script(node, "unrecorded", f"echo $$ > {pidfile}\nsleep 1000 &\nsleep 1000\n")

    def journal_refuses(pgid: int) -> None:
        raise StoreError("store write failed: database or disk is full")

    async with SSHRunner(ssh_options) as runner:
        with pytest.raises(StoreError, match="disk is full"):
            await runner.run(
                node.endpoint(),
                RemoteCommand((script,), env={"PATH": PATH}),
                on_started=journal_refuses,
            )
        pgid = int(await _wait_file(pidfile))
        # Nothing of it runs on: nobody could have killed it later.
        assert await _wait_gone(pgid) == []
        assert (await runner.run(node.endpoint(), RemoteCommand(("/bin/true",)))).ok
        assert runner.statistics()["channels_in_use"][node.name] == 0


async def test_huge_output_is_capped_in_bounded_memory(
    nodes: list[HarnessNode], ssh_options: SSHOptions
) -> None:
    total, err_total = 100_000_000, 1_000_000
    cmd = RemoteCommand(
        (
            SH,
            "-c",
            (
                f"printf START; head -c {total - 8} /dev/zero | tr '\\0' x; printf END; "
                f"head -c {err_total} /dev/zero | tr '\\0' e >&2"
            ),
        ),
        env={"PATH": PATH},
        timeout=100,
    )
    async with SSHRunner(ssh_options, output_cap=4096) as runner:
        await runner.run(nodes[0].endpoint(), RemoteCommand(("/bin/true",)))  # connect first
        tracemalloc.start()
        try:
            base, _ = tracemalloc.get_traced_memory()
            result = await runner.run(nodes[0].endpoint(), cmd)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert result.ok
    assert result.stdout_dropped == total - 4096
    assert result.stdout.startswith("START" + "x" * 2043 + "\n[... ")
    assert result.stdout.endswith(f"[... {total - 4096} bytes dropped ...]\n" + "x" * 2045 + "END")
    assert result.stderr_dropped == err_total - 4096
    assert peak - base < 8_000_000, f"output capture used {peak - base} bytes"


async def test_wrong_pinned_key_is_refused_naming_the_offered_key(
    nodes: list[HarnessNode], ssh_options: SSHOptions
) -> None:
    node, other = nodes
    endpoint = node.endpoint(host_key=other.host_key)
    offered = asyncssh.import_public_key(node.host_key).get_fingerprint()
    async with SSHRunner(ssh_options) as runner:
        with pytest.raises(HostKeyError) as caught:
            await runner.run(endpoint, RemoteCommand(("/bin/true",)))
    message = str(caught.value)
    assert f"host key of node {node.name}" in message
    assert "changed" in message
    assert offered in message
    assert caught.value.fields["offered"] == offered
    assert caught.value.fields["node"] == node.name


async def test_missing_pinned_key_is_refused_before_connecting(
    nodes: list[HarnessNode], ssh_options: SSHOptions
) -> None:
    async with SSHRunner(ssh_options) as runner:
        with pytest.raises(HostKeyError, match="no pinned host key"):
            await runner.run(nodes[0].endpoint(host_key=None), RemoteCommand(("/bin/true",)))
        assert runner.statistics()["connections_opened"].get(nodes[0].name, 0) == 0


async def test_changed_host_key_is_refused_and_refetched_key_works(
    nodes: list[HarnessNode], ssh_options: SSHOptions
) -> None:
    node = nodes[0]
    old = node.endpoint()
    async with SSHRunner(ssh_options) as runner:
        assert (await runner.run(old, RemoteCommand(("/bin/true",)))).ok
        node.delete_host_key()
        node.restart()
        with pytest.raises(HostKeyError, match=f"host key of node {node.name}"):
            await runner.run(old, RemoteCommand(("/bin/true",)))
        fetched = await runner.fetch_host_key(node.host, node.port)
        assert fetched != old.host_key
        assert fetched.split()[:2] == node.host_key.split()[:2]
        renewed = attrs.evolve(old, host_key=fetched)
        assert (await runner.run(renewed, RemoteCommand(("/bin/true",)))).ok


async def test_fetch_host_key_of_a_dead_port_is_unreachable(
    nodes: list[HarnessNode], ssh_options: SSHOptions
) -> None:
    node = nodes[0]
    node.stop()
    async with SSHRunner(ssh_options) as runner:
        with pytest.raises(NodeUnreachableError):
            await runner.fetch_host_key(node.host, node.port)


async def _outcome(runner: SSHRunner, node: HarnessNode) -> CommandResult | NodeError:
    try:
        return await runner.run(node.endpoint(), RemoteCommand(("/bin/true",)))
    except NodeError as exc:
        return exc


async def test_stopped_node_is_unreachable_while_others_work(
    nodes: list[HarnessNode], ssh_options: SSHOptions
) -> None:
    down, up = nodes
    endpoint = down.endpoint()
    down.stop()
    outcomes: list[CommandResult | NodeError] = []

    async def record(node: HarnessNode) -> None:
        outcomes.append(await _outcome(runner, node))

    async with SSHRunner(ssh_options) as runner, anyio.create_task_group() as tg:
        for _ in range(4):
            tg.start_soon(record, down)
            tg.start_soon(record, up)
    errors = [o for o in outcomes if isinstance(o, NodeError)]
    results = [o for o in outcomes if isinstance(o, CommandResult)]
    assert len(errors) == 4
    assert len(results) == 4
    assert all(r.ok for r in results)
    for error in errors:
        assert isinstance(error, NodeUnreachableError)
        assert error.fields["node"] == down.name
        assert (error.fields["host"], error.fields["port"]) == (endpoint.host, endpoint.port)
        assert error.fields["reason"]


async def test_frozen_node_is_unreachable_within_the_connect_timeout(
    nodes: list[HarnessNode], ssh_options: SSHOptions
) -> None:
    node = nodes[0]
    node.freeze()
    try:
        async with SSHRunner(ssh_options) as runner:
            with pytest.raises(NodeUnreachableError, match="timed out"):
                await runner.run(node.endpoint(), RemoteCommand(("/bin/true",)))
    finally:
        node.thaw()


async def test_connection_lost_mid_command_is_unreachable(
    nodes: list[HarnessNode], ssh_options: SSHOptions
) -> None:
    node = nodes[0]
    pidfile = node.root / "hang.pid"
    script = _script(node, "hang", f"echo $$ > {pidfile}\nsleep 1000\n")
    errors: list[Exception] = []

    async def run() -> None:
        try:
            await runner.run(node.endpoint(), RemoteCommand((script,), env={"PATH": PATH}))
        except NodeError as exc:
            errors.append(exc)

    async with SSHRunner(ssh_options) as runner:
        async with anyio.create_task_group() as tg:
            tg.start_soon(run)
            await _wait_file(pidfile)
            node.kill()
        assert len(errors) == 1
        assert isinstance(errors[0], NodeUnreachableError)
        assert "connection lost" in str(errors[0])


async def test_next_run_reconnects_after_a_restart(
    nodes: list[HarnessNode], ssh_options: SSHOptions
) -> None:
    node = nodes[0]
    async with SSHRunner(ssh_options) as runner:
        assert (await runner.run(node.endpoint(), RemoteCommand(("/bin/true",)))).ok
        node.restart()
        assert (await runner.run(node.endpoint(), RemoteCommand(("/bin/true",)))).ok
        stats = runner.statistics()
    assert stats["connections_opened"][node.name] == 2
    assert stats["connections"][node.name] == 1


async def test_a_command_ends_with_its_output_not_with_a_daemon_it_started(
    nodes: list[HarnessNode], ssh_options: SSHOptions
) -> None:
    """As under sshd: a daemon started with its output sent elsewhere does not hold the
    channel, one that keeps the output does."""
    node = nodes[0]
    pidfile = node.root / "daemon.pid"
    detached = f"sleep 30 </dev/null >/dev/null 2>&1 & echo $! >{pidfile}; echo started"
    attached = "(sleep 0.5; echo late) & echo early"
    async with SSHRunner(ssh_options) as runner:
        try:
            with anyio.fail_after(10):
                result = await runner.run(
                    node.endpoint(), RemoteCommand((SH, "-c", detached), env={"PATH": PATH})
                )
            assert (result.exit_status, result.stdout) == (0, "started\n")
        finally:
            if pidfile.exists():
                os.kill(int(pidfile.read_text()), 9)
        result = await runner.run(
            node.endpoint(), RemoteCommand((SH, "-c", attached), env={"PATH": PATH})
        )
        assert result.stdout == "early\nlate\n"


async def test_concurrent_runs_share_few_connections(
    nodes: list[HarnessNode], ssh_options: SSHOptions
) -> None:
    node = nodes[0]
    results: list[CommandResult] = []

    async def run(i: int) -> None:
        cmd = RemoteCommand((SH, "-c", f"sleep 0.3; echo {i}"), env={"PATH": PATH})
        results.append(await runner.run(node.endpoint(), cmd))

    async with SSHRunner(ssh_options) as runner:
        async with anyio.create_task_group() as tg:
            for i in range(32):
                tg.start_soon(run, i)
        stats = runner.statistics()
    assert sorted(int(r.stdout) for r in results if r.ok) == list(range(32))
    assert stats["connections_opened"][node.name] <= math.ceil(32 / ssh_options.max_sessions)
    assert stats["channels_in_use"][node.name] == 0
    assert stats["commands_run"] == 32


async def test_nodes_agree_to_the_first_cipher_offered(
    nodes: list[HarnessNode], ssh_options: SSHOptions
) -> None:
    node = nodes[0]
    true = RemoteCommand(("/bin/true",), env={"PATH": PATH})
    async with SSHRunner(ssh_options) as runner:
        assert (await runner.run(node.endpoint(), true)).ok
        assert runner.statistics()["ciphers"] == {node.name: "aes128-gcm@openssh.com"}
    chacha = attrs.evolve(ssh_options, ciphers=("chacha20-poly1305@openssh.com", "aes256-ctr"))
    async with SSHRunner(chacha) as runner:
        assert (await runner.run(node.endpoint(), true)).ok
        assert runner.statistics()["ciphers"] == {node.name: "chacha20-poly1305@openssh.com"}


async def test_slots_freed_late_by_the_server_do_not_fail_commands(
    nodes: list[HarnessNode], ssh_options: SSHOptions
) -> None:
    """sshd frees a session's slot only after it has read the client's close, and it
    may read the next channel open first: with no headroom below MaxSessions (10 in
    the harness), many short commands in a row meet refused opens, which the runner
    retries since nothing ran yet."""
    options = attrs.evolve(ssh_options, max_sessions=10, max_connections=1)
    node = nodes[0]
    results: list[CommandResult] = []

    async def run(i: int) -> None:
        for j in range(20):
            cmd = RemoteCommand((SH, "-c", f"echo {i}-{j}"), env={"PATH": PATH})
            results.append(await runner.run(node.endpoint(), cmd))

    async with SSHRunner(options) as runner:
        async with anyio.create_task_group() as tg:
            for i in range(16):
                tg.start_soon(run, i)
        stats = runner.statistics()
    assert sorted(r.stdout for r in results if r.ok) == sorted(
        f"{i}-{j}\n" for i in range(16) for j in range(20)
    )
    assert stats["connections_opened"][node.name] == 1


async def test_callers_wait_when_every_connection_is_full(
    nodes: list[HarnessNode], ssh_options: SSHOptions
) -> None:
    options = attrs.evolve(ssh_options, max_sessions=2, max_connections=1)
    node = nodes[0]
    results: list[CommandResult] = []

    async def run() -> None:
        cmd = RemoteCommand((SH, "-c", "sleep 0.1"), env={"PATH": PATH})
        results.append(await runner.run(node.endpoint(), cmd))

    async with SSHRunner(options) as runner:
        async with anyio.create_task_group() as tg:
            for _ in range(7):
                tg.start_soon(run)
        stats = runner.statistics()
    assert [r.ok for r in results] == [True] * 7
    assert stats["connections_opened"][node.name] == 1


async def test_put_tree_copies_files_and_modes(
    nodes: list[HarnessNode], ssh_options: SSHOptions, tmp_path: Path
) -> None:
    src = tmp_path / "provider"
    (src / "sub" / "deeper").mkdir(parents=True)
    files = {
        "create": (b"#!/bin/sh\nexit 0\n", 0o755),
        "parameters.list": (b"size the size\n", 0o644),
        "sub/secret": (b"\x00\xffbinary", 0o600),
        "sub/deeper/run": (b"#!/bin/sh\n", 0o750),
    }
    for rel, (data, mode) in files.items():
        (src / rel).write_bytes(data)
        (src / rel).chmod(mode)
    (src / "sub").chmod(0o711)
    dest = nodes[0].root / "srv" / "extstorage" / "provider"
    async with SSHRunner(ssh_options) as runner:
        await runner.put_tree(nodes[0].endpoint(), src, str(dest))
        await runner.put_tree(nodes[0].endpoint(), src, str(dest))  # again: overwrites
    for rel, (data, mode) in files.items():
        assert (dest / rel).read_bytes() == data
        assert stat.S_IMODE((dest / rel).stat().st_mode) == mode, rel
    assert stat.S_IMODE((dest / "sub").stat().st_mode) == 0o711
    assert sorted(os.listdir(dest)) == ["create", "parameters.list", "sub"]


async def test_a_local_read_that_hangs_never_stalls_the_event_loop(
    nodes: list[HarnessNode],
    ssh_options: SSHOptions,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A provider file whose read hangs (a hung network filesystem, a device) blocks a
    worker thread, not the event loop, and the copy's timeout ends it."""
    src = tmp_path / "provider"
    src.mkdir()
    (src / "create").write_bytes(b"#!/bin/sh\n")
    released = threading.Event()
    reading = threading.Event()

    def hung_read(path: str) -> bytes:
        reading.set()
        released.wait(30)
        return b""

    monkeypatch.setattr("extjobs.nodes.ssh.read_file", hung_read)
    gaps: list[float] = []

    async def tick() -> None:
        last = time.monotonic()
        while True:
            await anyio.sleep(0.01)
            now = time.monotonic()
            gaps.append(now - last)
            last = now

    dest = nodes[0].root / "srv" / "extstorage" / "provider"
    try:
        async with SSHRunner(ssh_options) as runner, anyio.create_task_group() as tg:
            tg.start_soon(tick)
            with pytest.raises(CommandTimeoutError):
                await runner.put_tree(nodes[0].endpoint(), src, str(dest), timeout=1.5)
            tg.cancel_scope.cancel()
    finally:
        released.set()
    assert reading.is_set()
    assert len(gaps) > 50  # the loop kept turning the whole time
    assert max(gaps) < 0.5


async def test_closed_runner_refuses_work(
    nodes: list[HarnessNode], ssh_options: SSHOptions
) -> None:
    runner = SSHRunner(ssh_options)
    assert (await runner.run(nodes[0].endpoint(), RemoteCommand(("/bin/true",)))).ok
    await runner.aclose()
    assert runner.statistics()["connections"] == {}
    with pytest.raises(RuntimeError, match="closed"):
        await runner.run(nodes[0].endpoint(), RemoteCommand(("/bin/true",)))


async def test_frozen_node_during_a_command_times_out_with_a_bounded_kill(
    nodes: list[HarnessNode], ssh_options: SSHOptions
) -> None:
    node = nodes[0]
    options = attrs.evolve(ssh_options, kill_timeout=1.0)
    async with SSHRunner(options) as runner:
        assert (await runner.run(node.endpoint(), RemoteCommand(("/bin/true",)))).ok
        node.freeze()
        try:
            with anyio.fail_after(10), pytest.raises(CommandTimeoutError):
                await runner.run(node.endpoint(), RemoteCommand(("/bin/true",), timeout=1))
        finally:
            node.thaw()
        assert (await runner.run(node.endpoint(), RemoteCommand(("/bin/true",)))).ok


async def test_login_shell_output_before_the_marker_is_skipped() -> None:
    session = _Session(1000)
    for chunk in (b"motd line\nextjobs-pg", b"id 4242\nfirst", b" line\n"):
        session.data_received(chunk, None)
    session.data_received(b"warning\n", asyncssh.EXTENDED_DATA_STDERR)
    session.connection_lost(None)
    assert session.pgid == 4242
    assert session.stdout.text() == "first line\n"
    assert session.stderr.text() == "warning\n"


async def test_output_without_a_marker_is_kept() -> None:
    session = _Session(1000)
    session.data_received(b"no marker here\n", None)
    session.connection_lost(None)
    assert session.pgid is None
    assert session.stdout.text() == "no marker here\n"


class _RefusingServer(asyncssh.SSHServer):
    """Accepts any client key, then refuses every session channel."""

    refused = 0

    def begin_auth(self, username: str) -> bool:
        return False

    def session_requested(self) -> bool:
        _RefusingServer.refused += 1
        return False


async def test_a_node_that_keeps_refusing_channels_is_an_error_after_a_few_tries(
    ssh_options: SSHOptions,
) -> None:
    host_key = asyncssh.generate_private_key("ssh-ed25519")
    _RefusingServer.refused = 0
    server = await asyncssh.create_server(
        _RefusingServer, "127.0.0.1", 0, server_host_keys=[host_key]
    )
    try:
        port = server.sockets[0].getsockname()[1]
        endpoint = Endpoint(
            name="nosessions",
            host="127.0.0.1",
            port=port,
            user="root",
            host_key=host_key.export_public_key().decode().strip(),
        )
        async with SSHRunner(ssh_options) as runner:
            with pytest.raises(NodeError, match="nosessions refused to open a channel 9 times"):
                await runner.run(endpoint, RemoteCommand(("/bin/true",)))
            stats = runner.statistics()
        assert _RefusingServer.refused == 9
        assert stats["connections_opened"]["nosessions"] == 1
        assert stats["commands_run"] == 0
    finally:
        server.close()
        await server.wait_closed()


class _OpenServer(asyncssh.SSHServer):
    """Accepts any client key; sessions run nothing but answer exit status 0."""

    def begin_auth(self, username: str) -> bool:
        return False


async def _exit_zero(process: asyncssh.SSHServerProcess[bytes]) -> None:
    process.exit(0)


async def _serve_ciphers(ciphers: list[str]) -> tuple[asyncssh.SSHAcceptor, Endpoint]:
    host_key = asyncssh.generate_private_key("ssh-ed25519")
    server = await asyncssh.create_server(
        _OpenServer,
        "127.0.0.1",
        0,
        server_host_keys=[host_key],
        encryption_algs=ciphers,
        process_factory=_exit_zero,
        encoding=None,
    )
    endpoint = Endpoint(
        name="ciphers",
        host="127.0.0.1",
        port=server.sockets[0].getsockname()[1],
        user="root",
        host_key=host_key.export_public_key().decode().strip(),
    )
    return server, endpoint


async def test_a_node_without_the_preferred_ciphers_gets_one_it_has(
    ssh_options: SSHOptions,
) -> None:
    server, endpoint = await _serve_ciphers(["aes256-ctr"])
    try:
        async with SSHRunner(ssh_options) as runner:
            assert (await runner.run(endpoint, RemoteCommand(("/bin/true",)))).ok
            assert runner.statistics()["ciphers"] == {"ciphers": "aes256-ctr"}
    finally:
        server.close()
        await server.wait_closed()


async def test_a_node_with_none_of_the_configured_ciphers_is_unreachable_saying_so(
    ssh_options: SSHOptions,
) -> None:
    server, endpoint = await _serve_ciphers(["aes128-cbc"])
    try:
        only_gcm = attrs.evolve(ssh_options, ciphers=("aes128-gcm@openssh.com",))
        async with SSHRunner(only_gcm) as runner:
            with pytest.raises(NodeUnreachableError, match=r"(?i)encryption") as caught:
                await runner.run(endpoint, RemoteCommand(("/bin/true",)))
        assert "ciphers" in str(caught.value)
        assert "aes128-gcm@openssh.com" in str(caught.value)
    finally:
        server.close()
        await server.wait_closed()
