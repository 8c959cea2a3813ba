"""What the API serves from: the queue of the leader, or a standby's view of the store.

With several masters sharing one store, every master serves the API. The leader answers
from its :class:`~extjobs.engine.queue.JobQueue`; a master that does not lead answers
from the store (:class:`StandbyQueue`): it reads jobs, logs and the configuration there,
follows a job by polling its log, and queues submissions, cancels and archives as
requests that the leader takes. :class:`Master` is the one object the API holds: it
points at whichever of the two this master is at the moment.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import anyio
from anyio.abc import TaskStatus

from extjobs.engine.leadership import Leadership
from extjobs.engine.queue import JobQueue
from extjobs.engine.submission import build_jobs
from extjobs.engine.watcher import Observed, pause_of
from extjobs.errors import NotFoundError, StateError
from extjobs.model.cluster import ClusterConfig
from extjobs.model.jobquery import JobQuery
from extjobs.model.jobs import Job, LogEntry
from extjobs.model.masters import Lease, MasterInfo, RequestKind
from extjobs.model.requests import JobRequest
from extjobs.model.states import JobStatus
from extjobs.store.shared import SharedStore

#: How often a standby looks at the store while a client waits for a job to change.
WATCH_POLL = 0.1


class QueueView(Protocol):
    """What the API asks of a master (the leader's queue or a standby's view)."""

    @property
    def config(self) -> ClusterConfig: ...
    def get(self, job_id: int) -> Job: ...
    def list_jobs(
        self, *, statuses: Sequence[JobStatus] = (), archived: bool = False
    ) -> list[Job]: ...
    def search_jobs(self, query: JobQuery) -> list[Job]:
        """A page of a job search, answered by the store (``Store.search_jobs``)."""
        ...

    def log_since(self, job_id: int, since: int = 0) -> list[LogEntry]: ...
    async def wait_for_change(
        self, job_id: int, since: int, timeout: float
    ) -> tuple[Job, list[LogEntry]]: ...
    def submit(self, batch: Sequence[JobRequest]) -> list[int]: ...
    async def flush(self) -> None:
        """Return once what this master decided so far is in the store."""
        ...

    def cancel(self, job_id: int) -> Job: ...
    def archive(self, job_id: int) -> Job: ...
    def statistics(self) -> dict[str, Any]: ...
    def runner_statistics(self) -> dict[str, Any]: ...
    def watcher_status(self) -> dict[str, Any]: ...
    def observed(self) -> dict[str, dict[str, Any]]: ...
    def observations(self) -> dict[str, Observed]: ...
    async def wait_observation(self, timeout: float) -> bool: ...


class StandbyQueue:
    """A master that does not lead, answering from the shared store (module docstring)."""

    def __init__(self, store: SharedStore) -> None:
        self._store = store

    @property
    def config(self) -> ClusterConfig:
        return self._store.load_config()

    def get(self, job_id: int) -> Job:
        job = self._store.load_job(job_id)
        if job is None:
            raise NotFoundError(f"job {job_id} does not exist", job=job_id)
        return job

    def list_jobs(self, *, statuses: Sequence[JobStatus] = (), archived: bool = False) -> list[Job]:
        jobs = self._store.load_jobs(include_archived=archived)
        if statuses:
            jobs = [j for j in jobs if j.status in statuses]
        return sorted(jobs, key=lambda j: j.id)

    def search_jobs(self, query: JobQuery) -> list[Job]:
        return self._store.search_jobs(query)

    def log_since(self, job_id: int, since: int = 0) -> list[LogEntry]:
        self.get(job_id)
        return self._store.load_log(job_id, since)

    async def wait_for_change(
        self, job_id: int, since: int, timeout: float
    ) -> tuple[Job, list[LogEntry]]:
        """Like the queue's, by looking at the store every :data:`WATCH_POLL` seconds."""
        with anyio.move_on_after(max(timeout, 0.0)):
            while True:
                job = self.get(job_id)
                entries = self._store.load_log(job_id, since)
                if entries or job.status.finalized:
                    return job, entries
                await anyio.sleep(WATCH_POLL)
        return self.get(job_id), []

    def submit(self, batch: Sequence[JobRequest]) -> list[int]:
        """Queue the batch in the store for the leader; returns the ids at once."""
        ids = self._store.next_job_ids(len(batch))
        jobs, entries = build_jobs(batch, ids, time.time(), self.config)
        self._store.submit_jobs(jobs, entries)
        return ids

    async def flush(self) -> None:
        """Nothing to wait for: a standby writes each request before it returns."""

    def cancel(self, job_id: int) -> Job:
        job = self.get(job_id)
        if job.status.finalized:
            raise StateError(
                f"job {job_id} already ended ({job.status.value}); nothing to cancel", job=job_id
            )
        self._store.add_requests(RequestKind.CANCEL, [job_id])
        return job

    def archive(self, job_id: int) -> Job:
        job = self.get(job_id)
        if not job.status.finalized:
            raise StateError(
                f"job {job_id} is {job.status.value}; only finished jobs can be archived",
                job=job_id,
            )
        self._store.add_requests(RequestKind.ARCHIVE, [job_id])
        return job

    def statistics(self) -> dict[str, Any]:
        counts: dict[str, int] = {}
        for job in self._store.load_jobs():
            counts[job.status.value] = counts.get(job.status.value, 0) + 1
        return {"jobs": counts, "role": "standby"}

    def runner_statistics(self) -> dict[str, Any]:
        return {}

    def watcher_status(self) -> dict[str, Any]:
        return {
            "leader": False,
            "message": "this master does not lead; the leader's watcher observes and acts",
            "pause": pause_of(self.config),
        }

    def observed(self) -> dict[str, dict[str, Any]]:
        """Nothing: only the leader observes."""
        return {}

    def observations(self) -> dict[str, Observed]:
        return {}

    async def wait_observation(self, timeout: float) -> bool:
        return False


class Master:
    """The API's view of this master: the leader's queue while it leads, else the
    standby view (see the module docstring)."""

    def __init__(
        self, current: QueueView, name: str = "master", store: SharedStore | None = None
    ) -> None:
        self.current = current
        self.name = name
        self._store = store

    @property
    def leads(self) -> bool:
        return not isinstance(self.current, StandbyQueue)

    def masters(self) -> tuple[Lease | None, list[MasterInfo]]:
        """The lease and every master heard of (one master: itself, no lease)."""
        if self._store is None:
            return None, [MasterInfo(self.name, "", 0.0)]
        return self._store.lease(), self._store.masters()

    # The queue API, answered by whichever view is current.

    @property
    def config(self) -> ClusterConfig:
        return self.current.config

    def get(self, job_id: int) -> Job:
        return self.current.get(job_id)

    def list_jobs(self, *, statuses: Sequence[JobStatus] = (), archived: bool = False) -> list[Job]:
        return self.current.list_jobs(statuses=statuses, archived=archived)

    def search_jobs(self, query: JobQuery) -> list[Job]:
        return self.current.search_jobs(query)

    def log_since(self, job_id: int, since: int = 0) -> list[LogEntry]:
        return self.current.log_since(job_id, since)

    async def wait_for_change(
        self, job_id: int, since: int, timeout: float
    ) -> tuple[Job, list[LogEntry]]:
        return await self.current.wait_for_change(job_id, since, timeout)

    def submit(self, batch: Sequence[JobRequest]) -> list[int]:
        return self.current.submit(batch)

    async def flush(self) -> None:
        await self.current.flush()

    def cancel(self, job_id: int) -> Job:
        return self.current.cancel(job_id)

    def archive(self, job_id: int) -> Job:
        return self.current.archive(job_id)

    def statistics(self) -> dict[str, Any]:
        return {**self.current.statistics(), "leads": self.leads}

    def runner_statistics(self) -> dict[str, Any]:
        return self.current.runner_statistics()

    def watcher_status(self) -> dict[str, Any]:
        return self.current.watcher_status()

    def observed(self) -> dict[str, dict[str, Any]]:
        return self.current.observed()

    def observations(self) -> dict[str, Observed]:
        return self.current.observations()

    async def wait_observation(self, timeout: float) -> bool:
        return await self.current.wait_observation(timeout)


async def serve_master(
    master: Master,
    leadership: Leadership,
    open_queue: Callable[[int], JobQueue],
    *,
    task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Run this master among several until cancelled: stand by, and while elected run the
    queue that ``open_queue(epoch)`` builds (its store handle fenced at ``epoch``), loaded
    from the store like after a restart — in-flight jobs of the former leader go through
    recovery. Deposed, the queue is cancelled (its running remote steps are killed) and
    the master stands by again."""
    standby = master.current
    async with anyio.create_task_group() as tg:
        await tg.start(leadership.serve)
        task_status.started()
        while True:
            await leadership.elected.wait()
            deposed = leadership.deposed
            epoch = leadership.epoch
            if epoch is None:  # pragma: no cover - elected is set only with an epoch
                continue
            queue = open_queue(epoch)
            master.current = queue
            try:
                async with anyio.create_task_group() as term:
                    await term.start(queue.serve)
                    await deposed.wait()
                    term.cancel_scope.cancel()
            finally:
                master.current = standby
