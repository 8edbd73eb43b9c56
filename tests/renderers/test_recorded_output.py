"""Progress parsers read recorded output of the real programs (tests/renderers/recorded/)."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.adapters import ProgressEvent, adapter_for
from agent.lines import LineSplitter

RECORDED = Path(__file__).parent / "recorded"


def _events(renderer: str, fixture: str, frames: list[int]) -> list[ProgressEvent]:
    splitter = LineSplitter()
    data = (RECORDED / fixture).read_bytes()
    lines = splitter.feed(data) + splitter.close()
    adapter = adapter_for(renderer, frames)
    return [e for e in (adapter.parse(line) for line in lines) if e is not None]


def _frames(events: list[ProgressEvent]) -> list[int]:
    seen: list[int] = []
    for event in events:
        if event.frame is not None and event.frame not in seen:
            seen.append(event.frame)
    return seen


def _saved(events: list[ProgressEvent]) -> list[str]:
    return [e.saved for e in events if e.saved is not None]


def test_blender_recorded_from_the_real_program() -> None:
    events = _events("blender", "blender-3.4-cycles.txt", [2, 3])
    assert _frames(events) == [2, 3]
    assert _saved(events) == ["/tmp/out/frame_0002.png", "/tmp/out/frame_0003.png"]
    fractions = [e.frame_fraction for e in events if e.frame_fraction is not None]
    assert fractions[:2] == [0.0, 1.0]  # "Sample 0/1", "Sample 1/1"


def test_aerender() -> None:
    events = _events("aerender", "aerender-2023.txt", [10, 11, 12])
    assert _frames(events) == [10, 11, 12]
    assert [e.done_count for e in events] == [1, 2, 3]


def test_nuke() -> None:
    events = _events("nuke", "nuke-14.txt", [21, 22, 23])
    assert _frames(events) == [21, 22, 23]
    assert _saved(events)[0] == "/render/staging/job/2.1/renders/comp/sh010.0021.exr"
    assert max(e.done_count or 0 for e in events) == 3


def test_houdini_mantra() -> None:
    events = _events("houdini", "houdini-20-mantra.txt", [101, 102, 103])
    assert _frames(events) == [101, 102, 103]
    assert len(_saved(events)) == 3
    assert [e.frame_fraction for e in events[:6]] == [0.0, None, 0.0, 0.25, 0.5, 1.0]


def test_maya_arnold() -> None:
    events = _events("maya", "maya-2024-arnold.txt", [7, 8])
    assert _frames(events) == [7, 8]
    assert _saved(events) == [
        "/render/staging/job/4.1/renders/maya/beauty_0007.exr",
        "/render/staging/job/4.1/renders/maya/beauty_0008.exr",
    ]
    assert 0.4 in [e.frame_fraction for e in events]


def test_ffmpeg_counts_frames_on_carriage_returns() -> None:
    events = _events("ffmpeg", "ffmpeg-6.1.txt", list(range(101, 111)))
    assert [e.done_count for e in events] == [1, 7, 10]
    assert _frames(events) == [101, 107, 110]


@pytest.mark.parametrize("renderer", ["generic", "something-new"])
def test_generic_reads_no_progress(renderer: str) -> None:
    assert _events(renderer, "blender-3.4-cycles.txt", [2, 3]) == []


def test_demo_lines() -> None:
    adapter = adapter_for("demo", [7, 8])
    assert adapter.parse("demo: frame 8 (2/2)") == ProgressEvent(frame=8, done_count=1)
    assert adapter.parse("Saved: /x/frame_0008.png") == ProgressEvent(saved="/x/frame_0008.png")
