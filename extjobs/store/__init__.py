"""Durable state behind one port (:class:`~extjobs.store.base.Store`): SQLite,
PostgreSQL, memory; :func:`open_store` opens the one the configuration names."""

from __future__ import annotations

from extjobs.model.config import Config
from extjobs.store.base import Store


def open_store(config: Config) -> Store:
    """The store of ``config``: PostgreSQL when ``[store] url`` is set, else SQLite at
    ``config.db_path`` (the state directory must exist).

    Raises :class:`~extjobs.errors.StoreError` when it cannot be opened: a PostgreSQL
    URL that is malformed, a server that cannot be reached or refuses the login (the
    error names ``store.url`` and never the password), a schema newer than this code.
    """
    if config.store.is_postgres:
        # Imported here: psycopg is loaded only by masters that use it.
        from extjobs.store.postgres import PostgresStore

        return PostgresStore(config.store.url)
    from extjobs.store.sqlite import SqliteStore

    return SqliteStore(config.db_path)
