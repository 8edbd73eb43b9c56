"""Frame lists and output patterns the way VFX tools write them."""

from __future__ import annotations

import warnings

import pytest
from fileseq.frameset import FrameSet
from hypothesis import given
from hypothesis import strategies as st

from farmtui.frames import (
    FrameListError,
    OutputPatternError,
    check_output_pattern,
    chunk_frames,
    format_frames,
    frame_path,
    parse_frames,
)
from farmtui.renderers import frame_tokens


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


_item = st.builds(
    lambda first, last, step, form: (
        str(first) if form == 0 else f"{first}-{last}" if form == 1 else f"{first}-{last}x{step}"
    ),
    st.integers(-40, 40),
    st.integers(-40, 40),
    st.integers(1, 9),
    st.integers(0, 2),
)


@given(st.lists(_item, min_size=1, max_size=5).map(",".join))
def test_the_fast_reading_of_common_frame_lists_is_fileseqs(text: str) -> None:
    """``1-100``, ``1-100x5``, ``7`` are read without fileseq: exactly as fileseq reads them."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = [int(frame) for frame in FrameSet(text)]
    assert parse_frames(text) == expected


@pytest.mark.parametrize("text", ["1-999999999,5", "1-5000000y2", "1-2,-999999999-999999999:7"])
def test_a_frame_list_far_too_long_is_refused_before_it_is_expanded(text: str) -> None:
    with pytest.raises(FrameListError, match="too many frames"):
        parse_frames(text)


@given(
    st.integers(-40, 40),
    st.integers(-40, 40),
    st.integers(1, 90),
    st.sampled_from(["", "3,"]),
)
def test_staggered_lists_read_as_fileseq_reads_them(
    first: int, last: int, step: int, before: str
) -> None:
    """``1-10:3``: every third frame, then every second, then the rest (a step past the
    span is read as the span, in a walk of bounded length: the same frames, in order)."""
    text = f"{before}{first}-{last}:{step}"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = [int(frame) for frame in FrameSet(text)]
    assert parse_frames(text) == expected


_any_item = st.builds(
    lambda first, last, step, form: (
        str(first)
        if form == ""
        else f"{first}-{last}"
        if form == "-"
        else f"{first}-{last}{form}{step}"
    ),
    st.integers(-40, 40),
    st.integers(-40, 40),
    st.integers(-50, 50),
    st.sampled_from(["", "-", "x", "y", ":"]),
)


@given(st.lists(_any_item, min_size=1, max_size=6).map(",".join))
def test_every_form_is_read_as_fileseq_reads_it_or_refused_as_it_refuses(text: str) -> None:
    """Every item is read by farmtui itself (fileseq took time growing with the square
    of a list's items, and walked staggers in Python): the same frames, the same order,
    the same refusals (a zero step, a negative step up a rising range)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            expected: list[int] | None = [int(frame) for frame in FrameSet(text)]
        except Exception:  # noqa: BLE001 - whatever fileseq refuses with
            expected = None
    if not expected:  # refused, or no frames at all ("1-1y1"): a job needs one
        with pytest.raises(FrameListError):
            parse_frames(text)
    else:
        assert parse_frames(text) == expected


def test_a_staggered_step_of_twenty_digits_is_read_as_its_span() -> None:
    """fileseq walks every step from the one written down to 1: this one for good."""
    assert parse_frames("1-10:99999999999999999999") == parse_frames("1-10:9")


def test_a_million_frames_are_read_and_one_more_is_refused() -> None:
    frames = parse_frames("1-1000000")
    assert len(frames) == 1_000_000
    assert frames[:2] == [1, 2]
    assert frames[-1] == 1_000_000
    with pytest.raises(FrameListError, match="too many frames; the limit is 1000000"):
        parse_frames("1-1000001")
    # Counted before anything is expanded, a repeated frame too, and the refusal says so.
    with pytest.raises(FrameListError, match="a frame named twice counts twice"):
        parse_frames("1-1000000,1")


@pytest.mark.parametrize(
    "text",
    [
        "1,1000000000",
        "-" + "9" * 400,
        "1-2000000000x1000000000",
        "1-3y2,2000000000",
        # Spans of twenty digits: counted before they are checked, they overflowed.
        "1-99999999999999999999",
        "99999999999999999999-1",
        "1,1-99999999999999999999x7",
        "1-99999999999999999999y3",
        "-99999999999999999999-1:2",
    ],
)
def test_frame_numbers_past_a_billion_are_refused(text: str) -> None:
    with pytest.raises(FrameListError, match="has a frame beyond ±999,999,999"):
        parse_frames(text)


def test_chunks_follow_the_evenly_spaced_runs_of_the_list() -> None:
    # 1,5,10-12 in one chunk would be {start}-{end} = 1-12: frames 2-4 and 6-9 too.
    assert chunk_frames(parse_frames("1,5,10-20"), 5) == [
        [1, 5],
        [10, 11, 12, 13, 14],
        [15, 16, 17, 18, 19],
        [20],
    ]
    assert chunk_frames(parse_frames("1-10x3,20"), 10) == [[1, 4, 7, 10], [20]]


@given(
    st.lists(st.integers(-50, 50), min_size=1, max_size=40, unique=True),
    st.integers(1, 12),
)
def test_every_chunk_is_exactly_its_start_end_and_step(frames: list[int], size: int) -> None:
    chunks = chunk_frames(frames, size)
    assert [f for chunk in chunks for f in chunk] == frames
    for chunk in chunks:
        assert 1 <= len(chunk) <= size
        tokens = frame_tokens(chunk)
        start, end, step = (int(tokens[k]) for k in ("start", "end", "step"))
        assert set(range(start, end + 1, step)) == set(chunk)


@given(st.lists(st.integers(-30, 30), min_size=0, max_size=15, unique=True))
def test_frames_are_written_compactly_as_fileseq_writes_them(frames: list[int]) -> None:
    expected = FrameSet(frames).frange if frames else ""
    assert format_frames(frames) == expected
