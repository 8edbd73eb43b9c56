"""Costly actions ask first and say what they cost; cheap ones stay one key (issue 11, defect 4)."""

from __future__ import annotations

import msgspec
import pytest

from farmtui.console.app import FarmConsole
from farmtui.console.confirmations import about
from farmtui.console.screens.confirm import ConfirmScreen
from farmtui.console.screens.main import MainScreen
from farmtui.protocol import RunChunkAction, RunJobAction
from tests.console.conftest import make_app, synced, wait_for
from tests.console.fake_leader import FakeLeader
from tests.console.screen import screen_text


def asking(app: FarmConsole) -> bool:
    return isinstance(app.screen, ConfirmScreen)


def cost_shown(app: FarmConsole) -> str:
    """What the dialog says, one line (the cost wraps at 80 columns)."""
    parts = [str(widget.render()) for widget in app.screen.query("#confirm-dialog Static")]
    return " ".join(" ".join(parts).split())


def set_stats(leader: FakeLeader, job_id: str, **stats: object) -> None:
    job = leader.jobs[job_id]
    leader.set_job(job_id, stats=msgspec.structs.replace(job.stats, **stats))


@pytest.mark.parametrize(
    ("seconds", "said"),
    [(40, "40 s"), (125, "2 min"), (4800, "1 h 20"), (7200, "2 h"), (93600, "1 d 2 h")],
)
def test_farm_time_is_said_as_an_operator_says_it(seconds: float, said: str) -> None:
    assert about(seconds) == said


async def test_requeue_states_the_frames_and_farm_time_it_costs(leader: FakeLeader) -> None:
    # 400 frames done at 120 s per chunk of 10 frames: 400 x 12 s = 1 h 20.
    set_stats(leader, "j1", frames_done=400, frames_total=1000, mean_render=120.0)
    app = make_app(leader.url)
    async with app.run_test(size=(80, 24)) as pilot:
        await synced(pilot, app)
        await pilot.press("space", "down", "space", "q")  # j1 and j2 (nothing done)
        await wait_for(pilot, lambda: asking(app), what="the question")
        text = cost_shown(app)
        assert "Requeue 2 jobs?" in text
        assert "Requeue re-renders 400 done frames ≈ 1 h 20 of farm time" in text
        assert "restarts 1 running chunk" in text
        await pilot.press("escape")
        await wait_for(pilot, lambda: isinstance(app.screen, MainScreen))
        assert leader.count(RunJobAction) == 0
        assert app.state.jobs["j1"].state == "rendering"
        await pilot.press("q", "enter")
        await wait_for(pilot, lambda: leader.count(RunJobAction) == 1)
        sent = leader.last(RunJobAction)
        assert isinstance(sent, RunJobAction)
        assert (sent.action, sent.job_ids) == ("requeue", ["j1", "j2"])


async def test_requeue_without_render_times_says_unknown_time(leader: FakeLeader) -> None:
    set_stats(leader, "j4", mean_render=None)  # 10 frames done, never timed
    app = make_app(leader.url)
    async with app.run_test(size=(80, 24)) as pilot:
        await synced(pilot, app)
        await pilot.press("down", "down", "down", "q")  # j4
        await wait_for(pilot, lambda: asking(app), what="the question")
        text = cost_shown(app)
        assert "Requeue re-renders 10 done frames (unknown time" in text
        assert "shot_040_anim" in text


async def test_complete_states_the_frames_it_skips(leader: FakeLeader) -> None:
    app = make_app(leader.url)
    async with app.run_test(size=(80, 24)) as pilot:
        await synced(pilot, app)
        await pilot.press("down", "x")  # j2: 0 of 50 frames done
        await wait_for(pilot, lambda: asking(app), what="the question")
        assert "Complete marks 50 frames done that were never rendered" in cost_shown(app)
        await pilot.press("n")
        await wait_for(pilot, lambda: isinstance(app.screen, MainScreen))
        assert leader.count(RunJobAction) == 0
        await pilot.press("x", "y")
        await wait_for(pilot, lambda: app.state.jobs["j2"].state == "done")


async def test_a_chunk_action_states_the_render_it_kills(leader: FakeLeader) -> None:
    app = make_app(leader.url)
    async with app.run_test(size=(80, 24)) as pilot:
        await synced(pilot, app)
        # Chunk 4 of j1 (frames 31-40) has rendered on node-a for 10 minutes.
        await pilot.press("enter", "t", "down", "down", "down", "k", "d")
        await wait_for(pilot, lambda: asking(app), what="the question")
        text = cost_shown(app)
        assert "Set done 1 chunk of shot_010_comp?" in text
        assert "Set done marks 10 frames done that were never rendered" in text
        assert "kills chunk 4 after 10 min of rendering on node-a" in text
        await pilot.press("escape")
        await wait_for(pilot, lambda: isinstance(app.screen, MainScreen))
        assert leader.count(RunChunkAction) == 0
        watched = app.state.watched
        assert watched is not None
        assert watched.chunks[4].state == "assigned"
        # Retry and hold are cheap: sent at once, no question.
        await pilot.press("k", "h")
        await wait_for(pilot, lambda: leader.count(RunChunkAction) == 1)
        assert not asking(app)


async def test_quitting_a_rendering_local_farm_asks_first(leader: FakeLeader) -> None:
    app = make_app(leader.url, local_farm=True)
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
        await pilot.press("enter")
        await wait_for(pilot, lambda: app.return_code == 0, what="the console to quit")


async def test_quitting_an_idle_local_farm_or_a_remote_console_just_quits(
    leader: FakeLeader,
) -> None:
    app = make_app(leader.url)  # a console attached to a leader elsewhere
    async with app.run_test(size=(80, 24)) as pilot:
        await synced(pilot, app, watched=None)
        await pilot.press("ctrl+q")
        await wait_for(pilot, lambda: app.return_code == 0, what="the console to quit")
    leader.nodes["node-a"] = msgspec.structs.replace(leader.nodes["node-a"], running=[])
    app = make_app(leader.url, local_farm=True)
    async with app.run_test(size=(80, 24)) as pilot:
        await synced(pilot, app, watched=None)
        await pilot.press("ctrl+q")
        await wait_for(pilot, lambda: app.return_code == 0, what="the console to quit")
