"""The watcher: observe every node once per round, restart what died, fail over what a
dead, fenced node held. It runs inside the leader's queue (:meth:`JobQueue.serve`), so
with several masters only the leader watches.

Theory of operation. Every ``[watcher] interval`` seconds a round:

1. asks each online node once — all concurrently, each bounded by ``probe_timeout`` —
   which guests run in its hypervisor run directory (one command for every backend,
   :func:`~extjobs.hypervisors.base.guests_command`); a node that does not answer is
   *unreachable* from that round on, until it answers again;
2. reads where disks are attached from the journal's ledger (:mod:`extjobs.lus.ledger`);
3. classifies every instance (:func:`~extjobs.model.watcher.classify`) and keeps the
   result, with the time it was observed, for ``instance list``/``info``;
4. decides, synchronously, what to do, and submits it as ordinary jobs with a reason
   and the submitter ``watcher`` — unless the watcher is paused (the cluster
   configuration says so: it survives a restart and a change of leader):

   - an instance marked up whose guest runs nowhere, with ``auto_restart``, whose
     primary answers: a restart (``OP_INSTANCE_STARTUP``, low priority, only if still
     marked up when it runs), backing off per instance (``RestartHistory``) and giving
     up after ``max_restarts`` within ``restart_window``: it then stays ``ERROR_down``
     with the reason in ``instance info`` and the last restart job's log;
   - a node unreachable for ``node_dead_after`` seconds (and two rounds) that is the primary of
     instances with automatic failover (theirs, or their group's): with a fence
     command, one batch — ``OP_NODE_FENCE`` (fence, then mark offline) and, depending
     on its success, an ``OP_INSTANCE_FAILOVER`` with ``ignore_consistency`` per
     instance; without one, nothing moves and the node is reported
     ``unreachable, not fenced``. A fence that fails fails the failovers (their
     dependency); the node is not fenced again until it has answered once more.

An instance or node that an unfinished job names (a migration, a shutdown, the
watcher's own restart) is left alone that round: the watcher never fights an operator.
An instance marked down is never started. What the watcher remembers between rounds
(restart history, outages) is in memory: a new leader starts afresh, and the jobs
already submitted are recovered like any other.
"""

from __future__ import annotations

import collections
import logging
import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import anyio
import attrs
from anyio.abc import TaskStatus

from extjobs.engine.book import JobBook
from extjobs.engine.context import Services
from extjobs.errors import ExtJobsError
from extjobs.hypervisors.base import guests_command, instance_key, parse_guests, run_dir_for
from extjobs.lus.ledger import LEDGER_KINDS, build_ledger
from extjobs.lus.watcher import auto_failover_of
from extjobs.model.cluster import ClusterConfig, Instance, Node
from extjobs.model.config import WatcherOptions
from extjobs.model.jobs import Dependency, LogKind
from extjobs.model.opcodes import OpInstanceFailover, OpInstanceStartup, OpNodeFence
from extjobs.model.requests import JobRequest
from extjobs.model.states import JobStatus
from extjobs.model.watcher import ObservedState, RestartHistory, RestartPolicy, classify

log = logging.getLogger("extjobs.watcher")

#: The submitter of every job the watcher submits.
SUBMITTER = "watcher"
#: Priority of the watcher's jobs (the CLI's ``low``): an operator's jobs go first.
PRIORITY = 10
#: Rounds in a row a node must fail to answer before it counts as dead.
MIN_FAILED_ROUNDS = 2
#: How many of the watcher's latest actions ``watcher status`` shows.
RECENT = 50


def _utc(wall: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(wall))


def observed_age(observed: Observed, now: float) -> float:
    """Seconds since ``observed`` was made, as views and listings show it."""
    return round(max(0.0, now - observed.at), 3)


@attrs.frozen
class Observed:
    """One instance as the last round saw it."""

    state: ObservedState
    at: float  # wall clock
    running_on: tuple[str, ...] = ()
    attached_on: tuple[str, ...] = ()
    #: What the watcher has to say (backing off, gave up, left alone …).
    message: str | None = None

    def view(self, now: float) -> dict[str, Any]:
        return {
            "state": self.state.value,
            "at": self.at,
            "age": observed_age(self, now),
            "running_on": list(self.running_on),
            "disks_attached_on": list(self.attached_on),
            "message": self.message,
        }


@attrs.define
class NodeWatch:
    """What the watcher knows of one node across rounds."""

    #: Monotonic time of the first failed probe of the current outage (None: answers).
    unreachable_since: float | None = None
    error: str | None = None
    last_answer: float | None = None  # wall clock
    #: The outage's fence: ``None`` (not yet), or what happened (submitted, refused …).
    fence: str | None = None
    fence_job: int | None = None
    #: Why the node cannot be fenced now (no fence command); asked again every round.
    no_fence: str | None = None
    #: Rounds in a row the node did not answer.
    failed_rounds: int = 0


class Watcher:
    """See the module docstring. ``submit`` queues a batch and returns its job ids."""

    def __init__(
        self,
        services: Services,
        book: JobBook,
        submit: Callable[[Sequence[JobRequest]], list[int]],
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._services = services
        self._book = book
        self._submit = submit
        self._clock = clock
        self._nodes: dict[str, NodeWatch] = {}
        self._observed: dict[str, Observed] = {}
        self._restarts: dict[str, RestartHistory] = {}
        #: The watcher's last restart job per instance (its log gets the give-up).
        self._restart_jobs: dict[str, int] = {}
        self._recent: collections.deque[dict[str, Any]] = collections.deque(maxlen=RECENT)
        self._last: dict[str, Any] | None = None
        self._rounds_started = 0
        self._rounds_done = 0
        self._kick = anyio.Event()
        self._round_done = anyio.Event()
        #: The last ledger read: (jobs finished then, instance → nodes with its disks).
        self._ledger: tuple[int, dict[str, set[str]]] | None = None

    @property
    def options(self) -> WatcherOptions:
        return self._services.options.watcher

    @property
    def policy(self) -> RestartPolicy:
        o = self.options
        return RestartPolicy(
            base=o.restart_backoff,
            cap=o.restart_backoff_max,
            limit=o.max_restarts,
            window=o.restart_window,
        )

    # -- views -----------------------------------------------------------------------

    def observed(self) -> dict[str, dict[str, Any]]:
        """The last observation of every instance (name → view with its age)."""
        now = time.time()
        return {name: o.view(now) for name, o in self._observed.items()}

    def observations(self) -> dict[str, Observed]:
        """The last observation of every instance, as it was made."""
        return dict(self._observed)

    def status(self) -> dict[str, Any]:
        """What ``watcher status`` shows: settings, pause, the last round, recent actions."""
        cfg = self._services.configmgr.shown
        o = self.options
        return {
            "leader": True,
            "enabled": o.interval > 0,
            "interval": o.interval,
            "node_dead_after": o.node_dead_after,
            "pause": pause_of(cfg),
            "rounds": self._rounds_done,
            "last_round": self._last,
            "recent_actions": list(self._recent),
        }

    # -- running -----------------------------------------------------------------------

    async def serve(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Run a round every ``interval`` seconds, the first one ``interval`` seconds after
        the start, and whenever a fresh observation is asked for (with ``interval`` 0
        only then, and such a round acts on nothing), until cancelled."""
        task_status.started()
        while True:
            interval = self.options.interval
            with anyio.move_on_after(interval if interval > 0 else math.inf):
                await self._kick.wait()
            # A request for a fresh observation made during the round sets the new
            # event: the next round follows at once.
            self._kick = anyio.Event()
            await self.run_round(act=interval > 0)

    async def wait_observation(self, timeout: float) -> bool:
        """Ask for a round now and wait (at most ``timeout`` seconds) until one that
        started after this call has ended; whether it did."""
        target = self._rounds_started + 1
        self._kick.set()
        with anyio.move_on_after(timeout):
            while self._rounds_done < target:
                await self._round_done.wait()
            return True
        return False

    async def run_round(self, *, act: bool = True) -> dict[str, Any]:
        """One round (module docstring); its report. Never raises but cancellation."""
        self._rounds_started += 1
        started = time.time()
        try:
            report = await self._round(act=act)
        except ExtJobsError as exc:
            log.warning("watcher round failed: %s", exc.message)
            report = {"error": exc.message}
        except Exception as exc:
            log.exception("watcher round failed")
            report = {"error": f"internal error: {exc!r}"}
        report = {"round": self._rounds_started, "started": started, **report}
        report["duration"] = round(time.time() - started, 3)
        self._last = report
        self._rounds_done += 1
        done, self._round_done = self._round_done, anyio.Event()
        done.set()
        return report

    async def _probe(self, cfg: ClusterConfig, node: Node) -> dict[str, int] | str:
        """The guests running on ``node`` (key → pid), or why it did not say."""
        timeout = self.options.probe_timeout
        command = guests_command(run_dir_for(cfg.cluster, node.name), timeout=timeout)
        try:
            with anyio.fail_after(timeout):
                result = await self._services.runner.run(node.endpoint, command)
        except TimeoutError:
            return f"did not answer within {timeout:g}s"
        except ExtJobsError as exc:
            return exc.message
        if not result.ok:
            return f"the guest listing failed: {result.stderr.strip()[-300:] or result.exit_status}"
        try:
            return parse_guests(result.stdout, node=node.name)
        except ExtJobsError as exc:
            return exc.message

    async def _round(self, *, act: bool) -> dict[str, Any]:
        cfg = self._services.configmgr.shown
        if cfg.cluster is None:
            return {"skipped": "no cluster yet"}
        online = cfg.online_nodes()
        answers: dict[str, dict[str, int] | str] = {}
        # A bounded number at a time: each probe's timeout runs from its own start.
        limiter = anyio.CapacityLimiter(self.options.probes_in_flight)

        async def probe(node: Node) -> None:
            async with limiter:
                answers[node.name] = await self._probe(cfg, node)

        async with anyio.create_task_group() as tg:
            for node in online:
                tg.start_soon(probe, node)
        attached = await self._attachments()
        # Decide synchronously from here on: the configuration may have changed while
        # the nodes answered, so the newest one is used (an instance removed meanwhile
        # is not acted on).
        cfg = self._services.configmgr.shown
        now, wall = self._clock(), time.time()
        self._note_nodes(cfg, answers, now, wall)
        running: dict[str, list[str]] = {}
        for name, answer in sorted(answers.items()):
            if isinstance(answer, dict):
                for key in answer:
                    running.setdefault(key, []).append(name)
        observed: dict[str, Observed] = {}
        for inst in cfg.instances.values():
            primary = cfg.nodes.get(inst.primary)
            on = tuple(sorted(running.get(instance_key(inst), [])))
            state = classify(
                admin_up=inst.admin_up,
                primary=inst.primary,
                primary_offline=primary is None or primary.offline,
                primary_answered=isinstance(answers.get(inst.primary), dict),
                running_on=on,
            )
            observed[inst.name] = Observed(
                state, wall, on, tuple(sorted(attached.get(inst.name, ())))
            )
        pause = pause_of(cfg)
        acting = act and pause is None and self._services.may_act()
        actions: list[dict[str, Any]] = []
        if acting:
            busy_instances, busy_nodes = self._busy()
            actions += self._restarts_due(cfg, observed, busy_instances, now, wall)
            actions += self._failovers_due(cfg, busy_instances, busy_nodes, now)
        self._follow_fences()
        self._observed = observed
        for action in actions:
            self._recent.append({"at": wall, **action})
        return {
            "acted": acting,
            "paused": pause,
            "nodes": self._node_report(cfg, now),
            "instances": {
                name: {"state": o.state.value, "message": o.message}
                for name, o in sorted(observed.items())
            },
            "actions": actions,
        }

    async def _attachments(self) -> dict[str, set[str]]:
        """Instance → nodes where the ledger says its disks are attached. The journal is
        read again only when a job may have changed it since the last read (one is
        unfinished, or one finished since): an idle cluster costs no read."""
        key = self._book.finished
        if self._ledger is not None and self._ledger[0] == key and not self._book.unfinished():
            return self._ledger[1]
        await self._services.writer.flush()
        ledger = build_ledger(self._services.store.load_journal_kinds(LEDGER_KINDS))
        attached: dict[str, set[str]] = {}
        for volume in ledger.values():
            if volume.exists and volume.instance is not None:
                attached.setdefault(volume.instance, set()).update(volume.attached)
        self._ledger = (key, attached)
        return attached

    # -- nodes -------------------------------------------------------------------------

    def _note_nodes(
        self,
        cfg: ClusterConfig,
        answers: dict[str, dict[str, int] | str],
        now: float,
        wall: float,
    ) -> None:
        for name in list(self._nodes):
            if name not in cfg.nodes:
                del self._nodes[name]
        for name, answer in answers.items():
            seen = self._nodes.setdefault(name, NodeWatch())
            if isinstance(answer, dict):
                if seen.unreachable_since is not None:
                    log.warning("node %s answers again", name)
                seen.unreachable_since = None
                seen.error = None
                seen.last_answer = wall
                seen.fence = None
                seen.fence_job = None
                seen.no_fence = None
                seen.failed_rounds = 0
            else:
                seen.failed_rounds += 1
                if seen.unreachable_since is None:
                    log.warning("node %s does not answer: %s", name, answer)
                    seen.unreachable_since = now
                seen.error = answer

    def _node_report(self, cfg: ClusterConfig, now: float) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for node in sorted(cfg.nodes.values(), key=lambda n: n.name):
            seen = self._nodes.get(node.name, NodeWatch())
            if node.offline:
                state = "offline (fenced)" if node.fenced else "offline"
            elif seen.unreachable_since is None:
                state = "ok" if seen.last_answer is not None else "not asked yet"
            elif seen.no_fence is not None or (seen.fence is not None and seen.fence_job is None):
                state = "unreachable, not fenced"
            else:
                state = "unreachable"
            out[node.name] = {
                "state": state,
                "last_answer": seen.last_answer,
                "unreachable_for": None
                if seen.unreachable_since is None or node.offline
                else round(now - seen.unreachable_since, 3),
                "error": seen.error if not node.offline else None,
                "fence": (seen.fence or seen.no_fence) if not node.offline else None,
                "fence_job": seen.fence_job,
            }
        return out

    # -- deciding ----------------------------------------------------------------------

    def _busy(self) -> tuple[set[str], set[str]]:
        """The instances and nodes that unfinished jobs name."""
        instances: set[str] = set()
        nodes: set[str] = set()
        for job in self._book.unfinished():
            for op in job.ops:
                if op.status.finalized:
                    continue
                for key in ("instance_name", "new_name"):
                    value = op.input.get(key)
                    if isinstance(value, str):
                        instances.add(value)
                for key in ("node_name", "target_node", "pnode"):
                    value = op.input.get(key)
                    if isinstance(value, str):
                        nodes.add(value)
        return instances, nodes

    def _restarts_due(
        self,
        cfg: ClusterConfig,
        observed: dict[str, Observed],
        busy: set[str],
        now: float,
        wall: float,
    ) -> list[dict[str, Any]]:
        actions: list[dict[str, Any]] = []
        for name in list(self._restarts):
            if name not in cfg.instances:
                del self._restarts[name]
                self._restart_jobs.pop(name, None)
        for name, seen in sorted(observed.items()):
            inst = cfg.instances[name]
            history = self._restarts.get(name)
            if seen.state is ObservedState.RUNNING:
                if history is not None and history.gave_up is not None:
                    # Running again without the watcher: an operator fixed it.
                    del self._restarts[name]
                continue
            if seen.state is not ObservedState.ERROR_DOWN:
                continue
            why = self._no_restart(inst, busy)
            if why is not None:
                observed[name] = attrs.evolve(seen, message=why)
                continue
            history = self._restarts.setdefault(name, RestartHistory())
            verdict, when = history.decide(now, self.policy)
            if verdict == "gave-up":
                observed[name] = attrs.evolve(seen, message=history.gave_up)
                continue
            if verdict == "give-up":
                history.gave_up = (
                    f"the watcher gave up restarting {name}: it was found down again after "
                    f"{len(history.attempts)} restarts within "
                    f"{self.options.restart_window:g}s; start it by hand once the cause "
                    f"is fixed ('extjobs instance startup {name}')"
                )
                observed[name] = attrs.evolve(seen, message=history.gave_up)
                log.error("%s", history.gave_up)
                job_id = self._restart_jobs.get(name)
                if job_id is not None and self._book.find(job_id) is not None:
                    self._book.append_log(job_id, history.gave_up, kind=LogKind.WARNING)
                actions.append({"kind": "gave-up", "instance": name, "message": history.gave_up})
                continue
            if verdict == "wait":
                assert when is not None
                observed[name] = attrs.evolve(
                    seen,
                    message=f"restart {len(history.attempts) + 1} backs off for "
                    f"{when - now:.1f}s more",
                )
                continue
            reason = f"watcher: guest of {name} found down on {inst.primary} at {_utc(wall)}"
            if history.attempts:
                reason += f" (restart {len(history.attempts) + 1} within the window)"
            job = JobRequest(
                ops=(OpInstanceStartup(instance_name=name, only_if_marked_up=True),),
                priority=PRIORITY,
                submitter=SUBMITTER,
                reason=reason,
            )
            (job_id,) = self._submit([job])
            history.restarted(now)
            self._restart_jobs[name] = job_id
            busy.add(name)
            observed[name] = attrs.evolve(seen, message=f"restart submitted (job {job_id})")
            log.warning("%s: job %d", reason, job_id)
            actions.append({"kind": "restart", "instance": name, "job": job_id, "reason": reason})
        return actions

    def _no_restart(self, inst: Instance, busy: set[str]) -> str | None:
        if not inst.auto_restart:
            return "auto-restart is off for this instance"
        if inst.cleanup:
            return "the instance is being removed"
        if inst.name in busy:
            return "a job is working on the instance; left alone this round"
        return None

    def _failovers_due(
        self, cfg: ClusterConfig, busy: set[str], busy_nodes: set[str], now: float
    ) -> list[dict[str, Any]]:
        actions: list[dict[str, Any]] = []
        dead_after = self.options.node_dead_after
        for name, seen in sorted(self._nodes.items()):
            node = cfg.nodes.get(name)
            if node is None or node.offline or seen.unreachable_since is None:
                continue
            if seen.fence is not None:
                continue
            wanted = sorted(
                i.name
                for i in cfg.instances.values()
                if i.primary == name and not i.cleanup and auto_failover_of(i, cfg)
            )
            # Dead: silent for node_dead_after seconds, and in two rounds at least (one
            # slow answer is not a death).
            if (
                not wanted
                or now - seen.unreachable_since < dead_after
                or seen.failed_rounds < MIN_FAILED_ROUNDS
            ):
                continue
            if not node.fence_command:
                # Asked again every round: a fence command set meanwhile is used.
                if seen.no_fence is None:
                    seen.no_fence = (
                        f"unreachable, not fenced: node {name} has no fence command, so "
                        f"nothing is failed over ({', '.join(wanted)}); power it off and run "
                        f"'extjobs node fence {name}', or set a fence command"
                    )
                    log.error("%s", seen.no_fence)
                    actions.append({"kind": "not-fenced", "node": name, "message": seen.no_fence})
                continue
            seen.no_fence = None
            if name in busy_nodes or any(i in busy for i in wanted):
                continue
            down_for = now - seen.unreachable_since
            reason = (
                f"watcher: node {name} unreachable for {down_for:.0f}s ({seen.error}); "
                f"fencing it, then failing over {', '.join(wanted)}"
            )
            batch = [
                JobRequest(
                    ops=(OpNodeFence(node_name=name),),
                    priority=PRIORITY,
                    submitter=SUBMITTER,
                    reason=reason,
                )
            ]
            for index, inst_name in enumerate(wanted, start=1):
                batch.append(
                    JobRequest(
                        ops=(OpInstanceFailover(instance_name=inst_name, ignore_consistency=True),),
                        priority=PRIORITY,
                        depends=(Dependency(-index, (JobStatus.SUCCESS,)),),
                        submitter=SUBMITTER,
                        reason=f"watcher: failover of {inst_name} from dead node {name}, "
                        "once it is fenced",
                    )
                )
            ids = self._submit(batch)
            seen.fence = f"fence submitted (job {ids[0]})"
            seen.fence_job = ids[0]
            busy.update(wanted)
            log.warning("%s: jobs %s", reason, ", ".join(map(str, ids)))
            actions.append({"kind": "fence", "node": name, "job": ids[0], "reason": reason})
            actions += [
                {"kind": "failover", "instance": i, "node": name, "job": j}
                for i, j in zip(wanted, ids[1:], strict=True)
            ]
        return actions

    def _follow_fences(self) -> None:
        """Note a fence job of an outage that failed: the node stays reported
        ``unreachable, not fenced`` with the reason, and is not fenced again until it has
        answered once more."""
        for name, seen in self._nodes.items():
            if seen.fence_job is None:
                continue
            job = self._book.find(seen.fence_job)
            if job is None or not job.status.finalized or job.status is JobStatus.SUCCESS:
                continue
            errors = [op.error.get("message", "") for op in job.ops if op.error]
            why = "; ".join(e for e in errors if e) or job.status.value
            seen.fence = (
                f"unreachable, not fenced: the fence job {seen.fence_job} ended "
                f"{job.status.value}: {why}; nothing was failed over"
            )
            log.error("node %s: %s", name, seen.fence)
            seen.fence_job = None


def pause_of(cfg: ClusterConfig) -> dict[str, Any] | None:
    """The watcher's pause in ``cfg`` (None: not paused, or the pause has expired)."""
    cluster = cfg.cluster
    if cluster is None or not cluster.watcher_paused:
        return None
    until = cluster.watcher_paused_until
    if until is not None and until <= time.time():
        return None
    return {"until": until, "remaining": None if until is None else round(until - time.time(), 1)}
