"""Fixtures for the node layer: a client key, and SSH nodes of both kinds."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import attrs
import pytest

from extjobs.model.config import SSHOptions
from tests.harness import HarnessNode, make_client_key, start_nodes


@attrs.frozen
class ClientKey:
    private_key: Path
    authorized_keys: Path


@pytest.fixture(scope="session")
def client_key(tmp_path_factory: pytest.TempPathFactory) -> ClientKey:
    directory = tmp_path_factory.mktemp("client-key")
    private_key, public_line = make_client_key(directory)
    authorized_keys = directory / "authorized_keys"
    authorized_keys.write_text(public_line + "\n")
    return ClientKey(private_key, authorized_keys)


@pytest.fixture(
    params=[
        pytest.param("embedded", id="embedded"),
        pytest.param("openssh", id="openssh", marks=pytest.mark.openssh),
    ]
)
def node_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def nodes(node_kind: str, tmp_path: Path, client_key: ClientKey) -> Iterator[list[HarnessNode]]:
    """Two running nodes of the parametrized kind, stopped after the test."""
    with start_nodes(node_kind, 2, tmp_path / "nodes", client_key.authorized_keys) as started:
        yield started


@pytest.fixture
def ssh_options(client_key: ClientKey) -> SSHOptions:
    return SSHOptions(
        identity_file=str(client_key.private_key),
        connect_timeout=2.0,
        keepalive_interval=1.0,
        keepalive_count_max=3,
        kill_timeout=5.0,
    )
