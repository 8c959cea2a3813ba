"""The ExtStorage provider contract (Ganeti's ``ext`` disk template), as pure translation.

Nothing here does I/O: it turns a volume and an action into a :class:`RemoteCommand`,
parses what providers print, and checks names and parameters. Only ``extjobs.model`` and
``extjobs.errors`` are imported.

- :mod:`.names` — actions, provider/parameter name checks, metadata sanitising
- :mod:`.env` — :class:`~.env.Volume` and :func:`~.env.build_command` (the env table)
- :mod:`.parameters` — ``parameters.list`` parsing and checking a disk's parameters
- :mod:`.attach` — ``attach`` output and the on-node block device check
- :mod:`.diagnose` — finding/checking providers on a node, per-group summary
"""
