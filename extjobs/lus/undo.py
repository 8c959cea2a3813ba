"""Undo: a stack of inverse steps, run newest first.

Every step with a lasting effect (create → remove, attach → detach, open → close, a
guest start → stop) carries its inverse (:attr:`Step.inverse`, built with it). Before
such a step runs, its inverse is pushed here: a step that failed half-way may still have
left something behind (a provider that created the volume and then exited 1), so the
inverse is pushed *before* the step runs; every inverse is idempotent. Undo pops in
reverse order and keeps going past failures, reporting each one.

After a crash the same stack is rebuilt from the journal
(:meth:`extjobs.lus.journal.Journal.undo_log`).
"""

from __future__ import annotations

from collections.abc import Iterable

from extjobs.errors import ExtJobsError
from extjobs.lus.base import StepContext
from extjobs.model.jobs import LogKind
from extjobs.model.steps import HypervisorCall, ProviderCall, Step
from extjobs.model.volume import Action

_PAST = {Action.REMOVE: "removed", Action.DETACH: "detached", Action.CLOSE: "closed"}


def undone_text(step: Step) -> str:
    """What running the inverse ``step`` undid, for the job log."""
    payload = step.payload
    if isinstance(payload, ProviderCall):
        past = _PAST.get(payload.action, f"ran {payload.action.value} of")
        return (
            f"{past} disk{payload.disk} ({payload.volume.name}, {payload.provider}) on {step.node}"
        )
    if isinstance(payload, HypervisorCall):
        return f"stopped {payload.hypervisor} guest of {payload.instance} on {step.node}"
    return f"{step.description} on {step.node}"


class UndoLog:
    """Inverse steps, most recent last; see the module docstring."""

    def __init__(self, inverses: Iterable[Step] = ()) -> None:
        self._stack = list(inverses)

    def __bool__(self) -> bool:
        return bool(self._stack)

    def __len__(self) -> int:
        return len(self._stack)

    @property
    def steps(self) -> tuple[Step, ...]:
        """The inverse steps, oldest first (run in the reverse order)."""
        return tuple(self._stack)

    def note(self, step: Step) -> None:
        """Push ``step``'s inverse, if it has one (call before running ``step``)."""
        if step.inverse is not None:
            self._stack.append(step.inverse)

    async def run(self, ctx: StepContext) -> list[str]:
        """Run every inverse, newest first; return what could not be undone."""
        failures = []
        while self._stack:
            step = self._stack.pop()
            try:
                await ctx.run(step)
            except ExtJobsError as exc:
                failed = f"{step.description} on {step.node} failed: {exc.message}"
                failures.append(failed)
                ctx.log(f"undo incomplete: {failed}", kind=LogKind.WARNING)
            else:
                ctx.log(f"undone: {undone_text(step)}", kind=LogKind.UNDO)
        return failures
