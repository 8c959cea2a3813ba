"""What a job listing says of each opcode (``OpCode.summary()``): the object acted on and
the change, so that ``job list`` and the dashboard need no second look."""

from __future__ import annotations

from typing import Any

import pytest

from extjobs.model.jobs import Job, OpState
from extjobs.model.opcodes import decode_opcode

DISK = {"size": 1024, "provider": "sharedfile"}


@pytest.mark.parametrize(
    ("op", "summary"),
    [
        (
            {"OP_ID": "OP_INSTANCE_MIGRATE", "instance_name": "web1", "target_node": "node2"},
            "OP_INSTANCE_MIGRATE(web1 → node2)",
        ),
        ({"OP_ID": "OP_INSTANCE_MIGRATE", "instance_name": "web1"}, "OP_INSTANCE_MIGRATE(web1)"),
        (
            {"OP_ID": "OP_INSTANCE_MIGRATE", "instance_name": "web1", "mode": "non-live"},
            "OP_INSTANCE_MIGRATE(web1, non-live)",
        ),
        (
            {"OP_ID": "OP_INSTANCE_MIGRATE", "instance_name": "web1", "cleanup": True},
            "OP_INSTANCE_MIGRATE(web1, cleanup)",
        ),
        (
            {
                "OP_ID": "OP_INSTANCE_FAILOVER",
                "instance_name": "db1",
                "target_node": "node3",
                "ignore_consistency": True,
            },
            "OP_INSTANCE_FAILOVER(db1 → node3, ignore consistency)",
        ),
        (
            {
                "OP_ID": "OP_INSTANCE_CREATE",
                "instance_name": "web1",
                "pnode": "node1",
                "disks": [DISK, DISK],
            },
            "OP_INSTANCE_CREATE(web1 on node1, 2 disk(s))",
        ),
        (
            {"OP_ID": "OP_INSTANCE_CREATE", "instance_name": "web2", "disks": [DISK]},
            "OP_INSTANCE_CREATE(web2, 1 disk(s))",
        ),
        (
            {"OP_ID": "OP_INSTANCE_GROW_DISK", "instance_name": "web1", "disk": 0, "amount": 1024},
            "OP_INSTANCE_GROW_DISK(web1/disk0 +1024 MiB)",
        ),
        (
            {
                "OP_ID": "OP_INSTANCE_GROW_DISK",
                "instance_name": "web1",
                "disk": 1,
                "amount": 4096,
                "absolute": True,
            },
            "OP_INSTANCE_GROW_DISK(web1/disk1 to 4096 MiB)",
        ),
        (
            {
                "OP_ID": "OP_NODE_SET_PARAMS",
                "node_name": "node2",
                "offline": True,
                "fence_command": [],
            },
            "OP_NODE_SET_PARAMS(node2: offline=True, no fence command)",
        ),
        (
            {"OP_ID": "OP_EXTSTORAGE_DIAGNOSE", "providers": ["sharedfile"], "nodes": ["n1"]},
            "OP_EXTSTORAGE_DIAGNOSE(sharedfile@n1)",
        ),
        (
            {
                "OP_ID": "OP_CLUSTER_SET_PARAMS",
                "add_pools": {"fast": "sharedfile"},
                "remove_pools": ["slow"],
            },
            "OP_CLUSTER_SET_PARAMS(+pool fast, -pool slow)",
        ),
        (
            {"OP_ID": "OP_GROUP_SET_PARAMS", "group_name": "rack1", "connect_pools": ["fast"]},
            "OP_GROUP_SET_PARAMS(rack1: +pool fast)",
        ),
    ],
)
def test_summaries_name_what_the_opcode_acts_on(op: dict[str, Any], summary: str) -> None:
    assert decode_opcode(op).summary() == summary


def test_a_stored_opcode_that_no_longer_decodes_is_shown_by_its_id() -> None:
    job = Job(
        id=1,
        ops=(
            OpState(0, {"OP_ID": "OP_INSTANCE_MIGRATE", "instance_name": "web1"}),
            OpState(1, {"OP_ID": "OP_GONE_SINCE", "x": 1}),
            OpState(2, {"OP_ID": "OP_INSTANCE_MIGRATE", "instance_name": "bad name"}),
        ),
    )
    assert job.summaries() == ["OP_INSTANCE_MIGRATE(web1)", "OP_GONE_SINCE", "OP_INSTANCE_MIGRATE"]
