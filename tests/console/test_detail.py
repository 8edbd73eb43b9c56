"""The detail view on the real leader: frame grid colours and live updates, chunk
actions, settings."""

from __future__ import annotations

import pytest
from rich.style import Style

from farmtui.console.screens.confirm import ConfirmScreen
from farmtui.console.screens.context_menu import ContextMenu
from farmtui.console.screens.edit_settings import EditSettingsScreen
from farmtui.console.screens.main import MainScreen
from farmtui.console.state import FRAME_STATES
from farmtui.console.widgets.chunk_table import ChunkTable
from farmtui.console.widgets.frame_grid import GLYPHS, GUTTER, FrameGrid
from farmtui.protocol import PatchJob, RunChunkAction
from tests.console.conftest import make_app, synced, wait_for
from tests.console.screen import screen_text
from tests.console.scripted_leader import ScriptedLeader

EXPECTED_COLOURS = {
    "unassigned": "#9ca3af",
    "assigned": "#3b82f6",
    "staged": "#15803d",
    "done": "#4ade80",
    "failed": "#ef4444",
    "held": "#d946ef",
    "excluded": "#6b7280",
}


def cells(grid: FrameGrid) -> dict[int, tuple[str, Style]]:
    """Frame number -> the glyph and style its cell is drawn with, read from rendered strips."""
    assert grid.watched is not None
    columns = grid.columns
    found: dict[int, tuple[str, Style]] = {}
    glyphs = set(GLYPHS.values())
    for y in range(grid.size.height):
        strip = grid.render_line(y)
        x = 0
        for segment in strip:
            for offset in range(len(segment.text)):
                cell = x + offset
                char = segment.text[offset]
                if cell >= GUTTER and (cell - GUTTER) % 2 == 0 and char in glyphs:
                    i = (int(grid.scroll_y) + y) * columns + (cell - GUTTER) // 2
                    found[grid.watched.frames[i]] = (char, segment.style or Style())
            x += len(segment.text)
    return found


def cell_styles(grid: FrameGrid) -> dict[int, Style]:
    return {frame: style for frame, (_, style) in cells(grid).items()}


async def open_detail(pilot: object, app: object) -> None:
    await synced(pilot, app)  # type: ignore[arg-type]
    await pilot.press("enter")  # type: ignore[attr-defined]
    await pilot.pause()  # type: ignore[attr-defined]


async def test_frame_grid_colours_every_state(leader: ScriptedLeader) -> None:
    app = make_app(leader)
    async with app.run_test(size=(80, 24)) as pilot:
        await open_detail(pilot, app)
        grid = app.screen.query_one(FrameGrid)
        drawn = cells(grid)
        assert len(drawn) == 100
        # Each frame as the leader has it; j1 holds every state.
        layout = {int(f): state for f, state in leader.detail("j1").frame_states.items()}
        assert set(layout.values()) == set(FRAME_STATES)
        for frame, state in layout.items():
            glyph, style = drawn[frame]
            assert glyph == GLYPHS[state], (frame, state)
            assert style.color is not None
            assert style.color.triplet is not None
            assert style.color.triplet.hex == EXPECTED_COLOURS[state], (frame, state)
        # Every state differs from every other in glyph and in colour, not colour alone.
        assert len(set(GLYPHS.values())) == len(FRAME_STATES)
        assert len(set(EXPECTED_COLOURS.values())) == len(FRAME_STATES)
        # One component class per state, and a one-line legend naming each with its count.
        for state in FRAME_STATES:
            assert f"frame-grid--{state}" in FrameGrid.COMPONENT_CLASSES
        text = screen_text(app)
        assert "■done 30  ▪stgd 5  ▸rend 5  ✗fail 10  ‖held 10  ─excl 10  □wait 30" in text


async def test_frames_changed_reaches_the_grid_and_refreshes_only_those_cells(
    leader: ScriptedLeader,
) -> None:
    app = make_app(leader)
    async with app.run_test(size=(80, 24)) as pilot:
        await open_detail(pilot, app)
        grid = app.screen.query_one(FrameGrid)
        regions: list[object] = []
        original = grid.refresh

        def spy(*args: object, **kwargs: object) -> object:
            regions.extend(args)
            return original(*args, **kwargs)  # type: ignore[arg-type]

        grid.refresh = spy  # type: ignore[method-assign]
        leader.stage("j1", 3, [36, 37, 38])  # node-a writes three more frames of chunk 3
        await wait_for(pilot, lambda: app.state.watched.state_of(38) == "staged")  # type: ignore[union-attr]
        await pilot.pause()
        assert regions, "the grid repainted nothing"
        assert all(getattr(r, "height", 99) == 1 for r in regions)
        assert cell_styles(grid)[37].color.triplet.hex == "#15803d"  # type: ignore[union-attr]
        # The legend's counts follow within its (throttled) period.
        await wait_for(pilot, lambda: "▪stgd 8  ▸rend 2" in screen_text(app))


async def test_frame_grid_scrolls_a_big_job(leader: ScriptedLeader) -> None:
    leader.submit("j7", "big_sim", "erin", frames="1-20000", chunk=100, priority=5, tags=["none"])
    app = make_app(leader)
    async with app.run_test(size=(80, 24)) as pilot:
        await synced(pilot, app, "j7")  # first in dispatch order
        await pilot.press("enter")
        await pilot.pause()
        grid = app.screen.query_one(FrameGrid)
        assert grid.virtual_size.height == -(-20000 // grid.columns)
        await pilot.press("end")
        await pilot.pause()
        assert grid.scroll_y > 0
        assert "20000" in screen_text(app) or "19" in screen_text(app)


@pytest.mark.parametrize(
    ("key", "action", "frame_state", "asks"),
    [
        ("r", "retry", "unassigned", False),
        ("h", "hold", "held", False),
        ("F", "set-failed", "failed", True),
        ("d", "set-done", "done", True),
        ("e", "exclude", "excluded", True),
    ],
)
async def test_chunk_action_keys(
    leader: ScriptedLeader, key: str, action: str, frame_state: str, asks: bool
) -> None:
    app = make_app(leader)
    async with app.run_test(size=(80, 24)) as pilot:
        await open_detail(pilot, app)
        await pilot.press("t")  # Chunks tab
        table = app.screen.query_one(ChunkTable)
        assert table.has_focus
        await pilot.press(*["down"] * 7)  # chunk 7 (frames 71-80), waiting
        assert table.cursor_key == "7"
        await pilot.press("k")  # chunk action mode, then the action's key
        await wait_for(
            pilot, lambda: "CHUNK ACTION on chunk 7 of shot_010_comp" in screen_text(app)
        )
        await pilot.press(key)
        if asks:  # costly: nothing is sent before the operator says yes
            await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen))
            assert leader.count(RunChunkAction) == 0
            await pilot.press("y")
        await wait_for(pilot, lambda: leader.count(RunChunkAction) == 1)
        assert isinstance(app.screen, MainScreen)
        sent = leader.last(RunChunkAction)
        assert isinstance(sent, RunChunkAction)
        assert (sent.action, sent.job_id, sent.chunks) == (action, "j1", [7])
        watched = app.state.watched
        assert watched is not None
        await wait_for(pilot, lambda: watched.state_of(75) == frame_state)
        assert leader.detail("j1").frame_states["75"] == frame_state


async def test_chunk_multi_select_and_context_menu(leader: ScriptedLeader) -> None:
    app = make_app(leader)
    async with app.run_test(size=(80, 24)) as pilot:
        await open_detail(pilot, app)
        await pilot.press("t", "space", "down", "space")
        await pilot.press("k", "h")
        await wait_for(pilot, lambda: leader.count(RunChunkAction) == 1)
        sent = leader.last(RunChunkAction)
        assert isinstance(sent, RunChunkAction)
        assert sent.chunks == [0, 1]
        assert leader.detail("j1").chunks[1].state == "done"  # a done chunk is not held
        await pilot.press("down", "m")
        await wait_for(pilot, lambda: isinstance(app.screen, ContextMenu))
        assert "Set failed" in screen_text(app)
        await pilot.press("down", "down", "down", "down", "enter")  # Exclude
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        await pilot.press("y")
        await wait_for(pilot, lambda: leader.count(RunChunkAction) == 2)
        sent = leader.last(RunChunkAction)
        assert isinstance(sent, RunChunkAction)
        assert sent.action == "exclude"
        assert sent.chunks == [2]
        await wait_for(pilot, lambda: leader.detail("j1").chunks[2].state == "excluded")


async def test_edit_settings_sends_patch(leader: ScriptedLeader) -> None:
    app = make_app(leader)
    async with app.run_test(size=(80, 24)) as pilot:
        await open_detail(pilot, app)
        await pilot.press("t", "t")  # Settings tab
        text = screen_text(app)
        assert "Max render" in text
        assert "1h00m" in text
        await pilot.press("e")
        await wait_for(pilot, lambda: isinstance(app.screen, EditSettingsScreen))
        await pilot.click("#edit-retries")
        await pilot.press("end", "backspace", "backspace", "backspace", "7")
        await pilot.click("#edit-max-start")
        await pilot.press(*"5m")
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: leader.count(PatchJob) == 1)
        sent = leader.last(PatchJob)
        assert isinstance(sent, PatchJob)
        assert sent.patch.retries == 7
        assert sent.patch.timeouts is not None
        assert sent.patch.timeouts.max_start == 300
        await wait_for(pilot, lambda: app.state.jobs["j1"].spec.retries == 7)
        spec = leader.job("j1").spec
        assert spec.retries == 7
        assert spec.timeouts.max_start == 300
