"""Real OpenSSH ``sshd`` nodes on loopback ports, one state directory (root) each.

Each node runs ``/usr/sbin/sshd -D -e -f <root>/sshd_config`` with its own ed25519
host key, pid file and log; it accepts public keys from the given authorized_keys file
for any user (root included). Commands run in the user's login shell and home, not in
the node root.

Tests log in as :func:`login`: when they run as root, that is :data:`TEST_LOGIN`, an
account with root's uid and gid but ``/bin/sh`` as its shell and a home of its own, so
no start-up file of root's runs on a login (root's ``.bashrc`` may run ``pyenv rehash``,
which waits a minute on a lock file that a killed login left behind). The harness
creates the account on first use. Otherwise it is the current user.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import pwd
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from extjobs.model.remote import Endpoint
from tests.harness.node import HarnessNode, start_nodes
from tests.harness.procs import free_port, wait_port

SSHD = Path("/usr/sbin/sshd")

#: The login of tests run as root: uid 0, ``/bin/sh``, home :data:`TEST_HOME`.
TEST_LOGIN = "extjobs-test"
TEST_HOME = Path("/var/lib/extjobs-test")

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


def login() -> str:
    """The user tests log in as on OpenSSH nodes; as root, :data:`TEST_LOGIN`, created
    (idempotently, safe against concurrent test runs) when missing."""
    if os.geteuid() != 0:
        return getpass.getuser()
    _ensure_test_login()
    return TEST_LOGIN


def _ensure_test_login() -> None:
    # The password field '*' matters: sshd without PAM refuses a locked ('!') account.
    useradd = ["useradd", "--non-unique", "--uid", "0", "--gid", "0", "--no-create-home"]
    useradd += ["--home-dir", str(TEST_HOME), "--shell", "/bin/sh", "--password", "*"]
    useradd += ["--comment", "extjobs tests (root without start-up files)", TEST_LOGIN]
    said = ""
    for _ in range(50):
        try:
            entry = pwd.getpwnam(TEST_LOGIN)
        except KeyError:
            # Fails while another run holds the passwd lock or created the login first.
            said = subprocess.run(useradd, capture_output=True, text=True, check=False).stderr
            time.sleep(0.1)
            continue
        if (entry.pw_uid, entry.pw_shell, entry.pw_dir) != (0, "/bin/sh", str(TEST_HOME)):
            raise RuntimeError(f"login {TEST_LOGIN} exists but is not the test login: {entry}")
        TEST_HOME.mkdir(mode=0o700, parents=True, exist_ok=True)
        return
    raise RuntimeError(f"could not create the test login {TEST_LOGIN}: {said.strip()}")


class OpenSSHNode(HarnessNode):
    kind = "openssh"

    def endpoint(self, user: str | None = None, host_key: str | None = "pinned") -> Endpoint:
        """The endpoint to reach this node as ``user`` (default: :func:`login`)."""
        return super().endpoint(user or login(), host_key)

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
