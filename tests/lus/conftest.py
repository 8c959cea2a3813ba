"""The in-process LU tests run their scenarios twice: on the in-memory store with the
synchronous writer, and on the harness's PostgreSQL through the group writer — the
engine of a leading master on PostgreSQL — where every LU must behave the same."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import attrs
import pytest

from extjobs.testing.cluster import engine_options
from tests.lus import scenario


@pytest.fixture(
    params=[
        pytest.param("memory", id="memory"),
        pytest.param("postgres", id="pg-group", marks=pytest.mark.postgres),
    ]
)
def engine_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """Where :func:`tests.lus.scenario.scripted_cluster` keeps its engine's state."""
    if request.param == "postgres":
        url = str(request.getfixturevalue("pg_url"))
        options = engine_options(tmp_path / "state")
        scenario.ENGINE = scenario.EngineSetting(
            config=attrs.evolve(options, store=attrs.evolve(options.store, url=url)),
            store="config",
            group_commit=True,
        )
    try:
        yield request.param
    finally:
        scenario.ENGINE = scenario.EngineSetting()
