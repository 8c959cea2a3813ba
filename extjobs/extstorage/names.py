"""Names in the ExtStorage contract: actions, providers, parameters and volume metadata.

Everything a user or a provider hands us that ends up in a path or an environment
variable name is checked here, before any I/O. A provider name becomes a directory
name on every node, so the check is strict (``^[A-Za-z0-9_-]+$``): no ``/``, no ``..``,
no empty name. Parameter names become ``EXTP_<NAME>`` variables, so they are limited to
``^[A-Za-z0-9_]+$``.
"""

from __future__ import annotations

import enum
import re

from extjobs.errors import InputError

__all__ = [
    "METADATA_MAX_LEN",
    "OPTIONAL_ACTIONS",
    "PARAM_NAME_RE",
    "PROVIDER_NAME_RE",
    "REQUIRED_ACTIONS",
    "RESERVED_PARAMS",
    "Action",
    "sanitize_metadata",
    "validate_param_name",
    "validate_provider_name",
]


class Action(enum.StrEnum):
    """One script of a provider; the value is the script's file name."""

    CREATE = "create"
    REMOVE = "remove"
    GROW = "grow"
    ATTACH = "attach"
    DETACH = "detach"
    SETINFO = "setinfo"
    VERIFY = "verify"
    SNAPSHOT = "snapshot"
    OPEN = "open"
    CLOSE = "close"


#: Scripts every provider must ship (executable regular files).
REQUIRED_ACTIONS: tuple[Action, ...] = (
    Action.CREATE,
    Action.REMOVE,
    Action.GROW,
    Action.ATTACH,
    Action.DETACH,
    Action.SETINFO,
    Action.VERIFY,
)

#: Scripts a provider may ship; a missing one is a successful no-op.
OPTIONAL_ACTIONS: tuple[Action, ...] = (Action.SNAPSHOT, Action.OPEN, Action.CLOSE)

#: Disk parameters that are not taken from ``parameters.list`` but always exist.
RESERVED_PARAMS: frozenset[str] = frozenset({"provider", "access"})

PROVIDER_NAME_RE = re.compile(r"[A-Za-z0-9_-]+")
PARAM_NAME_RE = re.compile(r"[A-Za-z0-9_]+")
METADATA_MAX_LEN = 128

_METADATA_BAD_FIRST = re.compile(r"^[^A-Za-z0-9_+.]")
_METADATA_BAD = re.compile(r"[^-A-Za-z0-9_+.]")


def validate_provider_name(name: str) -> str:
    """Return ``name`` if it is a valid provider name.

    Raises :class:`InputError` (``field="provider"``, ``value=name``) otherwise; this
    covers the empty string, ``.``/``..``, anything with ``/`` and any character outside
    ``[A-Za-z0-9_-]``.
    """
    if not isinstance(name, str) or PROVIDER_NAME_RE.fullmatch(name) is None:
        raise InputError(
            f"invalid provider name {name!r}: only letters, digits, '_' and '-' are allowed",
            field="provider",
            value=name,
        )
    return name


def validate_param_name(name: str) -> str:
    """Return ``name`` if it is a valid disk parameter name (``^[A-Za-z0-9_]+$``).

    Raises :class:`InputError` (``field="params"``, ``value=name``) otherwise.
    """
    if not isinstance(name, str) or PARAM_NAME_RE.fullmatch(name) is None:
        raise InputError(
            f"invalid parameter name {name!r}: only letters, digits and '_' are allowed",
            field="params",
            value=name,
        )
    return name


def sanitize_metadata(text: str) -> str:
    """Make ``text`` safe for ``VOL_METADATA``, exactly as Ganeti's ``SetInfo`` does.

    Ganeti *replaces* (it does not drop) every character outside ``[-A-Za-z0-9_+.]``
    with ``_``; a leading ``-`` is replaced too, so that the value can never be taken
    for an option; then the result is cut to 128 characters. We do the same, so that a
    provider sees byte for byte what Ganeti would have given it, e.g.
    ``originstname+web 1`` becomes ``originstname+web_1``.
    """
    text = _METADATA_BAD_FIRST.sub("_", text)
    text = _METADATA_BAD.sub("_", text)
    return text[:METADATA_MAX_LEN]
