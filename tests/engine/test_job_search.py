"""The job search of every Store backend (``Store.search_jobs``): thousands of jobs,
each filter alone and together, cursor paging to the end and past it, and filters that
match nothing; the tags of a store made before the search existed (SQLite migration 5)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from extjobs.model.jobquery import JobQuery
from extjobs.model.jobs import Job, OpState
from extjobs.model.states import JobStatus, OpStatus
from extjobs.store.base import Store
from extjobs.store.sqlite import SqliteStore
from tests.engine.test_store_contract import BACKENDS, open_backend

COUNT = 3000
INSTANCES = [f"web{i}" for i in range(10)]
NODES = ["node1", "node2", "node3"]
STATUS_OF = [OpStatus.SUCCESS, OpStatus.ERROR, OpStatus.QUEUED, OpStatus.SUCCESS]


def make_job(i: int) -> Job:
    """Job ``i``: every third a migration (of web{i%10}, its primary node0 recorded as
    touched), else a delay on a node; received at second ``i``."""
    status = STATUS_OF[i % 4]
    if i % 3 == 0:
        instance = INSTANCES[i % 10]
        op = {
            "OP_ID": "OP_INSTANCE_MIGRATE",
            "instance_name": instance,
            "target_node": NODES[(i // 3) % 3],
        }
        touches: tuple[str, ...] = ("node0",)
    else:
        op = {"OP_ID": "OP_TEST_DELAY", "on_nodes": [NODES[i % 3]], "duration": 0}
        touches = ()
    return Job(
        id=i,
        ops=(OpState(0, op, status=status),),
        received=float(i),
        submitter="token:ci" if i % 2 else "unix:alice",
        touches=touches,
        archived=i % 500 == 0,
    )


JOBS = {i: make_job(i) for i in range(1, COUNT + 1)}


@pytest.fixture(scope="module", params=BACKENDS)
def filled(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Store]:
    kind: str = request.param
    where = (
        request.getfixturevalue("postgres_server").create_database()
        if kind == "postgres"
        else str(tmp_path_factory.mktemp("search") / "store.db")
    )
    store = open_backend(kind, where)
    jobs = list(JOBS.values())
    for first in range(0, len(jobs), 500):
        store.save_jobs(jobs[first : first + 500])
    # A later version of some jobs (a status change) keeps their tags.
    store.save_jobs([JOBS[3]])
    yield store
    store.close()


def expected(query: JobQuery, match: object) -> list[int]:
    ids = [
        i
        for i in sorted(JOBS, reverse=True)
        if (query.archived or not JOBS[i].archived)
        and (query.before is None or i < query.before)
        and (query.since is None or JOBS[i].received >= query.since)
        and (not query.statuses or JOBS[i].status in query.statuses)
        and match(JOBS[i])  # type: ignore[operator]
    ]
    return ids[: query.limit]


def migrates(instance: str | None = None) -> object:
    def match(job: Job) -> bool:
        op = job.ops[0].input
        return op["OP_ID"] == "OP_INSTANCE_MIGRATE" and instance in (None, op["instance_name"])

    return match


def on_node(node: str) -> object:
    def match(job: Job) -> bool:
        op = job.ops[0].input
        return node in (op.get("target_node"), *op.get("on_nodes", ()), *job.touches)

    return match


CASES = [
    pytest.param(JobQuery(limit=50), lambda j: True, id="newest-page"),
    pytest.param(JobQuery(limit=1000, archived=True), lambda j: True, id="with-archived"),
    pytest.param(JobQuery(opcode="OP_INSTANCE_MIGRATE", limit=40), migrates(), id="opcode"),
    pytest.param(JobQuery(instance="web3", limit=1000), migrates("web3"), id="instance"),
    pytest.param(JobQuery(node="node2", limit=1000), on_node("node2"), id="node-named"),
    pytest.param(JobQuery(node="node0", limit=30), on_node("node0"), id="node-touched"),
    pytest.param(
        JobQuery(statuses=(JobStatus.SUCCESS,), instance="web6", node="node1", limit=1000),
        lambda j: migrates("web6")(j) and on_node("node1")(j),  # type: ignore[operator]
        id="status-instance-node",
    ),
    pytest.param(
        JobQuery(user="alice", since=2900.0, limit=1000),
        lambda j: j.submitter == "unix:alice",
        id="user-since",
    ),
    pytest.param(
        JobQuery(user="token:ci", opcode="OP_TEST_DELAY", before=101, limit=5),
        lambda j: j.submitter == "token:ci" and j.ops[0].op_id == "OP_TEST_DELAY",
        id="user-opcode-cursor",
    ),
]


@pytest.mark.parametrize(("query", "match"), CASES)
def test_each_filter_finds_exactly_the_matching_jobs_newest_first(
    filled: Store, query: JobQuery, match: object
) -> None:
    found = [j.id for j in filled.search_jobs(query)]
    assert found == expected(query, match)
    assert found, "the case must match something to prove anything"


NOTHING = [
    pytest.param(JobQuery(instance="nosuch"), id="unknown-instance"),
    pytest.param(JobQuery(node="node9"), id="unknown-node"),
    pytest.param(JobQuery(opcode="OP_NODE_ADD"), id="opcode-never-run"),
    pytest.param(JobQuery(instance="web3", opcode="OP_TEST_DELAY"), id="disjoint-filters"),
    pytest.param(JobQuery(statuses=(JobStatus.CANCELING,)), id="status-nobody-has"),
    pytest.param(JobQuery(since=COUNT + 10.0), id="since-the-future"),
    pytest.param(JobQuery(before=1), id="cursor-past-the-end"),
    pytest.param(JobQuery(opcode="OP_INSTANCE_MIGRATE", before=3), id="tag-cursor-past-the-end"),
]


@pytest.mark.parametrize("query", NOTHING)
def test_filters_that_match_nothing_return_an_empty_page(filled: Store, query: JobQuery) -> None:
    assert filled.search_jobs(query) == []


def test_paging_with_the_cursor_visits_every_match_once_in_order(filled: Store) -> None:
    query = JobQuery(node="node0", limit=97)
    seen: list[int] = []
    while True:
        page = filled.search_jobs(query)
        seen += [j.id for j in page]
        if len(page) < query.limit:
            break
        query = query.next_page(page[-1].id)
    assert seen == expected(JobQuery(node="node0", limit=COUNT), on_node("node0"))
    assert filled.search_jobs(query.next_page(seen[-1])) == []


def test_a_found_job_is_the_stored_version(filled: Store) -> None:
    (found,) = filled.search_jobs(JobQuery(instance="web3", before=4, limit=1))
    assert found == JOBS[3]


def test_a_store_made_before_the_search_gets_its_jobs_tagged(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    store = SqliteStore(path)
    store.save_jobs([JOBS[3], JOBS[4]])
    store.close()
    # As the store was before migration 5: no tag table, version 4.
    db = sqlite3.connect(path)
    db.execute("DROP TABLE job_tags")
    db.execute("UPDATE meta SET value='4' WHERE key='schema_version'")
    db.commit()
    db.close()
    reopened = SqliteStore(path)
    try:
        assert [j.id for j in reopened.search_jobs(JobQuery(instance="web3"))] == [3]
        assert [j.id for j in reopened.search_jobs(JobQuery(user="alice"))] == [4]
        assert [j.id for j in reopened.search_jobs(JobQuery(node="node0"))] == [3]
    finally:
        reopened.close()


def test_the_search_walks_the_tag_index(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "plan.db")
    store.close()
    from extjobs.store.base import search_sql

    sql, args = search_sql(JobQuery(instance="web3", node="node1", statuses=(JobStatus.ERROR,)))
    db = sqlite3.connect(tmp_path / "plan.db")
    plan = " ".join(str(row[-1]) for row in db.execute("EXPLAIN QUERY PLAN " + sql, args))
    db.close()
    assert "SEARCH t USING PRIMARY KEY" in plan, plan
    assert "SCAN" not in plan.replace("SCAN CONSTANT ROW", ""), plan
