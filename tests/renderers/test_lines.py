"""LineSplitter copes with what renderers print."""

from __future__ import annotations

from agent.lines import LineSplitter


def test_crlf_split_across_blocks_is_one_line_end() -> None:
    splitter = LineSplitter()
    assert splitter.feed(b"one\r") == ["one"]
    assert splitter.feed(b"\ntwo\n") == ["two"]


def test_long_lines_are_cut_and_bad_bytes_replaced() -> None:
    splitter = LineSplitter(max_bytes=4)
    assert splitter.feed(b"abcdefghij\n\xff\n") == ["abcd", "efgh", "ij", "\ufffd"]
    assert splitter.feed(b"0123456789") == ["0123", "4567"]
    assert splitter.close() == ["89"]


def test_blank_lines_are_kept() -> None:
    splitter = LineSplitter()
    assert splitter.feed(b"a\n\nb\n") == ["a", "", "b"]
