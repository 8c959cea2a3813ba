"""The authoritative in-memory cluster configuration, persisted on every change."""

from __future__ import annotations

from collections.abc import Callable

import attrs

from extjobs.engine.writer import SyncWriter, Writer
from extjobs.model.cluster import ClusterConfig
from extjobs.store.base import Store, WriteBatch


class ConfigManager:
    """Holds the current :class:`ClusterConfig`; ``update`` is synchronous and atomic.

    Like the job book (:mod:`extjobs.engine.book`) it has two views: :attr:`current`,
    what the engine decided, and :attr:`shown`, what the store holds (the API's), which
    differ only while a write is in flight through a group writer."""

    def __init__(self, store: Store, writer: Writer | None = None) -> None:
        self._writer: Writer = writer or SyncWriter(store)
        self._config = store.load_config()
        self._shown = self._config

    @property
    def current(self) -> ClusterConfig:
        return self._config

    @property
    def shown(self) -> ClusterConfig:
        return self._shown

    def update(self, change: Callable[[ClusterConfig], ClusterConfig]) -> ClusterConfig:
        """Apply ``change`` to the latest config, write the difference, return the result.

        No await happens between reading and writing, so concurrent LUs each apply
        their change to the other's result (no lost updates).
        """
        old = self._config
        new = change(old)
        if new == old:
            return old
        new = attrs.evolve(new, serial=old.serial + 1)
        self._writer.write(WriteBatch(config=(old, new)), lambda: self._show(new))
        self._config = new
        return new

    def _show(self, config: ClusterConfig) -> None:
        self._shown = config
