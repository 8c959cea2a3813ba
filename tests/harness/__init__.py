"""Test harness: SSH nodes on loopback (embedded asyncssh nodes and real OpenSSH sshd).

Both kinds expose the same interface (:class:`~tests.harness.node.HarnessNode`), so tests
can be parametrized over ``"embedded"`` and ``"openssh"``::

    with start_nodes("openssh", 2, tmp_path, authorized_keys) as nodes:
        endpoint = nodes[0].endpoint()
"""

from tests.harness.embedded import EmbeddedNode, start_embedded_nodes
from tests.harness.keys import make_client_key
from tests.harness.node import NODE_KINDS, HarnessNode, start_nodes
from tests.harness.openssh import OpenSSHNode, start_openssh_nodes

__all__ = [
    "NODE_KINDS",
    "EmbeddedNode",
    "HarnessNode",
    "OpenSSHNode",
    "make_client_key",
    "start_embedded_nodes",
    "start_nodes",
    "start_openssh_nodes",
]
