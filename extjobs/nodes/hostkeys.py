"""Pinned host keys: the key a node must offer, and the error when it offers another."""

from __future__ import annotations

import asyncssh

from extjobs.errors import HostKeyError
from extjobs.model.remote import Endpoint


def pinned_key(endpoint: Endpoint) -> asyncssh.SSHKey:
    if endpoint.host_key is None:
        raise HostKeyError(
            f"node {endpoint.name} has no pinned host key; fetch it with fetch_host_key, "
            "confirm it and pin it before running commands",
            node=endpoint.name,
            host=endpoint.host,
            port=endpoint.port,
        )
    try:
        return asyncssh.import_public_key(endpoint.host_key)
    except (asyncssh.KeyImportError, ValueError) as exc:
        raise HostKeyError(
            f"the pinned host key of node {endpoint.name} is not a valid OpenSSH public key",
            node=endpoint.name,
            host=endpoint.host,
            port=endpoint.port,
        ) from exc


def host_key_changed(
    endpoint: Endpoint, pinned: asyncssh.SSHKey, offered: asyncssh.SSHKey | None
) -> HostKeyError:
    offered_fp = offered.get_fingerprint() if offered is not None else "unknown"
    offered_alg = offered.get_algorithm() if offered is not None else "unknown"
    return HostKeyError(
        f"the host key of node {endpoint.name} ({endpoint.host}:{endpoint.port}) changed: "
        f"it offered {offered_alg} {offered_fp}, which is not the pinned key "
        f"{pinned.get_fingerprint()}. If the node was really reinstalled, fetch and pin "
        "its new key; otherwise someone may be impersonating it.",
        node=endpoint.name,
        host=endpoint.host,
        port=endpoint.port,
        offered=offered_fp,
        pinned=pinned.get_fingerprint(),
    )
