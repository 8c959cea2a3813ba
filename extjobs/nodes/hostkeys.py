"""Host keys: the key a node offers (read before it is pinned), the key it must offer,
and the error when it offers another."""

from __future__ import annotations

import anyio
import asyncssh

from extjobs.errors import HostKeyError, NodeError, NodeUnreachableError
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


async def offered_host_key(host: str, port: int, timeout: float) -> str:
    """The host key the server at ``host:port`` offers, in OpenSSH format (nothing is
    verified). Raises :class:`NodeUnreachableError`, or :class:`NodeError` for none."""
    try:
        with anyio.fail_after(timeout + 1):
            key = await asyncssh.get_server_host_key(
                host,
                port,
                options=asyncssh.SSHClientConnectionOptions(config=None, connect_timeout=timeout),
            )
    except (TimeoutError, OSError, asyncssh.Error) as exc:
        raise NodeUnreachableError(
            f"cannot fetch the host key of {host}:{port}: {connect_reason(exc, timeout)}",
            host=host,
            port=port,
            reason=connect_reason(exc, timeout),
        ) from exc
    if key is None:
        raise NodeError(f"{host}:{port} offered no host key", host=host, port=port)
    return bytes(key.export_public_key("openssh")).decode("ascii").strip()


def connect_reason(exc: BaseException, timeout: float) -> str:
    """Why a connection failed, in a few words."""
    if isinstance(exc, TimeoutError):
        return f"connect timed out after {timeout:g}s"
    if isinstance(exc, asyncssh.DisconnectError):
        return exc.reason or type(exc).__name__
    return str(exc) or type(exc).__name__
