"""(volume, action) → the exact command and environment a provider script gets.

This is the byte-compatibility point with Ganeti's ``ext`` disk template: a provider
written for Ganeti sees the same variables with the same values. ``build_command`` is
pure; the node layer runs the :class:`RemoteCommand` it returns with ``env -i`` so that
nothing else leaks in.

Which variables each action gets (``✓`` always, ``c`` only when the disk has a name)::

    variable             create remove grow attach detach setinfo verify snapshot open close
    PATH, LC_ALL=C         ✓      ✓     ✓     ✓      ✓      ✓       ✓      ✓      ✓     ✓
    VOL_NAME               ✓      ✓     ✓     ✓      ✓      ✓       ✓      ✓      ✓     ✓
    VOL_UUID               ✓      ✓     ✓     ✓      ✓      ✓       ✓      ✓      ✓     ✓
    VOL_CNAME              c      c     c     c      c      c       c      c      c     c
    EXTP_<PARAM>           ✓      ✓     ✓     ✓      ✓      ✓       ✓      ✓      ✓     ✓
    VOL_SIZE               ✓            ✓ (current size)
    VOL_NEW_SIZE                        ✓
    VOL_METADATA                                            ✓
    VOL_SNAPSHOT_NAME                                                      ✓
    VOL_SNAPSHOT_SIZE                                                      ✓
    VOL_OPEN_EXCLUSIVE                                                            ✓

``EXTP_<PARAM>`` covers every disk parameter upper-cased, always including
``EXTP_PROVIDER`` and ``EXTP_ACCESS``. Where this follows Ganeti (``_ExtStorageAction``
and ``_ExtStorageEnvironment`` in ``lib/storage/extstorage.py``):

- ``VOL_SIZE`` only for ``create`` and ``grow`` (the other actions are called without a
  size there), ``VOL_NEW_SIZE`` only for ``grow``, ``VOL_METADATA`` only for ``setinfo``
  (sanitised by :func:`~extjobs.extstorage.names.sanitize_metadata`),
  ``VOL_OPEN_EXCLUSIVE`` only for ``open``, spelt ``True``/``False`` (Python's
  ``str(bool)``), defaulting to ``True`` as Ganeti's ``Open(exclusive=True)`` does.
- ``snapshot``: ``VOL_SNAPSHOT_NAME`` defaults to ``<VOL_NAME>.snap`` and
  ``VOL_SNAPSHOT_SIZE`` to the volume size, as in Ganeti's ``Snapshot``.

One deliberate difference: Ganeti's ``Snapshot`` forgets ``VOL_UUID`` and ``VOL_CNAME``;
we pass them to every action, as the interface manual describes them (an extra variable
cannot break a provider).
"""

from __future__ import annotations

import posixpath

from extjobs.errors import InputError
from extjobs.model.remote import RemoteCommand
from extjobs.model.volume import ACCESS_MODES, Action, Volume, sanitize_metadata, volume_name

__all__ = ["ACCESS_MODES", "Volume", "build_command", "volume_name"]


def _check_provider_dir(provider_dir: str, provider: str) -> str:
    if not provider_dir.startswith("/") or "\0" in provider_dir or "\n" in provider_dir:
        raise InputError(
            f"provider directory must be an absolute path, not {provider_dir!r}",
            field="provider_dir",
            value=provider_dir,
        )
    normalised = provider_dir.rstrip("/")
    if posixpath.basename(normalised) != provider:
        raise InputError(
            f"provider directory {provider_dir!r} is not named after provider {provider!r}",
            field="provider_dir",
            value=provider_dir,
            provider=provider,
        )
    return normalised


def _action_env(action: Action, volume: Volume) -> dict[str, str]:
    env: dict[str, str] = {}
    if action is Action.CREATE:
        env["VOL_SIZE"] = str(volume.size)
    elif action is Action.GROW:
        if volume.new_size is None:
            raise InputError("grow needs the volume's new size", field="new_size")
        if volume.new_size <= volume.size:
            raise InputError(
                f"grow needs a new size above the current {volume.size} MiB,"
                f" not {volume.new_size} MiB",
                field="new_size",
                value=volume.new_size,
            )
        env["VOL_SIZE"] = str(volume.size)
        env["VOL_NEW_SIZE"] = str(volume.new_size)
    elif action is Action.SETINFO:
        if volume.metadata is None:
            raise InputError("setinfo needs the volume's metadata", field="metadata")
        env["VOL_METADATA"] = sanitize_metadata(volume.metadata)
    elif action is Action.SNAPSHOT:
        snap_name = volume.snapshot_name or f"{volume.name}.snap"
        snap_size = volume.snapshot_size or volume.size
        env["VOL_SNAPSHOT_NAME"] = snap_name
        env["VOL_SNAPSHOT_SIZE"] = str(snap_size)
    elif action is Action.OPEN:
        exclusive = True if volume.open_exclusive is None else volume.open_exclusive
        env["VOL_OPEN_EXCLUSIVE"] = str(bool(exclusive))
    return env


def build_command(
    provider_dir: str, action: Action, volume: Volume, *, path_env: str, timeout: float
) -> RemoteCommand:
    """The command that runs ``action`` of ``volume``'s provider found at ``provider_dir``.

    ``provider_dir`` is the absolute directory found on the node (its last component
    must be the volume's provider). The result runs ``<provider_dir>/<action>`` with no
    arguments and no stdin, in ``provider_dir``, with exactly the environment of the
    module's table. Raises :class:`InputError` for a bad directory or ``PATH``, or when
    the action needs a field the volume lacks (``grow`` without a larger ``new_size``,
    ``setinfo`` without ``metadata``). Values are never interpreted by a shell.
    """
    action = Action(action)
    directory = _check_provider_dir(provider_dir, volume.provider)
    if not path_env or "\0" in path_env:
        raise InputError("PATH for provider scripts must be a non-empty string", field="path")
    env: dict[str, str] = {
        "PATH": path_env,
        "LC_ALL": "C",
        "VOL_NAME": volume.name,
        "VOL_UUID": volume.uuid,
    }
    if volume.cname:
        env["VOL_CNAME"] = volume.cname
    for name, value in volume.params.items():
        env[f"EXTP_{name.upper()}"] = value
    env["EXTP_PROVIDER"] = volume.provider
    env["EXTP_ACCESS"] = volume.access
    env.update(_action_env(action, volume))
    return RemoteCommand(
        argv=(f"{directory}/{action.value}",),
        env=env,
        cwd=directory,
        timeout=timeout,
    )
