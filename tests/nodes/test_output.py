from __future__ import annotations

import tracemalloc

import pytest
from hypothesis import given
from hypothesis import strategies as st

from extjobs.nodes.output import CappedBuffer


def test_short_stream_is_kept_whole() -> None:
    buf = CappedBuffer(4, 4)
    buf.feed(b"abc")
    buf.feed(b"defg")
    assert buf.getvalue() == b"abcdefg"
    assert buf.dropped == 0
    assert buf.text() == "abcdefg"


def test_long_stream_keeps_head_and_tail_with_marker() -> None:
    buf = CappedBuffer(3, 2)
    for chunk in (b"012", b"3456", b"789"):
        buf.feed(chunk)
    assert buf.total == 10
    assert buf.dropped == 5
    assert buf.text() == "012\n[... 5 bytes dropped ...]\n89"


def test_split_divides_the_cap() -> None:
    buf = CappedBuffer.split(5)
    buf.feed(b"x" * 100)
    assert len(buf.getvalue()) == 5
    assert buf.dropped == 95


def test_invalid_utf8_and_cut_characters_are_replaced() -> None:
    buf = CappedBuffer(1, 1)
    buf.feed("é".encode() + b"--" + "é".encode())
    assert buf.text() == "\ufffd\n[... 4 bytes dropped ...]\n\ufffd"
    whole = CappedBuffer(10, 10)
    whole.feed(b"\xff ok")
    assert whole.text() == "\ufffd ok"


def test_negative_caps_are_refused() -> None:
    with pytest.raises(ValueError, match="negative"):
        CappedBuffer(-1, 0)


@given(
    head=st.integers(0, 20),
    tail=st.integers(0, 20),
    chunks=st.lists(st.binary(max_size=30), max_size=10),
)
def test_matches_slicing_the_whole_stream(head: int, tail: int, chunks: list[bytes]) -> None:
    buf = CappedBuffer(head, tail)
    for chunk in chunks:
        buf.feed(chunk)
    data = b"".join(chunks)
    rest = data[head:]
    expected = data[:head] + (rest[-tail:] if tail else b"")
    assert buf.getvalue() == expected
    assert buf.total == len(data)
    assert buf.dropped == len(data) - len(expected)


def test_memory_stays_bounded_for_a_huge_stream() -> None:
    chunk = b"y" * 65536
    tracemalloc.start()
    try:
        buf = CappedBuffer.split(65536)
        base, _ = tracemalloc.get_traced_memory()
        for _ in range(100_000_000 // len(chunk)):
            buf.feed(chunk)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert buf.dropped == buf.total - 65536
    assert peak - base < 1_000_000
