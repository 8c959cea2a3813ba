"""Stored documents: compact JSON with sorted keys, whatever encoder writes them."""

from __future__ import annotations

import json

import pytest

from extjobs.model import codec


@pytest.mark.parametrize(
    "value",
    [
        {"b": 1, "a": [1, 2.5, None, True], "c": {"z": "é ü \u2603", "y": '\x00\n"'}},
        {"big": 2**63 - 1, "small": -(2**63)},
        [],
        "text",
    ],
)
def test_documents_read_back_as_written_with_sorted_keys(value: object) -> None:
    text = codec.dumps(value)
    assert json.loads(text) == value
    assert " " not in text.replace("é ü \u2603", "")
    if isinstance(value, dict):
        assert list(json.loads(text)) == sorted(value)


def test_integers_beyond_64_bits_are_still_written() -> None:
    # Past what the fast encoder takes: the standard library's writes it.
    value = {"n": 2**70, "m": [-(2**65)]}
    assert json.loads(codec.dumps(value)) == value


def test_non_string_keys_are_written_as_json_writes_them() -> None:
    assert json.loads(codec.dumps({1: "a", 2: "b"})) == {"1": "a", "2": "b"}
