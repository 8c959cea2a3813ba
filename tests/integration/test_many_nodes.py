"""Many embedded nodes in one process (``python -m extjobs.nodes.embedded --nodes N``,
:class:`extjobs.testing.EmbeddedNodeGroup`): each node is a server of its own — its
own port, host key and root — and a daemon runs jobs across them as it does across
nodes in processes of their own."""

from __future__ import annotations

import getpass
import shutil
import time
from pathlib import Path
from typing import Any

import pytest

from extjobs.api.client import Client
from extjobs.testing.processes import (
    DaemonProcess,
    EmbeddedNodeGroup,
    ServedNode,
    make_client_key,
    write_daemon_config,
)

pytestmark = pytest.mark.spawns

REPO = Path(__file__).resolve().parents[2]
NODES = 4


def wait(client: Client, job_id: int, timeout: float = 90.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        answer = client.wait(job_id, since=1 << 40, timeout=10)
        if answer["job"]["status"] in ("success", "error", "canceled"):
            return client.job(job_id)
    raise TimeoutError(f"job {job_id} did not end")


def run(client: Client, op: dict[str, Any]) -> dict[str, Any]:
    return wait(client, client.submit_ops([op]))


def node_add(node: ServedNode, host_key: str) -> dict[str, Any]:
    return {
        "OP_ID": "OP_NODE_ADD",
        "node_name": node.name,
        "address": node.host,
        "port": node.port,
        "user": getpass.getuser(),
        "host_key": host_key,
        "search_path": [str(node.search_path)],
    }


def test_one_process_serves_nodes_with_their_own_keys_roots_and_ports(tmp_path: Path) -> None:
    key = make_client_key(tmp_path)
    group = EmbeddedNodeGroup(
        tmp_path / "nodes", NODES, key.authorized_keys, log=tmp_path / "n.log"
    )
    nodes = group.start()
    try:
        assert [n.name for n in nodes] == [f"node{i + 1}" for i in range(NODES)]
        assert len({n.process.pid for n in nodes}) == 1
        assert len({n.port for n in nodes}) == NODES
        assert len({n.host_key for n in nodes}) == NODES
        assert [n.root for n in nodes] == [tmp_path / "nodes" / n.name for n in nodes]
        for node in nodes:
            shutil.copytree(REPO / "providers" / "sharedfile", node.search_path / "sharedfile")

        (tmp_path / "run").mkdir(mode=0o700)
        config = tmp_path / "extjobs.toml"
        socket = tmp_path / "run" / "api.sock"
        write_daemon_config(
            config, state_dir=tmp_path / "state", socket=socket, identity_file=key.private_key
        )
        daemon = DaemonProcess(config, socket, log=tmp_path / "daemon.log", cwd=REPO)
        daemon.start()
        try:
            with Client(socket) as client:
                assert (
                    run(client, {"OP_ID": "OP_CLUSTER_INIT", "cluster_name": "many"})["status"]
                    == "success"
                )
                # Each port presents its own node's key: another node's key is refused.
                wrong = run(client, node_add(nodes[1], nodes[0].host_key))
                assert wrong["status"] == "error"
                assert "host key" in str(wrong["ops"][0]["error"]).lower()
                for node in nodes:
                    job = run(client, node_add(node, node.host_key))
                    assert job["status"] == "success", job
                assert [n["name"] for n in client.nodes()] == sorted(n.name for n in nodes)

                # One job with a step on every node.
                job = run(
                    client,
                    {
                        "OP_ID": "OP_TEST_DELAY",
                        "duration": 0,
                        "on_master": False,
                        "on_nodes": [n.name for n in nodes],
                    },
                )
                assert job["status"] == "success", job
                stepped = {
                    e["data"]["node"]
                    for e in job["log"]
                    if e["type"] == "step" and isinstance(e.get("data"), dict)
                }
                assert stepped == {n.name for n in nodes}

                # Every node answers from its own root: the provider is found in each
                # node's own search path.
                job = run(client, {"OP_ID": "OP_EXTSTORAGE_DIAGNOSE", "providers": ["sharedfile"]})
                assert job["status"] == "success", job
                text = str(job["ops"][0]["result"])
                for node in nodes:
                    assert str(node.search_path / "sharedfile") in text
        finally:
            daemon.stop()
    finally:
        group.stop()
    assert group.process is None
