"""The node and instance listings of the API, rendered per object and kept.

The configuration's objects are frozen, and a change replaces only the objects it
changes (the others are shared between the old and the new configuration). So the JSON
of a node or an instance, with what it is derived from, is rendered once and kept for
as long as the same object is in the configuration; a listing joins the kept pieces.
With a thousand nodes and four thousand instances a listing then costs a pass over the
configuration and a join, not four thousand encodings (nor, for nodes, a scan of every
instance per node). The kept pieces are the listings' size in memory, no more: what is
no longer in the configuration is dropped at the next listing.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any

from extjobs.engine.watcher import Observed, observed_age
from extjobs.model.cluster import ClusterConfig, Instance, Node


def _dumps(data: Any) -> bytes:
    # As starlette's JSONResponse renders, so that a listing reads the same either way.
    return json.dumps(data, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()


class Listings:
    """``GET /v1/nodes`` and ``GET /v1/instances`` bodies of one API application."""

    def __init__(self) -> None:
        self._nodes: dict[str, tuple[Node, tuple[str, ...], bytes]] = {}
        self._instances: dict[str, tuple[Instance, str | None, bytes]] = {}
        self._observed: dict[str, tuple[Observed, bytes]] = {}

    def nodes(self, config: ClusterConfig) -> bytes:
        """``{"nodes": [summary, …]}`` by name (see :func:`extjobs.lus.node.node_summary`)."""
        from extjobs.lus.node import node_summary

        owned: dict[str, list[str]] = {}
        for instance in config.instances.values():
            owned.setdefault(instance.primary, []).append(instance.name)
        kept: dict[str, tuple[Node, tuple[str, ...], bytes]] = {}
        for name, node in sorted(config.nodes.items()):
            names = tuple(sorted(owned.get(name, ())))
            hit = self._nodes.get(name)
            if hit is not None and hit[0] is node and hit[1] == names:
                kept[name] = hit
            else:
                piece = _dumps(node_summary(node, config, instances=names))
                kept[name] = (node, names, piece)
        self._nodes = kept
        return b'{"nodes":[' + b",".join(k[2] for k in kept.values()) + b"]}"

    def instances(
        self,
        config: ClusterConfig,
        observed: Mapping[str, Observed] | None = None,
        *,
        now: float | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> bytes:
        """``{"instances": [summary, …]}`` by name (see
        :func:`extjobs.lus.instance.instance_summary`); with ``observed`` (the watcher's
        observations by instance), each summary gets its ``observed`` view at ``now``
        (null when none); ``extra``: more top-level fields."""
        from extjobs.lus.instance import instance_summary

        kept: dict[str, tuple[Instance, str | None, bytes]] = {}
        for name, instance in sorted(config.instances.items()):
            node = config.nodes.get(instance.primary)
            group = node.group if node is not None else None
            hit = self._instances.get(name)
            if hit is not None and hit[0] is instance and hit[1] == group:
                kept[name] = hit
            else:
                kept[name] = (instance, group, _dumps(instance_summary(instance, config)))
        self._instances = kept
        pieces = [k[2] for k in kept.values()]
        if observed is not None:
            # Observations change with every watcher round, and their age with every
            # request: each is rendered once, without its age, and the age added here.
            when = time.time() if now is None else now
            views = self._views(observed)
            pieces = [
                piece[:-1] + b',"observed":' + _with_age(views.get(name), when) + b"}"
                for name, piece in zip(kept, pieces, strict=True)
            ]
        body = b'{"instances":[' + b",".join(pieces) + b"]"
        for key, value in (extra or {}).items():
            body += b"," + _dumps(key) + b":" + _dumps(value)
        return body + b"}"

    def _views(self, observed: Mapping[str, Observed]) -> dict[str, tuple[Observed, bytes]]:
        kept: dict[str, tuple[Observed, bytes]] = {}
        for name, observation in observed.items():
            hit = self._observed.get(name)
            if hit is None or hit[0] is not observation:
                view = observation.view(observation.at)
                del view["age"]
                hit = (observation, _dumps(view)[:-1])
            kept[name] = hit
        self._observed = kept
        return kept


def _with_age(view: tuple[Observed, bytes] | None, now: float) -> bytes:
    """An observation's JSON with its age at ``now`` (as :meth:`Observed.view` has it)."""
    if view is None:
        return b"null"
    observation, head = view
    return head + b',"age":' + _dumps(observed_age(observation, now)) + b"}"
