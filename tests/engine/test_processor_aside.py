"""Work an LU starts beside its own steps (``ctx.aside``): joined before the opcode
ends, stopped when the LU fails, and the LU's own error raised as it is."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from extjobs.engine.processor import _exec_with_aside
from extjobs.errors import NodeError


class _Ctx:
    aside: Any = None


class _LU:
    def __init__(self, fail: bool) -> None:
        self.fail = fail
        self.beside: list[str] = []

    async def exec(self, ctx: _Ctx) -> str:
        async def renew() -> None:
            try:
                await anyio.sleep(0.05)
                self.beside.append("done")
            except anyio.get_cancelled_exc_class():
                self.beside.append("stopped")
                raise

        ctx.aside(renew)
        if self.fail:
            raise NodeError("create failed on node1", node="node1")
        return "result"


async def test_the_opcode_ends_once_the_work_beside_it_has() -> None:
    lu, ctx = _LU(fail=False), _Ctx()
    assert await _exec_with_aside(lu, ctx) == "result"  # type: ignore[arg-type]
    assert lu.beside == ["done"]
    assert ctx.aside is None


async def test_a_failing_lu_stops_the_work_beside_it_and_its_error_is_raised_unwrapped() -> None:
    lu, ctx = _LU(fail=True), _Ctx()
    with pytest.raises(NodeError, match="create failed on node1"):
        await _exec_with_aside(lu, ctx)  # type: ignore[arg-type]
    assert lu.beside == ["stopped"]
