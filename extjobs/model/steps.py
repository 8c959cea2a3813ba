"""Steps: the unit of side effect an LU asks its StepContext to perform."""

from __future__ import annotations

from typing import Any

import attrs

from extjobs.model.remote import CommandResult, RemoteCommand


@attrs.frozen
class Step:
    """One remote command on one node, described for the journal and the job log.

    ``kind`` is ``provider`` (an ExtStorage script), ``hypervisor`` or ``command``;
    ``data`` holds what recovery needs to know (provider, action, volume, instance …).
    ``check`` marks a step whose non-zero exit status is an answer, not a failure.
    """

    node: str
    kind: str
    description: str
    command: RemoteCommand
    data: dict[str, Any] = attrs.field(factory=dict)
    check: bool = False


@attrs.frozen
class StepOutcome:
    step: Step
    result: CommandResult
