"""The optional ``capacity`` script of a provider: how much storage there is.

Not part of Ganeti's contract; a provider without the script works as before and its
capacity is *unknown*. :func:`capacity_command` runs, in the provider directory, a
constant ``/bin/sh -c`` line that reports :data:`NO_SCRIPT` when there is no
``capacity`` file and otherwise execs ``./capacity`` with no arguments, empty stdin and
a clean environment: ``PATH``, ``LC_ALL=C``, ``EXTP_PROVIDER`` and ``EXTP_<NAME>`` for
each parameter it is asked about (a pool's defaults, or a disk's parameters) — the
same variables ``create`` would get for that pool or disk, without any ``VOL_*``.

Output (:func:`parse_capacity_output`), exit status 0::

    TOTAL FREE        line 1: whole MiB, separated by blanks, FREE <= TOTAL
    shared            optional line 2: every node of a node group sees these figures

``shared`` declares the storage shared within a node group: extjobs then asks one node
of the group instead of each. Anything else, or a non-zero exit, is an error quoted to
the operator, and the capacity counts as unknown.
"""

from __future__ import annotations

from collections.abc import Mapping

import attrs

from extjobs.errors import ProviderError
from extjobs.model.remote import DEFAULT_PATH, RemoteCommand

#: What the wrapper prints when the provider ships no ``capacity`` script.
NO_SCRIPT = "extjobs-capacity none"

CAPACITY_SCRIPT = f"[ -e ./capacity ] || {{ echo '{NO_SCRIPT}'; exit 0; }}; exec ./capacity"


@attrs.frozen
class Capacity:
    """What one ``capacity`` run reported, in MiB."""

    total: int
    free: int
    shared: bool = False


def capacity_command(
    provider_dir: str,
    provider: str,
    params: Mapping[str, str],
    *,
    timeout: float,
    path_env: str = DEFAULT_PATH,
) -> RemoteCommand:
    """The command asking ``provider`` (found at ``provider_dir``) for its capacity with
    ``params`` as ``EXTP_*``."""
    env = {"PATH": path_env, "LC_ALL": "C"}
    for name, value in params.items():
        env[f"EXTP_{name.upper()}"] = value
    env["EXTP_PROVIDER"] = provider
    return RemoteCommand(
        argv=("/bin/sh", "-c", CAPACITY_SCRIPT), env=env, cwd=provider_dir, timeout=timeout
    )


def parse_capacity_output(stdout: str, *, provider: str, node: str) -> Capacity | None:
    """The reported capacity; ``None`` when the provider has no ``capacity`` script.

    Raises :class:`ProviderError` quoting output that is not in the format above."""
    lines = [line.strip() for line in stdout.strip().splitlines()]
    if lines == [NO_SCRIPT]:
        return None
    fields = lines[0].split() if lines else []
    ok = (
        len(fields) == 2
        and all(f.isascii() and f.isdigit() for f in fields)
        and len(lines) <= 2
        and (len(lines) == 1 or lines[1] == "shared")
    )
    if not ok or int(fields[1]) > int(fields[0]):
        raise ProviderError(
            f"capacity of provider {provider} on node {node}: expected 'TOTAL FREE' in MiB "
            f"(FREE <= TOTAL) and optionally 'shared', got {stdout[:200]!r}",
            provider=provider,
            node=node,
        )
    return Capacity(total=int(fields[0]), free=int(fields[1]), shared=len(lines) == 2)
