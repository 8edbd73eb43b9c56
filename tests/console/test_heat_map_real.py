"""The heat map (``T`` in the frame grid) on a real farm: the leader times chunks,
so a frame's time is its chunk's render time over its frame count; a chunk set
done by hand has no render time."""

from __future__ import annotations

import sys

from farmtui.console import fmt
from farmtui.console.state import chunk_render_time
from farmtui.console.widgets.frame_grid import HEAT_COLOURS, FrameGrid
from tests.console.conftest import synced, wait_for
from tests.console.real_farm import RealFarm
from tests.console.screen import screen_text
from tests.console.test_detail import cells
from tests.helpers.farm import needs_agent

pytestmark = needs_agent

# Every chunk takes about as long, whatever its size: its frames share the time.
SAME_TIME_PER_CHUNK = [sys.executable, "-c", "import time; time.sleep(0.5)"]


def colour(grid: FrameGrid, frame: int) -> str:
    style = cells(grid)[frame][1]
    assert style.color is not None
    assert style.color.triplet is not None
    return style.color.triplet.hex


async def test_frames_are_coloured_by_their_chunks_time_over_its_frames(farm: RealFarm) -> None:
    # Chunks [1-3] [4-6] [7]; the middle one is set done by hand before anything runs.
    job = farm.submit("heat", frames="1-7", chunk=3, argv=SAME_TIME_PER_CHUNK)
    middle = next(c.index for c in farm.client.show(job.id).chunks if 4 in c.frames)
    farm.client.chunk_action(job.id, "set-done", [middle])
    farm.agents(1, slots=2)
    app = farm.app()
    async with app.run_test(size=(80, 24)) as pilot:
        await synced(pilot, app, job.id)
        await wait_for(pilot, lambda: farm.client.show(job.id).job.state == "done", 30)
        await wait_for(pilot, lambda: app.state.jobs[job.id].state == "done")
        await pilot.press("enter")
        grid = app.screen.query_one(FrameGrid)
        await wait_for(pilot, lambda: grid.has_focus)
        await pilot.press("T")
        await wait_for(pilot, lambda: "time/frame (chunk÷frames)" in screen_text(app))

        detail = farm.client.show(job.id)
        took = {c.index: chunk_render_time(c) for c in detail.chunks}
        assert took[middle] is None  # set done by hand: no render time
        per_frame = {
            frame: seconds / len(c.frames)
            for c in detail.chunks
            if (seconds := took[c.index]) is not None
            for frame in c.frames
        }
        assert sorted(per_frame) == [1, 2, 3, 7]
        # Three frames share one chunk's time, frame 7 has a chunk to itself.
        assert per_frame[7] > per_frame[1]
        legend = screen_text(app)
        low, high = fmt.duration(per_frame[1]), fmt.duration(per_frame[7])
        assert f"(chunk÷frames) {low} ■■■■■ {high}" in legend
        fastest, slowest = HEAT_COLOURS[0], HEAT_COLOURS[-1]
        assert [colour(grid, frame) for frame in (1, 2, 3)] == [fastest] * 3
        assert colour(grid, 7) == slowest
        assert [colour(grid, frame) for frame in (4, 5, 6)] == ["#606060"] * 3  # no time
