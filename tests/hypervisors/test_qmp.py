"""QMP messages: encoding, splitting a byte stream, replies, query-block."""

from __future__ import annotations

import json

import pytest

from extjobs.errors import HypervisorError
from extjobs.hypervisors.qmp import (
    MessageSplitter,
    block_sizes,
    check_greeting,
    encode_command,
    is_event,
    reply_value,
)

GREETING = {"QMP": {"version": {"qemu": {"major": 7, "minor": 2, "micro": 0}}, "capabilities": []}}


def test_command_is_one_json_line_with_its_id() -> None:
    data = encode_command("block_resize", {"device": "disk0", "size": 1 << 20}, id="x-1")
    assert data.endswith(b"\n")
    assert data.count(b"\n") == 1
    assert json.loads(data) == {
        "execute": "block_resize",
        "arguments": {"device": "disk0", "size": 1048576},
        "id": "x-1",
    }
    assert "arguments" not in json.loads(encode_command("query-block", id="2"))


def test_splitter_handles_partial_and_several_messages() -> None:
    splitter = MessageSplitter(where="n1:/q")
    raw = (json.dumps(GREETING) + "\r\n" + '{"return": {}, "id": "a"}\r\n').encode()
    assert splitter.feed(raw[:10]) == []
    messages = splitter.feed(raw[10:-3])
    assert messages == [GREETING]
    assert splitter.feed(raw[-3:]) == [{"return": {}, "id": "a"}]


@pytest.mark.parametrize(
    "line",
    [pytest.param(b"not json\n", id="garbage"), pytest.param(b"[1, 2]\n", id="not-an-object")],
)
def test_splitter_refuses_garbage(line: bytes) -> None:
    with pytest.raises(HypervisorError, match="n1:/q"):
        MessageSplitter(where="n1:/q").feed(line)


def test_greeting_and_events() -> None:
    assert check_greeting(GREETING, where="w")["qemu"]["major"] == 7
    with pytest.raises(HypervisorError, match="did not greet"):
        check_greeting({"return": {}}, where="w")
    assert is_event({"event": "SHUTDOWN", "timestamp": {}})
    assert not is_event({"return": {}})


def test_reply_value_and_errors() -> None:
    assert reply_value({"return": [1], "id": "7"}, "query-block", id="7", where="w") == [1]
    error = {"error": {"class": "GenericError", "desc": "Cannot find device"}, "id": "7"}
    with pytest.raises(HypervisorError, match="GenericError: Cannot find device") as info:
        reply_value(error, "block_resize", id="7", where="w")
    assert info.value.fields["command"] == "block_resize"
    with pytest.raises(HypervisorError, match="answered"):
        reply_value({"return": {}, "id": "other"}, "x", id="7", where="w")


def test_block_sizes_reads_virtual_sizes_by_device() -> None:
    reply = [
        {"device": "disk0", "inserted": {"image": {"virtual-size": 33554432}}},
        {"device": "cd0"},  # nothing inserted
        "junk",
    ]
    assert block_sizes(reply) == {"disk0": 33554432}
    assert block_sizes(None) == {}
