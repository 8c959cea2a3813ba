"""Steps: the unit of side effect an LU asks its StepContext to perform.

A :class:`Step` is one remote command on one node. What it does, in the terms recovery
needs, is its **payload**: one frozen class per :class:`StepKind` (a provider script
run on a volume, a guest started or stopped, a fence …). The payload is journalled with
the step, so that after a crash the journal alone says what was done where — with typed
fields, never a dictionary to guess from.

A step with a lasting effect (``create``, ``attach``, ``open``, a guest start) carries
its **inverse**, built with it and journalled with it: undoing after a failure, a
cancel or a crash runs the inverses, newest first, without rebuilding anything.
"""

from __future__ import annotations

import enum

import attrs

from extjobs.model.remote import Endpoint, RemoteCommand
from extjobs.model.volume import Action, Volume


class StepKind(enum.StrEnum):
    """What kind of work a journalled step is (the journal's ``kind`` column)."""

    PROVIDER = "provider"  # an ExtStorage provider script on a node
    HYPERVISOR = "hypervisor"  # a guest's start, stop or status on a node
    COMMAND = "command"  # any other command on a node (diagnose, checks, sleep …)
    HOST_KEY = "host-key"  # reading the host key a node offers (node add)
    FENCE = "fence"  # a node's fence command, run on the master
    LOCAL = "local"  # another program run on the master
    COPY = "sftp"  # a directory copied to a node
    STREAM = "stream"  # a stream to a Unix socket on a node (QMP)
    LEDGER = "ledger"  # not a step: the volume ledger kept across a purge (never run)


class HypervisorAction(enum.StrEnum):
    START = "start"  # also the receiving side of a migration: undone by a stop
    STOP = "stop"
    STATUS = "status"


@attrs.frozen
class ProviderCall:
    """A provider script run on ``volume``, disk ``disk`` of ``instance``.

    ``provider_dir`` and ``optional`` say where the provider was found on the node and
    which optional scripts it ships there, so that the step can be undone on that node
    without asking it again.
    """

    instance: str
    disk: int
    action: Action
    provider_dir: str
    volume: Volume
    optional: tuple[str, ...] = ()

    @property
    def provider(self) -> str:
        return self.volume.provider


@attrs.frozen
class HypervisorCall:
    """A hypervisor command for the guest of ``instance`` (file key ``key``)."""

    instance: str
    action: HypervisorAction
    hypervisor: str
    key: str
    run_dir: str


@attrs.frozen
class FenceRun:
    """The fence command of node ``node`` (run on the master)."""

    node: str


@attrs.frozen
class HostKeyFetch:
    """The host key offered at ``host:port`` was read (nothing is verified)."""

    host: str
    port: int


@attrs.frozen
class PlainCommand:
    """A command with no effect recovery must know about (diagnose, checks, sleep)."""


@attrs.frozen
class LocalRun:
    """A program run on the master that is not a fence command."""


@attrs.frozen
class TreeCopy:
    """A directory of the master copied to a node."""

    source: str
    destination: str


@attrs.frozen
class StreamOpen:
    """A stream to the Unix socket ``path`` on a node."""

    path: str
    timeout: float


@attrs.frozen
class VolumeMark:
    """What the journal's ledger knows about one volume (see :class:`LedgerCheckpoint`):
    per node, where its provider lives (``providers``: node, directory, optional
    scripts), where it may be attached, and where it is open and how."""

    name: str
    provider: str
    volume: Volume
    instance: str | None
    disk: int | None
    created: bool
    removed: bool
    attached: tuple[str, ...] = ()
    opened: tuple[tuple[str, str], ...] = ()
    providers: tuple[tuple[str, str, tuple[str, ...]], ...] = ()


@attrs.frozen
class LedgerCheckpoint:
    """The ledger replayed from every journal record up to id ``upto``, journalled before
    a purge deletes records it was built from; a replay starts from the newest checkpoint
    and applies only the records after ``upto`` (:mod:`extjobs.lus.ledger`)."""

    upto: int
    volumes: tuple[VolumeMark, ...] = ()


Payload = (
    ProviderCall
    | HypervisorCall
    | FenceRun
    | HostKeyFetch
    | PlainCommand
    | LocalRun
    | TreeCopy
    | StreamOpen
    | LedgerCheckpoint
)

#: The one payload class of each kind.
PAYLOAD_CLASS: dict[StepKind, type[Payload]] = {
    StepKind.PROVIDER: ProviderCall,
    StepKind.HYPERVISOR: HypervisorCall,
    StepKind.COMMAND: PlainCommand,
    StepKind.HOST_KEY: HostKeyFetch,
    StepKind.FENCE: FenceRun,
    StepKind.LOCAL: LocalRun,
    StepKind.COPY: TreeCopy,
    StepKind.STREAM: StreamOpen,
    StepKind.LEDGER: LedgerCheckpoint,
}
_KIND_OF: dict[type[Payload], StepKind] = {cls: kind for kind, cls in PAYLOAD_CLASS.items()}


def kind_of(payload: Payload) -> StepKind:
    return _KIND_OF[type(payload)]


@attrs.frozen
class MoveTag:
    """Both ends of the move (migrate, failover, cleanup) a step belongs to, journalled
    with it so that recovery after a crash knows where the instance was going."""

    op: str
    source: str
    target: str


@attrs.frozen
class Step:
    """One remote command on one node, described for the journal and the job log.

    ``check`` marks a step whose non-zero exit status is an answer, not a failure.
    ``endpoint`` is where to run it when the node is not in the configuration yet
    (node add). ``inverse`` undoes a step with a lasting effect; ``move`` is set by
    :meth:`StepContext.tagged`.
    """

    node: str
    description: str
    command: RemoteCommand
    payload: Payload = attrs.field(factory=PlainCommand)
    check: bool = False
    endpoint: Endpoint | None = None
    inverse: Step | None = None
    move: MoveTag | None = None

    @property
    def kind(self) -> StepKind:
        return kind_of(self.payload)


#: How a job submission by an opcode (``StepContext.submit_jobs``) starts its journal
#: description: a ``LocalRun`` record without a command; recovery reads it as "jobs may
#: have been submitted".
SUBMIT_JOBS = "submit jobs"
