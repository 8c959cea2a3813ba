"""Running the daemon's main coroutine on the event loop it serves best with.

The daemon spends most of its CPU in the event loop itself: sockets, SSH packets, HTTP
requests. uvloop (libuv, in C) does that work in less time than asyncio's own loop, so
the daemon runs on it when it is installed (it is a dependency on Linux).
``EXTJOBS_EVENT_LOOP=asyncio`` picks the standard loop instead, for a comparison or to
rule the loop out when chasing a problem; any other value than ``asyncio`` or
``uvloop`` is refused. Programs the daemon starts do not go through the loop's own
subprocess support (see :mod:`extjobs.nodes.pipes`). The embedded node stays on
asyncio's loop (see :mod:`extjobs.nodes.embedded`).
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Awaitable, Callable
from typing import TypeVar, TypeVarTuple

import anyio

from extjobs.errors import ConfigError

__all__ = ["EVENT_LOOP_ENV", "event_loop", "run"]

EVENT_LOOP_ENV = "EXTJOBS_EVENT_LOOP"

T = TypeVar("T")
Ts = TypeVarTuple("Ts")


def event_loop() -> str:
    """``"uvloop"`` or ``"asyncio"``: what :func:`run` uses here.

    Raises :class:`ConfigError` for an unknown ``EXTJOBS_EVENT_LOOP`` and when uvloop is
    asked for by name but not installed.
    """
    wanted = os.environ.get(EVENT_LOOP_ENV, "")
    if wanted not in ("", "uvloop", "asyncio"):
        raise ConfigError(f"{EVENT_LOOP_ENV}={wanted!r}: use 'uvloop' or 'asyncio'")
    installed = importlib.util.find_spec("uvloop") is not None
    if wanted == "uvloop" and not installed:
        raise ConfigError(f"{EVENT_LOOP_ENV}=uvloop, but uvloop is not installed")
    if wanted == "asyncio" or not installed:
        return "asyncio"
    return "uvloop"


def run(func: Callable[[*Ts], Awaitable[T]], *args: *Ts) -> T:
    """``anyio.run(func, *args)`` on the loop :func:`event_loop` names."""
    use_uvloop = event_loop() == "uvloop"
    return anyio.run(func, *args, backend="asyncio", backend_options={"use_uvloop": use_uvloop})
