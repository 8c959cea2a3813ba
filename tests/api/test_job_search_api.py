"""``GET /v1/jobs``: filters and cursor paging over a queue holding thousands of jobs,
summaries from ``OpCode.summary()``, the node an instance's job touches recorded at
submission, and bad filter values answered with a 400 naming the parameter."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from extjobs.api.server import build_app
from extjobs.engine.configmgr import ConfigManager
from extjobs.engine.queue import JobQueue
from extjobs.model.cluster import Cluster, ClusterConfig, Disk, Instance, Node, NodeGroup
from extjobs.model.config import Config
from extjobs.nodes.ssh import SSHRunner
from extjobs.store.sqlite import SqliteStore

COUNT = 1500


def migrate(i: int) -> dict[str, Any]:
    return {"OP_ID": "OP_INSTANCE_MIGRATE", "instance_name": f"web{i % 5}", "target_node": "n2"}


def delay(i: int) -> dict[str, Any]:
    return {"OP_ID": "OP_TEST_DELAY", "on_nodes": [f"n{i % 3}"], "duration": 0}


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    async for http in open_client(tmp_path, COUNT):
        yield http


@pytest.fixture
async def small(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    async for http in open_client(tmp_path, 250):
        yield http


async def open_client(tmp_path: Path, count: int) -> AsyncIterator[httpx.AsyncClient]:
    config = Config(state_dir=tmp_path)
    store = SqliteStore(tmp_path / "db.sqlite")
    manager = ConfigManager(store)
    # web0 lives on n7: a search by node finds its jobs though no opcode names n7.
    web0 = Instance(name="web0", primary="n7", disks=(Disk("u0", 0, 64, "prov"),))
    manager.update(
        lambda _old: ClusterConfig(
            cluster=Cluster("c1"),
            groups={"default": NodeGroup("default")},
            nodes={"n7": Node("n7", "127.0.0.1")},
            instances={"web0": web0},
        )
    )
    queue = JobQueue(store, manager, SSHRunner(config.ssh), config)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=build_app(queue)), base_url="http://t"
    ) as http:
        for first in range(0, count, 250):
            jobs = [[migrate(i) if i % 2 else delay(i)] for i in range(first, first + 250)]
            made = await http.post("/v1/jobs", json={"jobs": jobs})
            assert made.status_code == 201, made.text
        yield http
    store.close()


async def pages(http: httpx.AsyncClient, **params: Any) -> list[list[dict[str, Any]]]:
    found: list[list[dict[str, Any]]] = []
    cursor = None
    while True:
        query = {**params, **({"cursor": cursor} if cursor else {})}
        answer = await http.get("/v1/jobs", params=query)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        found.append(body["jobs"])
        cursor = body["next"]
        if cursor is None:
            return found


async def test_filters_and_paging_over_thousands_of_jobs(client: httpx.AsyncClient) -> None:
    everything = await pages(client, limit=400)
    ids = [j["id"] for page in everything for j in page]
    assert [len(p) for p in everything] == [400, 400, 400, 300]
    assert ids == sorted(ids, reverse=True)
    assert len(set(ids)) == COUNT

    web3 = [j for page in await pages(client, instance="web3", limit=77) for j in page]
    # Job i migrates web{i%5} when i is odd: i = 3, 13, 23, ... (150 of them).
    assert len(web3) == COUNT // 10
    assert {tuple(j["summary"]) for j in web3} == {("OP_INSTANCE_MIGRATE(web3 → n2)",)}

    on_n7 = [j for page in await pages(client, node="n7", limit=1000) for j in page]
    assert {s for j in on_n7 for s in j["summary"]} == {"OP_INSTANCE_MIGRATE(web0 → n2)"}
    assert len(on_n7) == COUNT // 10

    delays = await client.get(
        "/v1/jobs", params={"opcode": "OP_TEST_DELAY", "node": "n1", "status": "queued"}
    )
    assert all(j["summary"] == ["OP_TEST_DELAY(0.0s@n1)"] for j in delays.json()["jobs"])
    assert len(delays.json()["jobs"]) == 100  # the default page


@pytest.mark.parametrize(
    "params",
    [
        pytest.param({"instance": "nosuch"}, id="unknown-instance"),
        pytest.param({"node": "n1", "instance": "web1"}, id="disjoint"),
        pytest.param({"status": "error"}, id="status-nobody-has"),
        pytest.param({"cursor": "1"}, id="cursor-past-the-end"),
        pytest.param({"cursor": "999999999"}, id="cursor-beyond-the-newest-is-the-start"),
    ],
)
async def test_a_search_that_matches_nothing_is_an_empty_last_page(
    small: httpx.AsyncClient, params: dict[str, str]
) -> None:
    answer = await small.get("/v1/jobs", params=params)
    assert answer.status_code == 200
    body = answer.json()
    if params.get("cursor") == "999999999":
        assert len(body["jobs"]) == 100
        assert body["next"] is not None
    else:
        assert body == {"jobs": [], "next": None}


@pytest.mark.parametrize(
    ("params", "field", "words"),
    [
        pytest.param({"status": "done"}, "status", "unknown status 'done'", id="status"),
        pytest.param({"opcode": "OP_NOPE"}, "opcode", "unknown opcode 'OP_NOPE'", id="opcode"),
        pytest.param({"instance": "a b"}, "instance", "instance", id="instance"),
        pytest.param({"node": "../x"}, "node", "node", id="node"),
        pytest.param({"since": "yesterday"}, "since", "duration like", id="since"),
        pytest.param({"since": "-2h"}, "since", "duration like", id="since-negative"),
        pytest.param({"limit": "0"}, "limit", "from 1 to 1000", id="limit-zero"),
        pytest.param({"limit": "5000"}, "limit", "from 1 to 1000", id="limit-big"),
        pytest.param({"limit": "ten"}, "limit", "whole number", id="limit-word"),
        pytest.param({"cursor": "abc"}, "cursor", "not one this API gave out", id="cursor"),
        pytest.param({"instanc": "web1"}, "instanc", "unknown query parameter", id="typo"),
    ],
)
async def test_bad_filter_values_are_refused_naming_the_parameter(
    small: httpx.AsyncClient, params: dict[str, str], field: str, words: str
) -> None:
    answer = await small.get("/v1/jobs", params=params)
    assert answer.status_code == 400
    error = answer.json()["error"]
    assert error["field"] == field
    assert words in error["message"]
