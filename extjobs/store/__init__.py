"""Durable state behind one port (:class:`~extjobs.store.base.Store`): SQLite, memory."""
