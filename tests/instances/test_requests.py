"""Pure parts: the CLI's disk and size syntax, opcode validation, config helpers."""

from __future__ import annotations

from typing import Any

import click
import pytest

from extjobs.cli.instance import disk_specs, parse_disk, parse_size
from extjobs.errors import InputError
from extjobs.model.cluster import Cluster, ClusterConfig, Disk, Instance, Node, NodeGroup
from extjobs.model.opcodes import decode_opcode, encode_opcode


@pytest.mark.parametrize(
    ("text", "mib"),
    [
        pytest.param("512", 512, id="plain-mib"),
        pytest.param("512M", 512, id="M"),
        pytest.param("2G", 2048, id="G"),
        pytest.param("2g", 2048, id="lowercase"),
        pytest.param("1T", 1024 * 1024, id="T"),
        pytest.param("1.5G", 1536, id="fraction"),
        pytest.param("1GiB", 1024, id="GiB"),
        pytest.param("0.1M", 1, id="rounded-up"),
    ],
)
def test_parse_size(text: str, mib: int) -> None:
    assert parse_size(text) == mib


@pytest.mark.parametrize("text", ["", "G", "2X", "-1G", "0", "1 2G"])
def test_parse_size_refuses(text: str) -> None:
    with pytest.raises(click.BadParameter):
        parse_size(text)


def test_parse_disk_splits_fields_and_parameters() -> None:
    index, spec = parse_disk(
        "1:size=2G,provider=rbd,pool=fast,name=data,access=userspace,dir=/a=b,x="
    )
    assert index == 1
    assert spec == {
        "size": 2048,
        "provider": "rbd",
        "pool": "fast",
        "name": "data",
        "access": "userspace",
        "params": {"dir": "/a=b", "x": ""},
    }


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param("size=1G,provider=p", "expected INDEX:", id="no-index"),
        pytest.param("a:size=1G,provider=p", "expected INDEX:", id="bad-index"),
        pytest.param("0:provider=p", "size= is required", id="no-size"),
        pytest.param("0:size=1G", "give provider= or pool=", id="no-provider"),
        pytest.param("0:size=1G,provider=p,provider=q", "provider is given twice", id="twice"),
        pytest.param("0:size=1G,provider", "is not key=value", id="no-equals"),
    ],
)
def test_parse_disk_refuses(text: str, message: str) -> None:
    with pytest.raises(click.BadParameter, match=message):
        parse_disk(text)


def test_disk_specs_orders_by_index_and_wants_no_gaps() -> None:
    specs = disk_specs(("1:size=1G,provider=b", "0:size=2G,provider=a"))
    assert [s["provider"] for s in specs] == ["a", "b"]
    with pytest.raises(click.BadParameter, match="without gaps"):
        disk_specs(("0:size=1G,provider=a", "2:size=1G,provider=a"))
    with pytest.raises(click.BadParameter, match="given twice"):
        disk_specs(("0:size=1G,provider=a", "0:size=1G,provider=a"))


def _create(**changes: Any) -> dict[str, Any]:
    op: dict[str, Any] = {
        "OP_ID": "OP_INSTANCE_CREATE",
        "instance_name": "web1",
        "pnode": "n1",
        "disks": [{"size": 1024, "provider": "rbd", "params": {"pool_name": "ssd"}}],
    }
    op.update(changes)
    return op


def test_create_opcode_round_trips() -> None:
    op = decode_opcode(_create(hypervisor="kvm", memory=128))
    assert decode_opcode(encode_opcode(op)) == op


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        pytest.param({"disks": []}, "at least one disk", id="no-disks"),
        pytest.param({"disks": [{"size": 0, "provider": "p"}]}, "size must be", id="size-0"),
        pytest.param(
            {"disks": [{"size": 1, "provider": "a/b"}]}, "invalid provider name", id="provider-path"
        ),
        pytest.param({"disks": [{"size": 1}]}, "provider= or a pool=", id="no-provider"),
        pytest.param(
            {"disks": [{"size": 1, "provider": "p", "params": {"provider": "x"}}]},
            "reserved",
            id="reserved-param",
        ),
        pytest.param(
            {"disks": [{"size": 1, "provider": "p", "params": {"a-b": "x"}}]},
            "invalid disk parameter name",
            id="param-name",
        ),
        pytest.param(
            {"disks": [{"size": 1, "provider": "p", "access": "magic"}]},
            "invalid access mode",
            id="access",
        ),
        pytest.param(
            {
                "disks": [
                    {"size": 1, "provider": "p", "name": "d"},
                    {"size": 1, "provider": "p", "name": "d"},
                ]
            },
            "disk names must be unique",
            id="same-names",
        ),
        pytest.param({"hypervisor": "xen"}, "unknown hypervisor", id="hypervisor"),
        pytest.param({"memory": 0}, "memory must be", id="memory"),
    ],
)
def test_create_opcode_refuses(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(InputError, match=message):
        decode_opcode(_create(**changes))


def test_cluster_set_params_validation() -> None:
    with pytest.raises(InputError, match="both added and removed"):
        decode_opcode(
            {"OP_ID": "OP_CLUSTER_SET_PARAMS", "add_pools": {"a": "p"}, "remove_pools": ["a"]}
        )
    with pytest.raises(InputError, match="invalid provider name"):
        decode_opcode({"OP_ID": "OP_CLUSTER_SET_PARAMS", "add_pools": {"a": "../p"}})
    with pytest.raises(InputError, match="hypervisor run directory"):
        decode_opcode({"OP_ID": "OP_CLUSTER_SET_PARAMS", "hv_run_dir": "/a,b"})


def test_disks_in_pool_by_group() -> None:
    disk = Disk(uuid="d1", index=0, size=1, provider="p", pool="fast")
    cfg = ClusterConfig(
        cluster=Cluster(name="c", pools={"fast": "p"}),
        groups={"g1": NodeGroup("g1", ("fast",)), "g2": NodeGroup("g2", ("fast",))},
        nodes={"n1": Node(name="n1", host="h", group="g1")},
        instances={"i1": Instance(name="i1", primary="n1", disks=(disk,))},
    )
    assert cfg.disks_in_pool("fast") == ["i1/disk0"]
    assert cfg.disks_in_pool("fast", "g1") == ["i1/disk0"]
    assert cfg.disks_in_pool("fast", "g2") == []
    assert cfg.instance("i1").name == "i1"
    with pytest.raises(Exception, match="unknown instance 'nope'"):
        cfg.instance("nope")
