"""The navigable frame grid: a cursor, Enter to the frame's chunk and its attempts,
selected frames' chunks retried or held through ``k``, a render-time heat map
with its scale, and a held job's frames drawn held."""

from __future__ import annotations

from farmtui.console.screens.confirm import ConfirmScreen
from farmtui.console.widgets.chunk_table import ChunkTable
from farmtui.console.widgets.frame_grid import GLYPHS, HEAT_COLOURS, FrameGrid
from farmtui.protocol import RunChunkAction
from tests.console.conftest import make_app, synced, wait_for
from tests.console.screen import screen_text
from tests.console.scripted_leader import ScriptedLeader
from tests.console.test_detail import cells


async def open_grid(pilot: object, app: object) -> FrameGrid:
    await synced(pilot, app)  # type: ignore[arg-type]
    await pilot.press("enter")  # type: ignore[attr-defined]
    await pilot.pause()  # type: ignore[attr-defined]
    grid = app.screen.query_one(FrameGrid)  # type: ignore[attr-defined]
    assert isinstance(grid, FrameGrid)
    assert grid.has_focus
    return grid


async def test_the_cursor_moves_over_frames_and_enter_opens_its_chunk(
    leader: ScriptedLeader,
) -> None:
    # Chunk 4 (frames 41-50): attempt 1 failed; retried, attempt 2 runs once chunk 3 is done.
    leader.chunk_action("j1", "retry", [4])
    leader.finish("j1", 3)
    assert leader.running("j1", 4) == ("node-a", 2)
    app = make_app(leader)
    async with app.run_test(size=(80, 24)) as pilot:
        grid = await open_grid(pilot, app)
        assert grid.cursor_frame == 1
        # The cursor cell is drawn reversed.
        first = grid.render_line(0)
        assert any(seg.style and seg.style.reverse for seg in first if seg.text.strip())
        columns = grid.columns
        await pilot.press("right", "right", "down")
        assert grid.cursor_frame == 3 + columns
        await pilot.press("home")
        await pilot.press(*["right"] * 43)  # frame 44, in chunk 4
        assert grid.cursor_frame == 44
        await pilot.press("enter")
        await pilot.pause()
        table = app.screen.query_one(ChunkTable)
        assert table.has_focus
        assert table.cursor_key == "4"
        text = screen_text(app)
        assert "chunk 4 frames 41-50" in text
        assert text.index("#2 node-a") < text.index("#1 node-a")  # newest attempt first
        assert "failed exit 1" in text


async def test_selected_frames_are_retried_or_held_through_their_chunks(
    leader: ScriptedLeader,
) -> None:
    app = make_app(leader)
    async with app.run_test(size=(80, 24)) as pilot:
        grid = await open_grid(pilot, app)
        await pilot.press("end")
        assert grid.cursor_frame == 100
        await pilot.press("space")  # frame 100: chunk 9
        await pilot.press("home", *["right"] * 69)  # frame 70: chunk 6 (excluded)
        await pilot.press("shift+right", "shift+right")  # 70-72: chunks 6 and 7
        assert grid.target_frames() == [70, 71, 72]
        await pilot.press("k")
        await wait_for(pilot, lambda: "CHUNK ACTION on chunks 6, 7 of" in screen_text(app))
        await pilot.press("h")
        await wait_for(pilot, lambda: leader.count(RunChunkAction) == 1)
        sent = leader.last(RunChunkAction)
        assert isinstance(sent, RunChunkAction)
        assert (sent.action, sent.chunks) == ("hold", [6, 7])
        await wait_for(pilot, lambda: cells(grid)[75][0] == GLYPHS["held"])
        assert cells(grid)[65][0] == GLYPHS["excluded"]  # the leader holds no excluded chunk
        # Space on 100 was dropped by shift+arrows: the range is the selection. Add it back.
        await pilot.press("end", "space", "k", "r")
        await wait_for(pilot, lambda: leader.count(RunChunkAction) == 2)
        sent = leader.last(RunChunkAction)
        assert isinstance(sent, RunChunkAction)
        assert (sent.action, sent.chunks) == ("retry", [6, 7, 9])
        await wait_for(pilot, lambda: cells(grid)[75][0] == GLYPHS["unassigned"])
        assert leader.detail("j1").chunks[6].state == "queued"  # excluded no more
        # A costly one asks first.
        await pilot.press("k", "d")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        await pilot.press("n")
        await pilot.pause()
        assert leader.count(RunChunkAction) == 2
        # Esc clears the selection; the cursor frame alone is the target then.
        await pilot.press("escape")
        assert grid.selected == set()
        assert grid.target_frames() == [100]


async def test_heat_map_colours_frames_by_render_time_with_its_scale(
    leader: ScriptedLeader,
) -> None:
    # Chunks of 10 frames: chunk 0 took 20 s (2 s a frame), 1 took 42 s, 2 took 100 s (10 s).
    app = make_app(leader)
    async with app.run_test(size=(80, 24)) as pilot:
        grid = await open_grid(pilot, app)
        assert "render time" not in screen_text(app)
        await pilot.press("T")
        await wait_for(pilot, lambda: "time/frame (chunk÷frames) 2s" in screen_text(app))
        assert "10s" in screen_text(app)
        drawn = cells(grid)
        fastest, slowest = HEAT_COLOURS[0], HEAT_COLOURS[-1]
        assert drawn[5][1].color.triplet.hex == fastest  # type: ignore[union-attr]
        assert drawn[25][1].color.triplet.hex == slowest  # type: ignore[union-attr]
        assert drawn[15][1].color.triplet.hex not in (fastest, slowest)  # type: ignore[union-attr]
        # Frames with no time keep their state's glyph, in the "not done" grey.
        assert drawn[80][0] == GLYPHS["unassigned"]
        assert drawn[80][1].color.triplet.hex == "#606060"  # type: ignore[union-attr]
        # A chunk finishing moves the scale.
        leader.finish("j1", 3, took=300)
        await wait_for(pilot, lambda: "30s" in screen_text(app))
        await pilot.press("T")
        await wait_for(pilot, lambda: "■done 40" in screen_text(app))


async def test_a_held_job_shows_its_waiting_frames_as_held(leader: ScriptedLeader) -> None:
    app = make_app(leader)
    async with app.run_test(size=(80, 24)) as pilot:
        grid = await open_grid(pilot, app)
        assert cells(grid)[80][0] == GLYPHS["unassigned"]
        leader.action("hold", ["j1"])
        await wait_for(pilot, lambda: cells(grid)[80][0] == GLYPHS["held"])
        held = cells(grid)[80][1].color
        assert held is not None
        assert held.triplet is not None
        assert held.triplet.hex == "#d946ef"
        assert cells(grid)[1][0] == GLYPHS["done"]  # done frames stay done
        assert "‖held 40" in screen_text(app)  # 10 held + 30 waiting
        assert "(job held)" in screen_text(app)


async def test_frames_in_chunks_the_console_never_loaded_are_refused_not_dropped(
    leader: ScriptedLeader, monkeypatch: object
) -> None:
    """A job of more chunks than a page: the console knows the first page. ``k`` on
    frames picked past it acted on the loaded chunks alone, and Enter there did
    nothing, silently (break round 27a: ``ctrl+a`` on a million frames)."""
    import pytest

    assert isinstance(monkeypatch, pytest.MonkeyPatch)
    monkeypatch.setattr("server.console_link.MAX_PAGE_CHUNKS", 5)  # frames 1-50 of j1
    app = make_app(leader)
    async with app.run_test(size=(80, 24)) as pilot:
        grid = await open_grid(pilot, app)
        await pilot.press("end")
        assert grid.cursor_frame == 100
        await pilot.press("space", "home", "space")  # frames 1 and 100
        await pilot.press("k")
        await pilot.pause()
        assert not isinstance(app.screen, ConfirmScreen)
        notices = [n.message for n in app._notifications]
        assert any("1 of the picked frames are in chunks" in n for n in notices), notices
        assert leader.count(RunChunkAction) == 0
        await pilot.press("end", "enter")
        await pilot.pause()
        notices = [n.message for n in app._notifications]
        assert any("Frame 100 is in a chunk this console has not loaded" in n for n in notices)
