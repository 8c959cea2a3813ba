"""A test kit shipped with extjobs: a scripted node runner and one way to start clusters.

A leaf of the layering (it may import every layer; only the CLI's demo imports it)::

    async with open_test_cluster(3, providers=("sharedfile",)) as cluster:
        cluster.runner.fail("create", node="node1", disk=1)
        job = await cluster.run(OpInstanceCreate(...))
        assert cluster.runner.labels("node1") == ["verify disk0", "create disk0", ...]

See :mod:`extjobs.testing.runner` for the runner's rules and defaults and
:mod:`extjobs.testing.cluster` for the modes (scripted, embedded nodes, a daemon).
"""

from extjobs.testing.calls import Call, Match
from extjobs.testing.cluster import TestCluster, engine_options, open_test_cluster
from extjobs.testing.engine import Engine, build_engine, open_engine
from extjobs.testing.processes import (
    ClientKey,
    DaemonProcess,
    EmbeddedNodeGroup,
    EmbeddedNodeProcess,
    ServedNode,
    make_client_key,
    start_embedded_nodes,
    write_daemon_config,
)
from extjobs.testing.runner import FakeProvider, Rule, ScriptedRunner

__all__ = [
    "Call",
    "ClientKey",
    "DaemonProcess",
    "EmbeddedNodeGroup",
    "EmbeddedNodeProcess",
    "Engine",
    "FakeProvider",
    "Match",
    "Rule",
    "ScriptedRunner",
    "ServedNode",
    "TestCluster",
    "build_engine",
    "engine_options",
    "make_client_key",
    "open_engine",
    "open_test_cluster",
    "start_embedded_nodes",
    "write_daemon_config",
]
