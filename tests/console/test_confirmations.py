"""Costly actions ask first and say what they cost; cheap ones stay one key (issue 11, defect 4)."""

from __future__ import annotations

import re

import pytest

from farmtui.console.app import FarmConsole
from farmtui.console.confirmations import about
from farmtui.console.screens.confirm import ConfirmScreen
from farmtui.console.screens.main import MainScreen
from farmtui.protocol import RunChunkAction, RunJobAction
from tests.console.conftest import make_app, synced, wait_for
from tests.console.screen import screen_text
from tests.console.scripted_leader import NOW, ScriptedLeader


def asking(app: FarmConsole) -> bool:
    return isinstance(app.screen, ConfirmScreen)


def cost_shown(app: FarmConsole) -> str:
    """What the dialog says, one line (the cost wraps at 80 columns)."""
    parts = [str(widget.render()) for widget in app.screen.query("#confirm-dialog Static")]
    return " ".join(" ".join(parts).split())


@pytest.mark.parametrize(
    ("seconds", "said"),
    [(40, "40 s"), (125, "2 min"), (4800, "1 h 20"), (7200, "2 h"), (93600, "1 d 2 h")],
)
def test_farm_time_is_said_as_an_operator_says_it(seconds: float, said: str) -> None:
    assert about(seconds) == said


async def test_requeue_states_the_frames_and_farm_time_it_costs(leader: ScriptedLeader) -> None:
    # j1: 30 frames done in chunks of 10 that took 20, 42 and 100 s: 30 x 5.4 s ≈ 3 min.
    assert leader.job("j1").stats.mean_render == 54.0
    app = make_app(leader)
    async with app.run_test(size=(80, 24)) as pilot:
        await synced(pilot, app)
        await pilot.press("space", "down", "space", "q")  # j1 and j2 (nothing done)
        await wait_for(pilot, lambda: asking(app), what="the question")
        text = cost_shown(app)
        assert "Requeue 2 jobs?" in text
        assert "Requeue re-renders 30 done frames ≈ 3 min of farm time" in text
        assert "restarts 1 chunk on a node from scratch" in text
        await pilot.press("escape")
        await wait_for(pilot, lambda: isinstance(app.screen, MainScreen))
        assert leader.count(RunJobAction) == 0
        assert leader.job("j1").stats.frames_done == 30
        # Enter presses Keep: an Escape merged with a following Enter arrives as Enter.
        await pilot.press("q")
        await wait_for(pilot, lambda: asking(app), what="the question again")
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, MainScreen))
        # Esc then x typed quickly reach the console as alt+x: that is the Escape.
        await pilot.press("q")
        await wait_for(pilot, lambda: asking(app), what="the question a third time")
        await pilot.press("alt+x")
        await wait_for(pilot, lambda: isinstance(app.screen, MainScreen))
        assert leader.count(RunJobAction) == 0
        await pilot.press("q")
        await wait_for(pilot, lambda: asking(app), what="the question a fourth time")
        await pilot.press("y")
        await wait_for(pilot, lambda: leader.count(RunJobAction) == 1)
        sent = leader.last(RunJobAction)
        assert isinstance(sent, RunJobAction)
        assert (sent.action, sent.job_ids) == ("requeue", ["j1", "j2"])
        assert leader.job("j1").stats.frames_done == 0  # the cost the dialog named


async def test_requeue_without_render_times_says_unknown_time(leader: ScriptedLeader) -> None:
    leader.chunk_action("j2", "set-done", [0])  # 5 frames done by hand, never timed
    assert leader.job("j2").stats.mean_render is None
    app = make_app(leader)
    async with app.run_test(size=(80, 24)) as pilot:
        await synced(pilot, app)
        await pilot.press("down", "q")  # j2
        await wait_for(pilot, lambda: asking(app), what="the question")
        text = cost_shown(app)
        assert "Requeue re-renders 5 done frames (unknown time" in text
        assert "shot_020_light" in text


async def test_complete_states_the_frames_it_skips(leader: ScriptedLeader) -> None:
    app = make_app(leader)
    async with app.run_test(size=(80, 24)) as pilot:
        await synced(pilot, app)
        await pilot.press("down", "x")  # j2: 0 of 50 frames done
        await wait_for(pilot, lambda: asking(app), what="the question")
        assert "Complete marks 50 frames done that were never rendered" in cost_shown(app)
        await pilot.press("n")
        await wait_for(pilot, lambda: isinstance(app.screen, MainScreen))
        assert leader.count(RunJobAction) == 0
        assert leader.job("j2").state == "queued"
        await pilot.press("x", "y")
        await wait_for(pilot, lambda: app.state.jobs["j2"].state == "done")
        assert leader.job("j2").stats.frames_done == 50


async def test_a_chunk_action_states_the_render_it_kills(leader: ScriptedLeader) -> None:
    app = make_app(leader)
    async with app.run_test(size=(80, 24)) as pilot:
        await synced(pilot, app)
        # Chunk 3 of j1 (frames 31-40) renders on node-a since the leader dispatched it.
        started = leader.detail("j1").chunks[3].started
        assert started is not None
        await pilot.press("enter", "t", "down", "down", "down", "k", "d")
        await wait_for(pilot, lambda: asking(app), what="the question")
        text = cost_shown(app)
        assert "Set done 1 chunk of shot_010_comp?" in text
        assert re.search(r"Set done marks \d+ frames done that were never rendered", text)
        assert f"kills chunk 3 after {about(NOW - started)} of rendering on node-a" in text
        await pilot.press("escape")
        await wait_for(pilot, lambda: isinstance(app.screen, MainScreen))
        assert leader.count(RunChunkAction) == 0
        assert leader.detail("j1").chunks[3].state == "assigned"
        # Holding a running chunk kills it: asked too (it was one key, without a word).
        await pilot.press("k", "h")
        await wait_for(pilot, lambda: asking(app), what="the hold's question")
        text = cost_shown(app)
        assert "Hold keeps 10 frames from rendering until retried" in text
        assert "kills chunk 3 after" in text
        await pilot.press("y")
        await wait_for(pilot, lambda: leader.count(RunChunkAction) == 1)
        assert leader.detail("j1").chunks[3].state == "held"
        # Retrying a failed chunk touches no work: sent at once, no question.
        await pilot.press("down", "k", "r")
        await wait_for(pilot, lambda: leader.count(RunChunkAction) == 2)
        assert not asking(app)
        # Retrying a done chunk renders it again: asked, with the frames it re-renders.
        await pilot.press("up", "up", "up", "up", "k", "r")
        await wait_for(pilot, lambda: asking(app), what="the retry's question")
        assert "Retry re-renders 10 done frames" in cost_shown(app)
        await pilot.press("n")
        await wait_for(pilot, lambda: isinstance(app.screen, MainScreen))
        assert leader.count(RunChunkAction) == 2
        assert leader.detail("j1").chunks[0].state == "done"


async def test_quitting_a_rendering_local_farm_asks_first(leader: ScriptedLeader) -> None:
    app = make_app(leader, local_farm=True)
    async with app.run_test(size=(80, 24)) as pilot:
        await synced(pilot, app, watched=None)
        await pilot.press("ctrl+q")
        await wait_for(pilot, lambda: asking(app), what="the question")
        assert "Stop the local farm? 1 chunk is rendering" in screen_text(app)
        await pilot.press("n")
        await wait_for(pilot, lambda: isinstance(app.screen, MainScreen))
        assert app.return_code is None
        await pilot.press("ctrl+q")
        await wait_for(pilot, lambda: asking(app), what="the question again")
        await pilot.press("y")
        await wait_for(pilot, lambda: app.return_code == 0, what="the console to quit")


async def test_quitting_an_idle_local_farm_or_a_remote_console_just_quits(
    leader: ScriptedLeader,
) -> None:
    app = make_app(leader)  # a console attached to a leader elsewhere
    async with app.run_test(size=(80, 24)) as pilot:
        await synced(pilot, app, watched=None)
        await pilot.press("ctrl+q")
        await wait_for(pilot, lambda: app.return_code == 0, what="the console to quit")
    # j1 paused, then its last chunk ends: nothing renders.
    leader.action("pause", ["j1"])
    leader.finish("j1", 3)
    assert leader.node("node-a").running == []
    app = make_app(leader, local_farm=True)
    async with app.run_test(size=(80, 24)) as pilot:
        await synced(pilot, app, watched=None)
        await pilot.press("ctrl+q")
        await wait_for(pilot, lambda: app.return_code == 0, what="the console to quit")


async def test_enter_never_confirms_even_after_tab(leader: ScriptedLeader) -> None:
    """A terminal sends Esc followed at once by Enter as a bare Enter: after a Tab,
    Esc+Enter cancelled the job. The costly button never takes the keyboard focus."""
    app = make_app(leader)
    async with app.run_test(size=(80, 24)) as pilot:
        await synced(pilot, app)
        await pilot.press("c")
        await wait_for(pilot, lambda: asking(app), what="the question")
        await pilot.press("tab", "enter")
        await wait_for(pilot, lambda: isinstance(app.screen, MainScreen))
        assert leader.count(RunJobAction) == 0
        assert leader.job("j1").state == "rendering"
