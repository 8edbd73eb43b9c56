"""Losing the leader: banner, stale marking, reconnect with backoff, full resync."""

from __future__ import annotations

from farmtui.console.widgets.status_bar import ConnectionBanner
from farmtui.protocol import JobsChanged, WatchJob
from tests.console.conftest import make_app, synced, wait_for
from tests.console.fake_leader import FakeLeader
from tests.console.screen import screen_text


async def test_leader_lost_then_back(leader: FakeLeader) -> None:
    app = make_app(leader.url)
    async with app.run_test(size=(80, 24)) as pilot:
        await synced(pilot, app)
        banner = app.screen.query_one(ConnectionBanner)
        assert not banner.display
        assert "● live" in screen_text(app)
        await leader.stop()
        await wait_for(pilot, lambda: banner.display and "unreachable" in str(banner.render()))
        await wait_for(pilot, lambda: "attempt 2" in screen_text(app), what="retrying")
        text = screen_text(app)
        assert "leader unreachable — reconnecting (attempt" in text
        assert "stale since" in text
        assert app.screen.stale
        # While away, the farm changes: j2 is renamed, j5 deleted.
        leader.set_job("j2", name="shot_020_relit")
        del leader.jobs["j5"]
        leader.queue.remove("j5")
        watches = leader.count(WatchJob)
        await leader.start()  # same port
        await wait_for(pilot, lambda: not banner.display, what="reconnected")
        assert not app.screen.stale
        assert "j5" not in app.state.jobs
        assert app.state.jobs["j2"].name == "shot_020_relit"
        assert "shot_020_relit" in screen_text(app)
        assert "● live" in screen_text(app)
        # The watched job is asked for again on the new connection.
        await wait_for(pilot, lambda: leader.count(WatchJob) > watches)
        # And live updates flow again.
        await leader.broadcast(JobsChanged(jobs=[leader.set_job("j3", state="rendering")]))
        await wait_for(pilot, lambda: app.state.jobs["j3"].state == "rendering")


async def test_actions_while_disconnected_say_so(leader: FakeLeader) -> None:
    app = make_app(leader.url)
    async with app.run_test(size=(80, 24)) as pilot:
        await synced(pilot, app)
        await leader.stop()
        await wait_for(pilot, lambda: app.screen.stale)
        await pilot.press("p")
        await pilot.pause()
        assert any("leader is unreachable" in n.message for n in app._notifications)


async def test_wrong_token_keeps_retrying_and_says_why(leader: FakeLeader) -> None:
    from farmtui.console.app import FarmConsole
    from farmtui.console.link import Backoff

    app = FarmConsole(leader.url, "wrong", backoff=Backoff(base=0.05, cap=0.1))
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: "401" in screen_text(app), what="401 shown")
        assert not app.state.synced
