"""Real OpenSSH ``sshd`` nodes on loopback ports, one state directory (root) each.

Each node runs ``/usr/sbin/sshd -D -e -f <root>/sshd_config`` with its own ed25519
host key, pid file and log; it accepts public keys from the given authorized_keys file
for any user (root included). Commands run in the user's login shell and home, not in
the node root.
"""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness.node import HarnessNode, start_nodes
from tests.harness.procs import free_port, wait_port

SSHD = Path("/usr/sbin/sshd")

_CONFIG = """\
ListenAddress {host}
Port {port}
HostKey {host_key}
PidFile {root}/sshd.pid
AuthorizedKeysFile {authorized_keys}
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
UseDNS no
PrintMotd no
MaxSessions 10
MaxStartups 100
Subsystem sftp internal-sftp
AllowStreamLocalForwarding yes
AllowTcpForwarding yes
LogLevel ERROR
"""


def require_sshd() -> None:
    """Skip the calling test when OpenSSH's sshd is not installed."""
    if not SSHD.exists():
        pytest.skip(f"{SSHD} is not installed (make test installs openssh-server)")


class OpenSSHNode(HarnessNode):
    kind = "openssh"

    @property
    def host_key_file(self) -> Path:
        return self.root / "ssh_host_ed25519_key"

    @property
    def config_file(self) -> Path:
        return self.root / "sshd_config"

    def _launch(self) -> None:
        require_sshd()
        # sshd refuses to start without its privilege separation directory.
        Path("/run/sshd").mkdir(mode=0o755, parents=True, exist_ok=True)
        if not self.host_key_file.exists():
            subprocess.run(
                [
                    "ssh-keygen",
                    "-q",
                    "-t",
                    "ed25519",
                    "-N",
                    "",
                    "-C",
                    self.name,
                    "-f",
                    str(self.host_key_file),
                ],
                check=True,
            )
        if not self.port:
            self.port = free_port(self.host)
        self.config_file.write_text(
            _CONFIG.format(
                host=self.host,
                port=self.port,
                host_key=self.host_key_file,
                root=self.root,
                authorized_keys=self.authorized_keys,
            )
        )
        log = (self.root / "sshd.log").open("ab")
        try:
            self.process = subprocess.Popen(
                [str(SSHD), "-D", "-e", "-f", str(self.config_file)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )
        finally:
            log.close()
        try:
            wait_port(self.host, self.port)
        except TimeoutError:
            exited = self.process.poll()
            self.kill()
            raise RuntimeError(
                f"sshd for {self.name} did not start (exit {exited}); see {self.root / 'sshd.log'}"
            ) from None


@contextlib.contextmanager
def start_openssh_nodes(
    n: int, base_dir: Path, authorized_keys: Path
) -> Iterator[list[OpenSSHNode]]:
    """Start ``n`` sshd nodes under ``base_dir``; skips the test if sshd is missing."""
    with start_nodes("openssh", n, base_dir, authorized_keys) as nodes:
        yield [node for node in nodes if isinstance(node, OpenSSHNode)]
