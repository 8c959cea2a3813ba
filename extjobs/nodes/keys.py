"""SSH client key generation (for the demo and the test harness)."""

from __future__ import annotations

import os
from pathlib import Path

import asyncssh


def generate_client_key(private_path: Path) -> str:
    """Write a new ed25519 private key (mode 0600) and ``.pub``; return the public line."""
    key = asyncssh.generate_private_key("ssh-ed25519", comment="extjobs")
    private_path.parent.mkdir(parents=True, exist_ok=True)
    private_path.write_bytes(key.export_private_key())
    os.chmod(private_path, 0o600)
    public = key.export_public_key().decode().strip()
    private_path.with_suffix(".pub").write_text(public + "\n")
    return public
