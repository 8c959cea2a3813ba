"""Volumes and the names of the ExtStorage contract: actions, providers, parameters.

Pure data shared by every layer (the journal records which action ran on which volume;
the provider contract in :mod:`extjobs.extstorage` turns them into commands).

Everything a user or a provider hands us that ends up in a path or an environment
variable name is checked here, before any I/O. A provider name becomes a directory
name on every node, so the check is strict (``^[A-Za-z0-9_-]+$``): no ``/``, no ``..``,
no empty name. Parameter names become ``EXTP_<NAME>`` variables, so they are limited to
``^[A-Za-z0-9_]+$``.
"""

from __future__ import annotations

import enum
import re
from typing import Any

import attrs

from extjobs.errors import InputError


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
#: A provider is a directory on the nodes: its name is one file name (NAME_MAX).
MAX_PROVIDER_NAME = 255
PARAM_NAME_RE = re.compile(r"[A-Za-z0-9_]+")
METADATA_MAX_LEN = 128

_METADATA_BAD_FIRST = re.compile(r"^[^A-Za-z0-9_+.]")
_METADATA_BAD = re.compile(r"[^-A-Za-z0-9_+.]")


#: Bounds on the disk parameters that reach a provider's environment, checked before a
#: job exists: far below what one exec request and one argument can carry (the whole
#: command line is bounded again by :data:`extjobs.model.remote.MAX_COMMAND_BYTES`).
MAX_PARAMS = 32
MAX_PARAM_NAME = 64
MAX_PARAM_VALUE = 4096
MAX_PARAMS_BYTES = 16384


def check_params_bounds(params: dict[str, str], field: str = "params") -> None:
    """Raise :class:`InputError` naming the limit when ``params`` exceed a bound."""
    if len(params) > MAX_PARAMS:
        raise InputError(
            f"{len(params)} disk parameters, at most {MAX_PARAMS} are allowed", field=field
        )
    total = 0
    for name, value in params.items():
        if isinstance(name, str) and len(name) > MAX_PARAM_NAME:
            raise InputError(
                f"disk parameter name {name[:32]!r}… is {len(name)} characters long, "
                f"at most {MAX_PARAM_NAME} are allowed",
                field=field,
            )
        if isinstance(value, str):
            size = len(value.encode("utf-8", "surrogatepass"))
            if size > MAX_PARAM_VALUE:
                raise InputError(
                    f"disk parameter {name!r} is {size} bytes long, at most "
                    f"{MAX_PARAM_VALUE} are allowed",
                    field=field,
                )
            total += size + len(name)
    if total > MAX_PARAMS_BYTES:
        raise InputError(
            f"disk parameters total {total} bytes, at most {MAX_PARAMS_BYTES} are allowed",
            field=field,
        )


def validate_provider_name(name: str) -> str:
    """Return ``name`` if it is a valid provider name.

    Raises :class:`InputError` (``field="provider"``, ``value=name``) otherwise; this
    covers the empty string, ``.``/``..``, anything with ``/`` and any character outside
    ``[A-Za-z0-9_-]``, and names longer than :data:`MAX_PROVIDER_NAME`.
    """
    if not isinstance(name, str) or PROVIDER_NAME_RE.fullmatch(name) is None:
        raise InputError(
            f"invalid provider name {name!r}: only letters, digits, '_' and '-' are allowed",
            field="provider",
            value=name,
        )
    if len(name) > MAX_PROVIDER_NAME:
        raise InputError(
            f"invalid provider name {name[:32]!r}…: {len(name)} characters, at most "
            f"{MAX_PROVIDER_NAME} (it names a directory)",
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


ACCESS_MODES = ("kernelspace", "userspace")

_VOLUME_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]*\.ext\.disk[0-9]+")
_UUID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]*")


def volume_name(disk_uuid: str, index: int) -> str:
    """The provider-visible name of disk ``index`` (``<disk-uuid>.ext.disk<N>``)."""
    return f"{disk_uuid}.ext.disk{index}"


def _no_nul(field: str, value: str) -> None:
    if "\0" in value:
        raise InputError(f"{field} must not contain NUL characters", field=field)


def _check_name(_inst: Any, _attr: Any, value: str) -> None:
    if not isinstance(value, str) or _VOLUME_NAME_RE.fullmatch(value) is None:
        raise InputError(
            f"invalid volume name {value!r}: expected <disk-uuid>.ext.disk<N>",
            field="name",
            value=value,
        )


def _check_uuid(_inst: Any, _attr: Any, value: str) -> None:
    if not isinstance(value, str) or _UUID_RE.fullmatch(value) is None:
        raise InputError(f"invalid disk uuid {value!r}", field="uuid", value=value)


def _check_size(field: str, minimum: int) -> Any:
    def check(_inst: Any, _attr: Any, value: int | None) -> None:
        if value is None:
            return
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise InputError(
                f"{field} must be an integer number of MiB >= {minimum}, not {value!r}",
                field=field,
                value=value,
            )

    return check


def _check_provider(_inst: Any, _attr: Any, value: str) -> None:
    validate_provider_name(value)


def _check_access(_inst: Any, _attr: Any, value: str) -> None:
    if value not in ACCESS_MODES:
        raise InputError(
            f"invalid access mode {value!r}: expected one of {', '.join(ACCESS_MODES)}",
            field="access",
            value=value,
        )


def _check_params(_inst: Any, _attr: Any, value: dict[str, str]) -> None:
    check_params_bounds(value)
    seen: dict[str, str] = {}
    for name, param in value.items():
        validate_param_name(name)
        upper = name.upper()
        if upper.lower() in RESERVED_PARAMS:
            raise InputError(
                f"parameter {name!r} is reserved; use the volume's {upper.lower()} field",
                field="params",
                value=name,
            )
        if upper in seen:
            raise InputError(
                f"parameters {seen[upper]!r} and {name!r} both become EXTP_{upper}",
                field="params",
                value=name,
            )
        seen[upper] = name
        if not isinstance(param, str):
            raise InputError(f"parameter {name!r} must be a string", field="params", value=name)
        _no_nul(f"params.{name}", param)


def _check_text(field: str) -> Any:
    def check(_inst: Any, _attr: Any, value: str | None) -> None:
        if value is None:
            return
        if not isinstance(value, str):
            raise InputError(f"{field} must be a string", field=field)
        _no_nul(field, value)

    return check


def _copy_params(value: Any) -> dict[str, str]:
    return dict(value)


@attrs.frozen
class Volume:
    """One ``ext`` disk as its provider sees it.

    ``params`` holds the disk parameters other than ``provider`` and ``access`` (those
    are fields of their own and always exported as ``EXTP_PROVIDER``/``EXTP_ACCESS``).
    ``size`` and ``new_size`` are MiB. The optional fields only matter to the actions
    that use them (see the module's table); ``metadata`` is the raw text, sanitised when
    the ``setinfo`` command is built. Invalid values raise :class:`InputError`.
    """

    name: str = attrs.field(validator=_check_name)
    uuid: str = attrs.field(validator=_check_uuid)
    size: int = attrs.field(validator=_check_size("size", 1))
    provider: str = attrs.field(validator=_check_provider)
    params: dict[str, str] = attrs.field(
        factory=dict, converter=_copy_params, validator=_check_params
    )
    access: str = attrs.field(default="kernelspace", validator=_check_access)
    cname: str | None = attrs.field(default=None, validator=_check_text("cname"))
    metadata: str | None = attrs.field(default=None, validator=_check_text("metadata"))
    new_size: int | None = attrs.field(default=None, validator=_check_size("new_size", 1))
    open_exclusive: bool | None = None
    snapshot_name: str | None = attrs.field(default=None, validator=_check_text("snapshot_name"))
    snapshot_size: int | None = attrs.field(default=None, validator=_check_size("snapshot_size", 1))
