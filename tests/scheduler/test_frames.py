"""Frame lists and output patterns the way VFX tools write them."""

from __future__ import annotations

import pytest

from farmtui.frames import (
    FrameListError,
    OutputPatternError,
    check_output_pattern,
    chunk_frames,
    format_frames,
    frame_path,
    parse_frames,
)


@pytest.mark.parametrize(
    ("text", "frames"),
    [
        ("1-5", [1, 2, 3, 4, 5]),
        ("1-10x5", [1, 6]),
        ("1,5,10-12", [1, 5, 10, 11, 12]),
        ("5-1", [5, 4, 3, 2, 1]),
        ("-2-1", [-2, -1, 0, 1]),
        (" 7 ", [7]),
        ("1-3,2-4", [1, 2, 3, 4]),
    ],
)
def test_good_frame_lists(text: str, frames: list[int]) -> None:
    assert parse_frames(text) == frames


@pytest.mark.parametrize("text", ["", "   ", "a-b", "1-", "1-1000000000", "1--"])
def test_bad_frame_lists_are_refused(text: str) -> None:
    with pytest.raises(FrameListError):
        parse_frames(text)


def test_chunking_keeps_order_and_the_last_chunk_is_short() -> None:
    assert chunk_frames([1, 2, 3, 4, 5], 2) == [[1, 2], [3, 4], [5]]
    with pytest.raises(FrameListError):
        chunk_frames([1], 0)


def test_padding_and_negative_frames() -> None:
    assert frame_path("r/frame_####.png", 7) == "r/frame_0007.png"
    assert frame_path("r/frame_####.png", -7) == "r/frame_-007.png"
    assert format_frames([1, 2, 3, 7]) == "1-3,7"


@pytest.mark.parametrize("pattern", ["", "/abs/f_#.png", "../f_#.png", "a\\f_#.png", "f.png"])
def test_bad_output_patterns(pattern: str) -> None:
    with pytest.raises(OutputPatternError):
        check_output_pattern(pattern)
