"""The kept per-object pieces of the node and instance listings say what a fresh
rendering says, after every kind of change."""

from __future__ import annotations

import json
from typing import Any

import attrs

from extjobs.api.listings import Listings
from extjobs.engine.watcher import Observed
from extjobs.lus.instance import instance_summary
from extjobs.lus.node import node_summary
from extjobs.model.cluster import ClusterConfig, Disk, Instance, Node, NodeGroup
from extjobs.model.watcher import ObservedState


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


def test_observations_in_the_listing_read_as_their_views_at_the_time_asked() -> None:
    cfg = ClusterConfig(groups={"default": NodeGroup(name="default")})
    cfg = cfg.with_node(Node(name="n1", host="127.0.0.1", port=2201, host_key="k x"))
    for i in range(1, 4):
        cfg = cfg.with_instance(Instance(name=f"i{i}", primary="n1"))
    running = Observed(ObservedState.RUNNING, at=1000.0, running_on=("n1",), attached_on=("n1",))
    down = Observed(ObservedState.ERROR_DOWN, at=1000.5, message='backing off "30 s"')
    observed = {"i1": running, "i2": down}
    listings = Listings()

    def views(now: float) -> dict[str, Any]:
        body = json.loads(listings.instances(cfg, observed, now=now, extra={"refreshed": None}))
        assert body["refreshed"] is None
        return {i["name"]: i["observed"] for i in body["instances"]}

    assert views(1012.3456) == {
        "i1": running.view(1012.3456),
        "i2": down.view(1012.3456),
        "i3": None,
    }
    # The kept renderings give the age at the new time, and follow a new observation.
    observed["i2"] = up = attrs.evolve(down, state=ObservedState.RUNNING, message=None)
    assert views(1070.0) == {"i1": running.view(1070.0), "i2": up.view(1070.0), "i3": None}
    assert views(999.0)["i1"]["age"] == 0.0  # a clock that went back shows no negative age
