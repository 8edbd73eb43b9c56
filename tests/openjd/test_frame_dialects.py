"""farmtui's frame lists (fileseq: ``x`` steps, ``:`` staggers) and OpenJD's range
expressions (``:`` steps, a set) converted both ways, checked against both libraries.

fileseq reads the farmtui side and openjd-model's ``IntRangeExpr`` the OpenJD side,
so each conversion is judged by the parser of the dialect it writes.
"""

from __future__ import annotations

import pytest
from fileseq import FrameSet
from hypothesis import given, settings
from hypothesis import strategies as st
from openjd.model import ExpressionError, IntRangeExpr, TokenError

from farmtui.frames import FrameListError, frames_from_openjd, openjd_range, parse_frames

frame_lists = st.lists(st.integers(-60, 60), min_size=1, max_size=25, unique=True)


def openjd_frames(expr: str) -> list[int]:
    """The frames of an OpenJD expression, as a sorted set (what it means to OpenJD)."""
    return sorted(IntRangeExpr.from_str(expr))


def fileseq_frames(text: str) -> list[int]:
    """What fileseq itself makes of a frame list, in order."""
    return [int(frame) for frame in FrameSet(text)]


@given(frame_lists)
def test_any_frame_list_becomes_an_openjd_range_of_the_same_frames(frames: list[int]) -> None:
    expr = openjd_range(frames)
    assert openjd_frames(expr) == sorted(frames)
    back = frames_from_openjd(expr)
    assert set(fileseq_frames(back)) == set(frames)
    assert parse_frames(back) == fileseq_frames(back)


@given(frame_lists, st.booleans())
def test_an_ordered_list_keeps_its_order_both_ways(frames: list[int], descending: bool) -> None:
    frames = sorted(frames, reverse=descending)
    expr = openjd_range(frames)
    assert openjd_frames(expr) == sorted(frames)
    assert fileseq_frames(frames_from_openjd(expr)) == frames


@st.composite
def openjd_expressions(draw: st.DrawFn) -> tuple[str, list[int]]:
    """A valid OpenJD expression of non-overlapping ranges in any order and direction,
    and the frames its elements name in the order written."""
    bounds = sorted(draw(st.lists(st.integers(-80, 80), min_size=2, max_size=12, unique=True)))
    spans = [(bounds[i], bounds[i + 1]) for i in range(0, len(bounds) - 1, 2)]
    elements: list[tuple[str, list[int]]] = []
    for low, high in spans:
        step = draw(st.integers(1, 6))
        if draw(st.booleans()):
            frames = list(range(high, low - 1, -step))
            text = f"{high}-{low}:-{step}"
        else:
            frames = list(range(low, high + 1, step))
            text = f"{low}-{high}" if step == 1 and draw(st.booleans()) else f"{low}-{high}:{step}"
        if draw(st.booleans()):
            frames, text = [low], str(low)
        elements.append((text, frames))
    order = draw(st.permutations(elements))
    return ",".join(text for text, _ in order), [f for _, frames in order for f in frames]


@settings(max_examples=60)  # each example parses with fileseq and openjd-model: slow-ish
@given(openjd_expressions())
def test_any_openjd_range_becomes_a_frame_list_of_the_same_frames(
    case: tuple[str, list[int]],
) -> None:
    expr, written = case
    assert openjd_frames(expr) == sorted(written)  # the generator writes valid OpenJD
    text = frames_from_openjd(expr)
    assert fileseq_frames(text) == written
    assert parse_frames(text) == written
    # ... and back: the same set again. (An OpenJD range names a set; the order
    # survives only where the list's evenly spaced runs do not overlap, e.g.
    # 4,2,0,1 reads as the runs 4-0:-2 and 1, which do, so it goes back sorted.)
    again = openjd_range(parse_frames(text))
    assert openjd_frames(again) == sorted(written)
    assert sorted(fileseq_frames(frames_from_openjd(again))) == sorted(written)


@pytest.mark.parametrize(
    ("openjd", "farmtui"),
    [
        ("1-100:5", "1-96x5"),  # OpenJD steps with ':'
        ("1-100", "1-100"),
        ("10-1:-1", "10-1"),  # descending needs a negative step in OpenJD
        ("12-1:-4", "12-4x4"),
        ("1,5,10-20", "1,5,10-20"),
        ("-10--1", "-10--1"),
        ("7", "7"),
        (" 1 - 5 , 9 ", "1-5,9"),
    ],
)
def test_examples_openjd_to_farmtui(openjd: str, farmtui: str) -> None:
    assert frames_from_openjd(openjd) == farmtui
    assert fileseq_frames(farmtui) == sorted(fileseq_frames(farmtui), reverse=True) or (
        sorted(fileseq_frames(farmtui)) == openjd_frames(openjd)
    )


@pytest.mark.parametrize(
    ("farmtui", "openjd"),
    [
        ("1-100x5", "1-96:5"),
        ("100-1", "100-1:-1"),
        ("100-1x3", "100-1:-3"),
        ("1,5,10-20", "1,5,10-20"),
        ("1-9x2,2-8x2", "1-9"),  # interleaved: OpenJD ranges may not overlap; the set
        ("1-10:3", "1-10"),  # fileseq's stagger: every frame once, in another order
    ],
)
def test_examples_farmtui_to_openjd(farmtui: str, openjd: str) -> None:
    assert openjd_range(parse_frames(farmtui)) == openjd
    assert openjd_frames(openjd) == sorted(parse_frames(farmtui))


def test_the_colon_means_a_step_in_openjd_and_a_stagger_in_fileseq() -> None:
    assert openjd_frames("1-10:3") == [1, 4, 7, 10]
    staggered = parse_frames("1-10:3")  # 1,4,7,10 first, then the rest
    assert staggered[:4] == [1, 4, 7, 10]
    assert sorted(staggered) == list(range(1, 11))
    assert parse_frames(frames_from_openjd("1-10:3")) == [1, 4, 7, 10]


@pytest.mark.parametrize(
    ("expr", "reason"),
    [
        ("10-1", "negative step"),
        ("1-10:-1", "runs against its step"),
        ("1-10:0", "step of 0"),
        ("1-10,5", "overlapping"),
        ("1-5:2,2-6:2", "overlapping"),
        ("1x5", "malformed"),
        ("", "malformed"),
        ("1-2000000", "too many frames"),
    ],
)
def test_what_openjd_refuses_is_refused(expr: str, reason: str) -> None:
    with pytest.raises(FrameListError, match=reason):
        frames_from_openjd(expr)
    if reason != "too many frames":
        with pytest.raises((ExpressionError, TokenError, ValueError)):  # openjd-model too
            IntRangeExpr.from_str(expr)
