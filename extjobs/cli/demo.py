"""``extjobs demo``: the mission end to end on embedded nodes, as an operator sees it.

Everything lives in a temporary directory: three embedded SSH nodes (real SSH servers
running commands locally, each in its own root), a daemon, and a client key, started by
the test kit (:func:`extjobs.testing.cluster.open_test_cluster`) as the tests start them. The demo
drives the daemon with the same ``extjobs`` commands an operator would type and prints
them with their output. Works as a non-root user.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import anyio
import anyio.to_thread
from rich.console import Console

from extjobs.testing.cluster import TestCluster, open_test_cluster
from extjobs.testing.processes import ClientKey, write_daemon_config

console = Console(highlight=False)

NODES = ("node1", "node2", "node3")

#: The demo's "power off": the nodes share this machine, so fencing node N kills its
#: guests and drops its open markers on the shared storage, as a power-off would.
FENCE_SCRIPT = r"""#!/bin/sh
base=$1
for f in "$base/nodes/$EXTJOBS_NODE/run/extjobs/$EXTJOBS_NODE"/*.pid; do
  [ -e "$f" ] || continue
  kill -s KILL -- "-$(cat "$f")" 2>/dev/null
  rm -f -- "$f"
done
find "$base/shared-storage" -path "*.open/$EXTJOBS_NODE.*" -delete
echo "node $EXTJOBS_NODE powered off"
"""


def providers_dir() -> Path:
    here = Path(__file__).resolve().parents[2] / "providers"
    if not here.is_dir():
        raise SystemExit(f"the shipped providers are not found at {here}")
    return here


class Operator:
    def __init__(self, socket: Path) -> None:
        self.env = {**os.environ, "EXTJOBS_SOCKET": str(socket), "COLUMNS": "140"}
        self.failures = 0

    def run(self, *args: str, stdin: str | None = None, expect: int = 0) -> str:
        console.print(f"\n[bold cyan]$ extjobs {' '.join(args)}[/bold cyan]")
        proc = subprocess.run(
            [sys.executable, "-m", "extjobs", *args],
            env=self.env,
            input=stdin,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=300,
            check=False,
        )
        sys.stdout.write(proc.stdout)
        sys.stdout.flush()
        if proc.returncode != expect:
            console.print(f"[red]exit status {proc.returncode}, expected {expect}[/red]")
            self.failures += 1
        return proc.stdout


def _release(base: Path) -> None:
    """Stop guests and loop devices the demo may have left (after a failure)."""
    for pidfile in base.glob("nodes/*/run/extjobs/*/*.pid"):
        text = pidfile.read_text().strip()
        if text.isdigit():
            with contextlib.suppress(OSError):
                os.killpg(int(text), signal.SIGKILL)
    if os.geteuid() == 0 and shutil.which("losetup"):
        for image in base.glob("shared-storage/*.img"):
            out = subprocess.run(
                ["losetup", "-n", "-O", "NAME", "-j", str(image)],
                capture_output=True,
                text=True,
                check=False,
            ).stdout
            for dev in out.split():
                subprocess.run(["losetup", "-d", dev], check=False)


def run_demo(*, keep: bool = False, dashboard_port: int = 0, stay: bool = False) -> int:
    base = Path(tempfile.mkdtemp(prefix="extjobs-demo-"))
    try:
        return anyio.run(_demo, base, dashboard_port or _free_port(), stay)
    except KeyboardInterrupt:
        return 0
    finally:
        _release(base)
        if keep:
            console.print(f"kept {base}")
        else:
            shutil.rmtree(base, ignore_errors=True)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _demo(base: Path, dashboard_port: int, stay: bool) -> int:
    provider = "sharedfile"
    # Block devices need root: as root the first disk comes from loop devices.
    block = "loopfile" if os.geteuid() == 0 and shutil.which("losetup") else None
    shared = base / "shared-storage"
    shared.mkdir()
    # The third node gets a broken copy: one script lost its execute bit.
    broken = base / "nodes" / NODES[2] / "srv" / "extjobs" / "extstorage" / provider / "attach"

    def break_node3(name: str, root: Path) -> None:
        if name == NODES[2]:
            broken.chmod(0o644)

    async with open_test_cluster(
        NODES,
        mode="daemon",
        base=base,
        providers=[providers_dir() / p for p in filter(None, (provider, block))],
        prepare=break_node3,
        node_logs=False,
        daemon_log_level="warning",
        daemon_config=functools.partial(_daemon_config, dashboard_port),
    ) as cluster:
        assert cluster.daemon is not None
        console.print(
            f"[bold]Embedded nodes[/bold] in {base / 'nodes'}: "
            + ", ".join(f"{n.name} on 127.0.0.1:{n.port}" for n in cluster.nodes)
        )
        console.print(f"node3's copy of {provider} is broken: {broken.name} is not executable")
        console.print(f"[bold]Daemon[/bold] serving the API on {cluster.daemon.socket}")
        console.print(
            f"[bold]Dashboard[/bold] on http://127.0.0.1:{dashboard_port}/ui/ "
            "(this machine only, no token: the demo has no TCP listener)"
        )
        status = await anyio.to_thread.run_sync(_mission, cluster, base, provider, block, shared)
        if stay:
            console.print(
                f"\nThe cluster stays up: http://127.0.0.1:{dashboard_port}/ui/ "
                f"(EXTJOBS_SOCKET={cluster.daemon.socket}); Ctrl-C ends the demo."
            )
            await anyio.sleep_forever()
        return status


def _daemon_config(dashboard_port: int, base: Path, key: ClientKey) -> Path:
    """The daemon's configuration: the test kit's, plus the plain-HTTP dashboard."""
    path = base / "extjobs.toml"
    write_daemon_config(
        path,
        state_dir=base / "state",
        socket=base / "run" / "api.sock",
        identity_file=key.private_key,
        extra=f'[dashboard]\nlisten = "127.0.0.1:{dashboard_port}"\n',
    )
    return path


def _mission(
    cluster: TestCluster, base: Path, provider: str, block: str | None, shared: Path
) -> int:
    """What the operator types, in order; the exit status of the demo."""
    assert cluster.daemon is not None
    ports = {n.name: n.port for n in cluster.nodes}
    socket = cluster.daemon.socket
    op = Operator(socket)
    op.run("cluster", "init", "demo")
    for name in NODES:
        search = base / "nodes" / name / "srv" / "extjobs" / "extstorage"
        op.run(
            "node",
            "add",
            name,
            "--address",
            "127.0.0.1",
            "--port",
            str(ports[name]),
            "--user",
            os.environ.get("USER") or "root",
            "--accept-new-host-key",
            "--search-path",
            str(search),
        )
    op.run("node", "list")
    op.run("storage", "diagnose")
    job_file = json.dumps(
        [
            {
                "OP_ID": "OP_TEST_DELAY",
                "duration": 0.2,
                "on_master": False,
                "on_nodes": list(NODES),
            },
            {"OP_ID": "OP_TEST_DELAY", "duration": 0.1},
        ]
    )
    job_id = op.run("submit", "-", stdin=job_file).strip()
    op.run("job", "watch", job_id)
    op.run("job", "info", job_id)
    op.run("job", "list")

    console.print("\n[bold]Repairing node3's copy of the provider[/bold]")
    op.run("storage", "install", str(providers_dir() / provider), "--node", "node3")
    op.run("storage", "info", provider)

    console.print("\n[bold]Instances on external storage[/bold]")
    first = block or provider
    vols = f"dir={shared}"
    op.run("cluster", "modify", "--add-pool", "shared", provider)
    op.run("group", "modify", "default", "--connect-pool", "shared")
    op.run(
        "instance",
        "add",
        "web1",
        "-n",
        "node1",
        "--disk",
        f"0:size=64M,provider={first},{vols}",
        "--disk",
        f"1:size=32M,pool=shared,{vols},name=data",
    )
    op.run(
        "instance",
        "add",
        "db1",
        "-n",
        "node2",
        "--disk",
        f"0:size=32M,provider={provider},{vols}",
    )
    op.run(
        "instance",
        "add",
        "bad1",
        "-n",
        "node3",
        "--disk",
        f"0:size=32M,provider={provider},{vols},colour=blue",
        expect=1,
    )
    op.run("instance", "list")
    op.run("instance", "info", "web1")
    op.run("instance", "grow-disk", "web1", "0", "32M")
    op.run("instance", "grow-disk", "web1", "0", "16M", "--absolute", expect=1)
    op.run("instance", "shutdown", "db1")
    op.run("instance", "startup", "db1")
    op.run("cluster", "modify", "--remove-pool", "shared", expect=1)
    op.run("verify")

    console.print("\n[bold]Live migration, a node failure, failover[/bold]")
    op.run("instance", "migrate", "web1", "-n", "node2")
    op.run("instance", "list")
    fence = base / "fence.sh"
    fence.write_text(FENCE_SCRIPT)
    fence.chmod(0o755)
    op.run("node", "modify", "node2", "--fence-command", f"{fence} {base}")
    console.print("\n[bold]node2's SSH server stops[/bold] (its guests keep running)")
    cluster.node("node2").stop()
    op.run("instance", "failover", "web1", expect=1)
    op.run("instance", "failover", "web1", "--ignore-consistency")
    op.run("node", "modify", "node2", "--offline", "yes")
    op.run("instance", "failover", "db1")
    op.run("instance", "list")
    op.run("node", "list")
    op.run("verify")
    op.run("instance", "remove", "db1")
    op.run("instance", "remove", "web1")
    op.run("instance", "list")
    if op.failures:
        console.print(f"\n[red]demo finished with {op.failures} unexpected result(s)[/red]")
        return 1
    console.print("\n[green]demo finished[/green]")
    return 0
