"""Decoding the day-2 opcodes: bad input is refused naming the field, before a job
exists."""

from __future__ import annotations

from typing import Any

import pytest

from extjobs.errors import InputError
from extjobs.model.config import ConfigError, config_from_dict
from extjobs.model.opcodes import OpNodeSetParams, decode_opcode

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHb0aW5nIHRoYXQgbG9va3MgbGlrZSBhIGtleQ"


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        pytest.param(
            {"OP_ID": "OP_NODE_MIGRATE", "node_name": "n1", "target_node": "n1"},
            "target_node",
            "cannot be its own target",
            id="own-target",
        ),
        pytest.param(
            {"OP_ID": "OP_NODE_MIGRATE", "node_name": "n1", "max_downtime": 0},
            "max_downtime",
            "whole number >= 1",
            id="downtime-0",
        ),
        pytest.param(
            {"OP_ID": "OP_NODE_MIGRATE", "node_name": "n1", "bandwidth": -3},
            "bandwidth",
            "whole number >= 1",
            id="bandwidth-negative",
        ),
        pytest.param(
            {"OP_ID": "OP_INSTANCE_MIGRATE", "instance_name": "i", "converge_timeout": -1},
            "converge_timeout",
            "seconds > 0",
            id="converge-negative",
        ),
        pytest.param(
            {"OP_ID": "OP_NODE_EVACUATE", "node_name": "bad name"},
            "node_name",
            "invalid node name",
            id="evacuate-name",
        ),
        pytest.param(
            {"OP_ID": "OP_NODE_SET_PARAMS", "node_name": "n1", "host_key": "not a key"},
            "host_key",
            "OpenSSH public key line",
            id="host-key-garbage",
        ),
        pytest.param(
            {
                "OP_ID": "OP_NODE_SET_PARAMS",
                "node_name": "n1",
                "host_key": KEY,
                "accept_new_host_key": True,
            },
            "accept_new_host_key",
            "not both",
            id="host-key-both",
        ),
        pytest.param(
            {"OP_ID": "OP_INSTANCE_REBOOT", "instance_name": "i", "timeout": -5},
            "timeout",
            "must not be negative",
            id="reboot-timeout",
        ),
    ],
)
def test_bad_day2_input_names_the_field(body: dict[str, Any], field: str, words: str) -> None:
    with pytest.raises(InputError) as caught:
        decode_opcode(body)
    assert words in caught.value.message
    assert field in str(caught.value.fields.get("field"))


def test_a_host_key_alone_is_a_change() -> None:
    op = decode_opcode({"OP_ID": "OP_NODE_SET_PARAMS", "node_name": "n1", "host_key": KEY})
    assert isinstance(op, OpNodeSetParams)
    assert op.host_key == KEY


def test_migration_defaults_come_from_the_configuration() -> None:
    config = config_from_dict({"migration": {"max_downtime": 50, "bandwidth": 10}})
    assert config.migration.max_downtime == 50
    assert config.migration.bandwidth == 10
    assert config.migration.converge_timeout == 900.0
    with pytest.raises(ConfigError, match="unknown key"):
        config_from_dict({"migration": {"downtime": 5}})
    with pytest.raises(ConfigError, match="migration"):
        config_from_dict({"migration": {"bandwidth": 0}})
