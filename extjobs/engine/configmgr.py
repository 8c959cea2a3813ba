"""The authoritative in-memory cluster configuration, persisted on every change."""

from __future__ import annotations

from collections.abc import Callable

import attrs

from extjobs.model.cluster import ClusterConfig
from extjobs.store.base import Store


class ConfigManager:
    """Holds the current :class:`ClusterConfig`; ``update`` is synchronous and atomic."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._config = store.load_config()

    @property
    def current(self) -> ClusterConfig:
        return self._config

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
        self._store.save_config(old, new)
        self._config = new
        return new
