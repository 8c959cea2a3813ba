"""The daemon's Prometheus metrics: one registry per daemon, fed cheaply from the engine.

Theory of operation
-------------------
Two kinds of numbers, kept apart so that the queue's hot path (about 1,000 jobs/s) pays
almost nothing:

* **Events** that only the moment they happen can tell -- a job submitted or finished,
  how long it waited before it ran, how long a step took, a step that failed, timed out
  or was killed, a lock wait, an SSH connect and its outcome -- are counted as they
  happen: a dictionary look-up and an addition each (``prometheus_client`` children are
  cached per label set here, so no label parsing on the hot path).
* **States** -- how many jobs are in each status, the queue depth, the jobs waiting for
  locks, the SSH connections open, whether a node answers, leadership -- are computed
  when Prometheus scrapes, by :class:`_StateCollector`, from the job book, the lock
  manager and the runner of the queue currently running. Nothing is updated per event
  for them.

Labels stay bounded: opcodes (the registered ``OP_ID`` set), job and step statuses,
providers, provider and hypervisor actions, and nodes. Never a job id, an instance or
a volume name. Per-node SSH series are exported only for nodes in the cluster
configuration (a removed node's series disappear).

Each daemon builds its own :class:`Metrics` (and so its own
:class:`~prometheus_client.CollectorRegistry`): several daemons in one process -- the
tests do that -- never share a number.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import attrs
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from extjobs.errors import CommandTimeoutError, ExtJobsError, NodeError, NodeUnreachableError
from extjobs.model.jobs import Job, OpState
from extjobs.model.opcodes import OPCODES
from extjobs.model.states import JobStatus, OpStatus
from extjobs.model.steps import HypervisorCall, Payload, ProviderCall, kind_of

if TYPE_CHECKING:
    from extjobs.engine.leadership import Leadership
    from extjobs.engine.queue import JobQueue

#: Seconds from submission to the first opcode running.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
#: Seconds a job or an opcode ran.
DURATION_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
#: Seconds one step (a provider script, a hypervisor command …) took.
STEP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
#: Seconds an opcode waited for its locks.
LOCK_BUCKETS = (0.0001, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900)

#: The opcode label of an ``OP_ID`` that is not registered (never expected: submissions
#: are decoded against the registry), so that no input can add label values.
OTHER = "other"


def opcode_label(op_id: str) -> str:
    return op_id if op_id in OPCODES else OTHER


def job_opcode(job: Job) -> str:
    """The opcode label of a job: its first opcode (most jobs have one)."""
    return opcode_label(job.ops[0].op_id) if job.ops else OTHER


def step_labels(payload: Payload) -> tuple[str, str, str]:
    """``(kind, provider, action)`` of a step: a provider script's provider and action, a
    hypervisor command's hypervisor and action, else empty provider and action."""
    if isinstance(payload, ProviderCall):
        return "provider", payload.provider, payload.action.value
    if isinstance(payload, HypervisorCall):
        return "hypervisor", payload.hypervisor, payload.action.value
    return kind_of(payload).value, "", ""


@attrs.define
class NodeSeen:
    """What the runner's outcomes say about one node (see :meth:`Metrics.connect_outcome`)."""

    connects: int = 0
    connect_failures: int = 0
    #: Whether the node answered last time it was asked (None: never asked).
    reachable: bool | None = None
    #: Unix time of the last answer (a connection opened, or a command's exit status).
    last_seen: float | None = None


class Metrics:
    """The metrics of one daemon (see the module docstring).

    ``registry`` is what ``GET /metrics`` exposes. The engine reports events through the
    methods below; :meth:`watch` names where the scrape-time numbers come from.
    """

    def __init__(self, *, process: bool = True) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        registry = self.registry
        if process:
            ProcessCollector(registry=registry)
            PlatformCollector(registry=registry)
        self._submitted = Counter(
            "extjobs_jobs_submitted",
            "Jobs submitted (or adopted from another master).",
            registry=registry,
        )
        self._finished = Counter(
            "extjobs_jobs_finished",
            "Jobs that ended, by final status and first opcode.",
            ["status", "opcode"],
            registry=registry,
        )
        self._latency = Histogram(
            "extjobs_job_start_latency_seconds",
            "Seconds from a job's submission to its first opcode running.",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self._job_duration = Histogram(
            "extjobs_job_duration_seconds",
            "Seconds from a job starting to run to its end, by first opcode and final status.",
            ["opcode", "status"],
            buckets=DURATION_BUCKETS,
            registry=registry,
        )
        self._op_duration = Histogram(
            "extjobs_opcode_duration_seconds",
            "Seconds one opcode ran (running to its end), by opcode and final status.",
            ["opcode", "status"],
            buckets=DURATION_BUCKETS,
            registry=registry,
        )
        step_keys = ["kind", "provider", "action"]
        self._step_duration = Histogram(
            "extjobs_step_duration_seconds",
            "Seconds one journalled step took, by kind, provider, action and node.",
            [*step_keys, "node"],
            buckets=STEP_BUCKETS,
            registry=registry,
        )
        self._step_failures = Counter(
            "extjobs_step_failures",
            "Steps that failed (non-zero exit, an error, a timeout or a cancel).",
            step_keys,
            registry=registry,
        )
        self._step_timeouts = Counter(
            "extjobs_step_timeouts",
            "Steps that ran over their timeout (their process group was killed).",
            step_keys,
            registry=registry,
        )
        self._step_kills = Counter(
            "extjobs_step_kills",
            "Remote or local commands killed by extjobs (timeout or job cancel).",
            step_keys,
            registry=registry,
        )
        self._lock_wait = Histogram(
            "extjobs_lock_wait_seconds",
            "Seconds an opcode waited for its locks, by opcode.",
            ["opcode"],
            buckets=LOCK_BUCKETS,
            registry=registry,
        )
        self._children: dict[tuple[Any, ...], Any] = {}
        self.nodes: dict[str, NodeSeen] = {}
        self._queue: Callable[[], JobQueue | None] = lambda: None
        self._leadership: Leadership | None = None
        registry.register(_StateCollector(self))

    def watch(
        self,
        queue: Callable[[], JobQueue | None],
        leadership: Leadership | None = None,
    ) -> None:
        """Where scrape-time numbers come from: ``queue()`` is the queue running now
        (None on a master that does not lead), ``leadership`` this master's election
        (None with one master)."""
        self._queue = queue
        self._leadership = leadership

    def _child(self, metric: Any, *labels: str) -> Any:
        key = (id(metric), *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    # -- events from the job book ------------------------------------------------------

    def jobs_submitted(self, count: int) -> None:
        self._submitted.inc(count)

    def op_changed(self, old: OpState, job: Job, now: float) -> None:
        """Opcode ``old`` of ``job`` (as it is after the change) moved; called by the book
        on every status change, so it stays to a few comparisons."""
        op = job.ops[old.index]
        if op.status is OpStatus.RUNNING and job.started == now:
            self._latency.observe(max(0.0, now - job.received))
        if op.status.finalized and not old.status.finalized:
            if op.started is not None and op.ended is not None:
                opcode = opcode_label(op.op_id)
                self._child(self._op_duration, opcode, op.status.value).observe(
                    max(0.0, op.ended - op.started)
                )
            status = job.status
            if status.finalized and job.ended == now:
                opcode = job_opcode(job)
                self._child(self._finished, status.value, opcode).inc()
                if job.started is not None:
                    self._child(self._job_duration, opcode, status.value).observe(
                        max(0.0, now - job.started)
                    )

    # -- events from steps and locks ---------------------------------------------------

    def step_ended(
        self,
        payload: Payload,
        node: str,
        started: float,
        *,
        failed: bool = True,
        error: BaseException | None = None,
        kills: bool = False,
    ) -> None:
        """One journalled step that began at ``started`` (monotonic clock) ended:
        ``failed`` (a non-zero exit), or with ``error`` (an :class:`ExtJobsError`, or the
        cancellation); ``kills``: the step runs a command that extjobs kills on a timeout
        or a cancel, so that either counts as a kill."""
        labels = step_labels(payload)
        self._child(self._step_duration, *labels, node).observe(time.monotonic() - started)
        if not failed:
            return
        self._child(self._step_failures, *labels).inc()
        timed_out = isinstance(error, CommandTimeoutError)
        if timed_out:
            self._child(self._step_timeouts, *labels).inc()
        if kills and (timed_out or (error is not None and not isinstance(error, ExtJobsError))):
            self._child(self._step_kills, *labels).inc()

    def lock_waited(self, op_id: str, seconds: float) -> None:
        self._child(self._lock_wait, opcode_label(op_id)).observe(seconds)

    # -- events from the SSH runner (extjobs.nodes.observer.RunnerObserver) ---------------

    def _seen(self, node: str) -> NodeSeen:
        seen = self.nodes.get(node)
        if seen is None:
            seen = self.nodes[node] = NodeSeen()
        return seen

    def connect_outcome(self, node: str, error: NodeError | None) -> None:
        seen = self._seen(node)
        if error is None:
            seen.connects += 1
            seen.reachable = True
            seen.last_seen = time.time()
            return
        seen.connect_failures += 1
        if isinstance(error, NodeUnreachableError):
            seen.reachable = False
        else:
            # It answered (and refused us: a host key, a login): it is up.
            seen.reachable = True
            seen.last_seen = time.time()

    def command_outcome(self, node: str, answered: bool) -> None:
        seen = self._seen(node)
        seen.reachable = answered
        if answered:
            seen.last_seen = time.time()


class _StateCollector(Collector):
    """The scrape-time numbers (see the module docstring)."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def describe(self) -> list[Metric]:
        # Names only (the registry checks for duplicates); collect() gives the values.
        return list(self._families(None, None))

    def collect(self) -> Iterator[Metric]:
        queue = self._metrics._queue()
        yield from self._families(queue, self._metrics._leadership)

    def _families(self, queue: JobQueue | None, leadership: Leadership | None) -> Iterator[Metric]:
        jobs = GaugeMetricFamily(
            "extjobs_jobs",
            "Jobs not finished, by status and first opcode.",
            labels=["status", "opcode"],
        )
        depth = GaugeMetricFamily(
            "extjobs_queue_depth", "Jobs queued or waiting (not finished, not running)."
        )
        running = GaugeMetricFamily(
            "extjobs_jobs_running", "Jobs whose opcode runs now (running or canceling)."
        )
        max_running = GaugeMetricFamily(
            "extjobs_queue_max_running", "The limit of jobs running at once (queue.max_running)."
        )
        lock_waiters = GaugeMetricFamily(
            "extjobs_jobs_waiting_for_locks", "Jobs queued behind a lock another job holds."
        )
        connections = GaugeMetricFamily(
            "extjobs_ssh_connections", "SSH connections open, by node.", labels=["node"]
        )
        channels = GaugeMetricFamily(
            "extjobs_ssh_channels_in_use", "SSH channels in use, by node.", labels=["node"]
        )
        connects = CounterMetricFamily(
            "extjobs_ssh_connects", "SSH connections opened, by node.", labels=["node"]
        )
        failures = CounterMetricFamily(
            "extjobs_ssh_connect_failures",
            "SSH connection attempts that failed, by node.",
            labels=["node"],
        )
        reachable = GaugeMetricFamily(
            "extjobs_node_reachable",
            "1 if the node answered the last connect or command, 0 if it did not.",
            labels=["node"],
        )
        last_seen = GaugeMetricFamily(
            "extjobs_node_last_seen_timestamp_seconds",
            "Unix time the node last answered (a connection opened, a command's exit status).",
            labels=["node"],
        )
        leader = GaugeMetricFamily(
            "extjobs_leader", "1 while this master leads (runs jobs), 0 while it stands by."
        )
        epoch = GaugeMetricFamily(
            "extjobs_leader_epoch", "The epoch (fencing token) of this master's current term."
        )
        if queue is not None:
            self._queue_state(queue, jobs, depth, running, max_running, lock_waiters)
            self._node_state(queue, connections, channels, connects, failures, reachable, last_seen)
        if leadership is None:
            leader.add_metric([], 1.0 if queue is not None else 0.0)
        else:
            leader.add_metric([], 1.0 if leadership.epoch is not None else 0.0)
            if leadership.epoch is not None:
                epoch.add_metric([], float(leadership.epoch))
        yield from (jobs, depth, running, max_running, lock_waiters)
        yield from (connections, channels, connects, failures, reachable, last_seen)
        yield from (leader, epoch)

    @staticmethod
    def _queue_state(
        queue: JobQueue,
        jobs: GaugeMetricFamily,
        depth: GaugeMetricFamily,
        running: GaugeMetricFamily,
        max_running: GaugeMetricFamily,
        lock_waiters: GaugeMetricFamily,
    ) -> None:
        # Only the unfinished jobs (at most queue.max_queued): a scrape costs the same
        # however many finished jobs the book holds; those are extjobs_jobs_finished_total.
        counts: dict[tuple[str, str], int] = {}
        waiting = active = 0
        for job in queue.book.unfinished():
            status = job.status
            key = (status.value, job_opcode(job))
            counts[key] = counts.get(key, 0) + 1
            if status in (JobStatus.QUEUED, JobStatus.WAITING):
                waiting += 1
            else:
                active += 1
        for (name, opcode), count in sorted(counts.items()):
            jobs.add_metric([name, opcode], count)
        depth.add_metric([], waiting)
        running.add_metric([], active)
        max_running.add_metric([], queue.options.queue.max_running)
        lock_waiters.add_metric([], queue.locks.statistics()["waiting"])

    def _node_state(
        self,
        queue: JobQueue,
        connections: GaugeMetricFamily,
        channels: GaugeMetricFamily,
        connects: CounterMetricFamily,
        failures: CounterMetricFamily,
        reachable: GaugeMetricFamily,
        last_seen: GaugeMetricFamily,
    ) -> None:
        known = sorted(queue.config.nodes)
        stats = queue.runner_statistics()
        open_ = stats.get("connections", {})
        in_use = stats.get("channels_in_use", {})
        for node in known:
            connections.add_metric([node], open_.get(node, 0))
            channels.add_metric([node], in_use.get(node, 0))
            seen = self._metrics.nodes.get(node)
            if seen is None:
                continue
            connects.add_metric([node], seen.connects)
            failures.add_metric([node], seen.connect_failures)
            if seen.reachable is not None:
                reachable.add_metric([node], 1.0 if seen.reachable else 0.0)
            if seen.last_seen is not None:
                last_seen.add_metric([node], seen.last_seen)


__all__ = ["Metrics", "NodeSeen", "job_opcode", "opcode_label", "step_labels"]
