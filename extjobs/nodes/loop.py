"""Running a process's main coroutine on the event loop it serves best with.

The daemon and the embedded SSH node spend most of their CPU in the event loop itself:
sockets, SSH packets, child processes and their pipes. uvloop (libuv, in C) does that
work in a fraction of the time of asyncio's pure-Python loop, so both run on it when it
is installed (it is a dependency on Linux). ``EXTJOBS_EVENT_LOOP=asyncio`` picks the
standard loop instead, for a comparison or to rule the loop out when chasing a problem;
any other value than ``asyncio`` or ``uvloop`` is refused.
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
