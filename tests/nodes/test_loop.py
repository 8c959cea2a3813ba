"""The event loop the daemon and the embedded node run on (extjobs/nodes/loop.py)."""

from __future__ import annotations

import asyncio

import pytest

from extjobs.errors import ConfigError
from extjobs.nodes import loop


async def _loop_module(add: int) -> tuple[str, int]:
    await asyncio.sleep(0)
    return type(asyncio.get_running_loop()).__module__, add + 1


def test_uvloop_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(loop.EVENT_LOOP_ENV, raising=False)
    assert loop.event_loop() == "uvloop"
    module, answer = loop.run(_loop_module, 41)
    assert module.startswith("uvloop")
    assert answer == 42


def test_the_standard_loop_on_request(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(loop.EVENT_LOOP_ENV, "asyncio")
    assert loop.event_loop() == "asyncio"
    module, _ = loop.run(_loop_module, 0)
    assert module.startswith("asyncio")


def test_an_unknown_loop_is_refused_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(loop.EVENT_LOOP_ENV, "trio")
    with pytest.raises(ConfigError, match="EXTJOBS_EVENT_LOOP='trio'"):
        loop.run(_loop_module, 0)
