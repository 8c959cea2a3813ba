"""Client keys for tests."""

from __future__ import annotations

import os
from pathlib import Path

import asyncssh


def make_client_key(directory: Path) -> tuple[Path, str]:
    """Generate an ed25519 client key in ``directory``.

    Returns the private key's path (mode 0600, OpenSSH format) and the public key line
    to put in an ``authorized_keys`` file.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    key = asyncssh.generate_private_key("ssh-ed25519", comment="extjobs-test")
    path = directory / "id_ed25519"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key.export_private_key("openssh"))
    public = key.export_public_key("openssh").decode("ascii").strip()
    (directory / "id_ed25519.pub").write_text(public + "\n")
    return path, public
