"""The kept per-object pieces of the node and instance listings say what a fresh
rendering says, after every kind of change."""

from __future__ import annotations

import json
from typing import Any

import attrs

from extjobs.api.listings import Listings
from extjobs.lus.instance import instance_summary
from extjobs.lus.node import node_summary
from extjobs.model.cluster import ClusterConfig, Disk, Instance, Node, NodeGroup


def fresh(cfg: ClusterConfig) -> tuple[Any, Any]:
    nodes = {"nodes": [node_summary(n, cfg) for _, n in sorted(cfg.nodes.items())]}
    instances = {"instances": [instance_summary(i, cfg) for _, i in sorted(cfg.instances.items())]}
    return nodes, instances


def listed(listings: Listings, cfg: ClusterConfig) -> tuple[Any, Any]:
    return json.loads(listings.nodes(cfg)), json.loads(listings.instances(cfg))


def test_listings_follow_every_change() -> None:
    cfg = ClusterConfig(groups={"default": NodeGroup(name="default"), "g2": NodeGroup(name="g2")})
    for i in range(1, 4):
        cfg = cfg.with_node(Node(name=f"n{i}", host="127.0.0.1", port=2200 + i, host_key="k x"))
    for i in range(1, 7):
        disk = Disk(uuid=f"d{i}", index=0, size=16, provider="p")
        cfg = cfg.with_instance(Instance(name=f"i{i}", primary=f"n{i % 3 + 1}", disks=(disk,)))
    listings = Listings()
    assert listed(listings, cfg) == fresh(cfg)
    # An instance changed, one moved to another node, one removed, one added.
    changed = attrs.evolve(cfg.instances["i1"], admin_up=False, cleanup={"d1": "remove failed"})
    moved = attrs.evolve(cfg.instances["i2"], primary="n1")
    instances = {**cfg.instances, "i1": changed, "i2": moved}
    del instances["i3"]
    instances["i9"] = Instance(name="i9", primary="n3")
    cfg = attrs.evolve(cfg, instances=instances)
    assert listed(listings, cfg) == fresh(cfg)
    # A node moved to another group: its instances' group changes too.
    cfg = attrs.evolve(cfg, nodes={**cfg.nodes, "n1": attrs.evolve(cfg.nodes["n1"], group="g2")})
    nodes, insts = listed(listings, cfg)
    assert (nodes, insts) == fresh(cfg)
    on_n1 = {i.name for i in cfg.instances.values() if i.primary == "n1"}
    assert {i["name"] for i in insts["instances"] if i["group"] == "g2"} == on_n1
    # A node removed.
    cfg = attrs.evolve(cfg, nodes={k: v for k, v in cfg.nodes.items() if k != "n2"})
    assert listed(listings, cfg) == fresh(cfg)
