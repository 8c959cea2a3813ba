"""Integration fixtures: a real daemon process with embedded or OpenSSH nodes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness.cluster import TestCluster, start_cluster


@pytest.fixture(
    params=[
        pytest.param("embedded", id="embedded"),
        pytest.param("openssh", id="openssh", marks=pytest.mark.openssh),
    ]
)
def node_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def cluster3(node_kind: str, tmp_path: Path) -> Iterator[TestCluster]:
    """Three nodes of the parametrized kind, cluster initialised, sharedfile installed."""
    with start_cluster(node_kind, 3, tmp_path) as cluster:
        cluster.init()
        yield cluster
