"""The embedded SSH node as a process and as a coroutine, and stream-local forwarding."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import anyio
import anyio.abc
import asyncssh
import pytest

from extjobs.errors import NodeError, NodeUnreachableError
from extjobs.model.config import SSHOptions
from extjobs.model.remote import Endpoint, RemoteCommand
from extjobs.nodes.embedded import HOST_KEY_PATH, load_or_create_host_key, serve_embedded_node
from extjobs.nodes.ssh import SSHRunner
from tests.harness import HarnessNode, make_client_key, start_embedded_nodes, start_nodes
from tests.nodes.conftest import ClientKey


@pytest.mark.spawns
def test_host_key_survives_a_restart(tmp_path: Path, client_key: ClientKey) -> None:
    with start_embedded_nodes(1, tmp_path, client_key.authorized_keys) as (node,):
        key = node.host_key
        node.restart()
        assert node.host_key == key
        node.delete_host_key()
        node.restart()
        assert node.host_key != key
    assert (node.root / HOST_KEY_PATH).stat().st_mode & 0o077 == 0


def test_host_key_is_created_once(tmp_path: Path) -> None:
    first = load_or_create_host_key(tmp_path)
    again = load_or_create_host_key(tmp_path)
    assert first.export_public_key() == again.export_public_key()


@pytest.mark.spawns
def test_process_says_listening_once_and_exits_cleanly_on_sigterm(
    tmp_path: Path, client_key: ClientKey
) -> None:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "extjobs.nodes.embedded",
            "--root",
            str(tmp_path / "root"),
            "--port",
            "0",
            "--authorized-keys",
            str(client_key.authorized_keys),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("listening ")
        assert int(line.split()[1]) > 0
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == 0, err
    assert out == ""
    assert err == ""


@pytest.mark.spawns
async def test_serve_in_process_runs_commands_in_the_root(
    tmp_path: Path, client_key: ClientKey, ssh_options: SSHOptions
) -> None:
    root = tmp_path / "root"
    async with anyio.create_task_group() as tg:
        port = await tg.start(serve_embedded_node, root, "127.0.0.1", 0, client_key.authorized_keys)
        async with SSHRunner(ssh_options) as runner:
            key = await runner.fetch_host_key("127.0.0.1", port)
            endpoint = Endpoint("inproc", "127.0.0.1", port, "root", key)
            cmd = RemoteCommand(
                ("/bin/sh", "-c", 'pwd; echo "$HOME"; echo "$EXTJOBS_NODE_ROOT"; echo $PATH'),
                env={"PATH": "/usr/bin:/bin", "HOME": "x", "EXTJOBS_NODE_ROOT": "y"},
            )
            result = await runner.run(endpoint, cmd)
            # The login shell's environment (HOME, node root) is replaced by the command's.
            assert result.stdout.splitlines() == [str(root.resolve()), "x", "y", "/usr/bin:/bin"]
            session_env = await runner.run(
                endpoint,
                RemoteCommand(("/bin/sh", "-c", "cat /proc/$PPID/environ"), env={}),
            )
            assert session_env.ok
        tg.cancel_scope.cancel()


@pytest.mark.spawns
@pytest.mark.parametrize("other_keys", ["", "stranger"])
async def test_unknown_client_key_is_refused(
    node_kind: str, tmp_path: Path, ssh_options: SSHOptions, other_keys: str
) -> None:
    keys = tmp_path / "other_keys"
    keys.write_text(make_client_key(tmp_path / "stranger")[1] + "\n" if other_keys else "")
    with start_nodes(node_kind, 1, tmp_path / "nodes", keys) as (node,):
        endpoint = node.endpoint()
        async with SSHRunner(ssh_options) as runner:
            refused = f"refused authentication as {endpoint.user}"
            with pytest.raises(NodeError, match=refused) as caught:
                await runner.run(endpoint, RemoteCommand(("/bin/true",)))
    assert not isinstance(caught.value, NodeUnreachableError)
    assert caught.value.fields["node"] == node.name


async def _echo(stream: anyio.abc.SocketStream) -> None:
    async with stream:
        async for data in stream:
            await stream.send(data.upper())


async def test_stream_local_forwarding_reaches_a_unix_socket(
    nodes: list[HarnessNode], client_key: ClientKey
) -> None:
    node = nodes[0]
    path = node.root / "qmp.sock"
    listener = await anyio.create_unix_listener(path)
    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, _echo)
        conn = await asyncssh.connect(
            node.host,
            node.port,
            username=node.endpoint().user,
            client_keys=[str(client_key.private_key)],
            known_hosts=([asyncssh.import_public_key(node.host_key)], [], []),
            config=None,
        )
        async with conn:
            reader, writer = await conn.open_unix_connection(str(path))
            writer.write(b"ping\n")
            assert await reader.readline() == b"PING\n"
            writer.close()
        tg.cancel_scope.cancel()
