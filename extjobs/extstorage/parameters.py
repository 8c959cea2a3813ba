"""``parameters.list``: what disk parameters a provider accepts, and checking a request.

The file has one parameter per line: a name, then blanks (spaces and/or tabs), then a
free-text description that may be empty. Blank lines are ignored. Ganeti splits each
line with ``str.split(None, 1)`` and never checks the name; we check it, because the
name becomes an ``EXTP_<NAME>`` variable and a user-facing option.
"""

from __future__ import annotations

from collections.abc import Mapping

from extjobs.errors import InputError, ProviderError
from extjobs.extstorage.names import PARAM_NAME_RE, RESERVED_PARAMS, validate_param_name

__all__ = ["check_params", "parse_parameters_list"]


def parse_parameters_list(text: str, *, provider: str | None = None) -> dict[str, str]:
    """Parse the content of ``parameters.list`` into ``{name: description}``.

    Order is kept. Raises :class:`ProviderError` naming the line (``line`` is its
    1-based number, ``text`` its content) when a name is not ``^[A-Za-z0-9_]+$`` or
    appears twice; ``provider`` is only used in that error.
    """
    params: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line:
            continue
        parts = line.split(None, 1)
        name = parts[0]
        description = parts[1].strip() if len(parts) > 1 else ""
        if PARAM_NAME_RE.fullmatch(name) is None:
            raise ProviderError(
                f"parameters.list line {number}: invalid parameter name {name!r}"
                f" (only letters, digits and '_' are allowed): {raw!r}",
                provider=provider,
                line=number,
                text=raw,
            )
        if name in params:
            raise ProviderError(
                f"parameters.list line {number}: parameter {name!r} is declared twice",
                provider=provider,
                line=number,
                text=raw,
            )
        params[name] = description
    return params


def check_params(provider: str, params: Mapping[str, str], allowed: Mapping[str, str]) -> None:
    """Refuse disk parameters that ``provider``'s ``parameters.list`` does not declare.

    ``params`` are the parameters a user gave for one disk; ``provider`` and ``access``
    may appear there and are always allowed (they are not taken from the list).
    ``allowed`` is the parsed list. Raises :class:`InputError` (``field="params"``,
    ``unknown`` and ``allowed`` as sorted lists) naming every unknown parameter and
    listing the allowed ones; an invalid name raises as in
    :func:`~extjobs.extstorage.names.validate_param_name`.
    """
    for name in params:
        validate_param_name(name)
    unknown = sorted(name for name in params if name not in RESERVED_PARAMS and name not in allowed)
    if not unknown:
        return
    allowed_names = sorted(allowed)
    listed = ", ".join(allowed_names) if allowed_names else "none"
    noun = "parameter" if len(unknown) == 1 else "parameters"
    raise InputError(
        f"unknown {noun} {', '.join(unknown)} for ExtStorage provider {provider!r};"
        f" allowed: {listed} (plus provider, access)",
        field="params",
        provider=provider,
        unknown=unknown,
        allowed=allowed_names,
    )
