"""History: the Monitor Log back-filled from the leader (after reconnects too), searched
with ``/``, long lines wrapped; a job's event log in the detail view's Events tab."""

from __future__ import annotations

from farmtui.console.widgets.job_detail import JobDetailPanel
from farmtui.console.widgets.logs_panel import LogsPanel
from farmtui.protocol import EventView, FetchEvents
from tests.console.conftest import make_app, synced, wait_for
from tests.console.fake_leader import T0, FakeLeader
from tests.console.screen import screen_text


def monitor(app: object) -> str:
    return "\n".join(app.screen.query_one(LogsPanel).monitor_lines())  # type: ignore[attr-defined]


def past(leader: FakeLeader, text: str, job_id: str | None = None, at: float = T0) -> None:
    leader.history.append(EventView(time=at, level="warn", text=text, job_id=job_id))


async def test_backfilled_with_job_names_and_again_after_a_reconnect(leader: FakeLeader) -> None:
    past(leader, "chunk 3 failed on node-b", "j3", T0 - 60)
    past(leader, "node node-c disabled", None, T0 - 30)
    app = make_app(leader.url)
    async with app.run_test(size=(80, 24)) as pilot:
        await synced(pilot, app)
        await pilot.press("3")
        await wait_for(pilot, lambda: "chunk 3 failed" in monitor(app), what="back-fill")
        assert "shot_030_fx chunk 3 failed on node-b" in monitor(app)  # a name, not j3
        assert "node node-c disabled" in monitor(app)
        await leader.stop()
        await wait_for(pilot, lambda: app.screen.stale, what="lost")
        past(leader, "job shot_040_anim paused", "j4", T0 + 10)  # while the console was away
        await leader.start()
        await wait_for(pilot, lambda: "shot_040_anim job" in monitor(app), what="back-fill 2")
        assert leader.count(FetchEvents) == 2
        assert monitor(app).count("chunk 3 failed on node-b") == 1  # kept once
        assert "shot_040_anim job shot_040_anim paused" in screen_text(app)


async def test_slash_searches_the_monitor_log_and_esc_clears(leader: FakeLeader) -> None:
    past(leader, "chunk 3 failed on node-b", "j3")
    past(leader, "node node-c disabled")
    app = make_app(leader.url)
    async with app.run_test(size=(80, 24)) as pilot:
        await synced(pilot, app)
        await pilot.press("3")
        await wait_for(pilot, lambda: "node-c disabled" in monitor(app), what="back-fill")
        await pilot.press("slash")
        await pilot.press(*"node-b")
        await pilot.pause()
        assert "chunk 3 failed on node-b" in monitor(app)
        assert "node-c disabled" not in monitor(app)
        assert "node-c disabled" not in screen_text(app)
        await pilot.press("enter")  # keeps the search
        assert "node-c disabled" not in monitor(app)
        await pilot.press("escape")
        await pilot.pause()
        assert "node-c disabled" in monitor(app)
        assert app.screen.view == "logs"


async def test_long_lines_wrap(leader: FakeLeader) -> None:
    past(leader, "begin " + "x" * 120 + " the end of it")
    app = make_app(leader.url)
    async with app.run_test(size=(80, 24)) as pilot:
        await synced(pilot, app)
        await pilot.press("3")
        await wait_for(pilot, lambda: "the end of it" in screen_text(app), what="wrapped tail")
        assert "begin" in screen_text(app)


async def test_events_tab_loads_the_jobs_log_and_appends_live(leader: FakeLeader) -> None:
    past(leader, "chunk 3 failed on node-b", "j3")
    past(leader, "something about j1", "j1")
    app = make_app(leader.url)
    async with app.run_test(size=(80, 24)) as pilot:
        await synced(pilot, app)
        app.screen.jobs.move_cursor_to_key("j3")
        await pilot.press("enter")
        await synced(pilot, app, watched="j3")
        await pilot.press("t", "t", "t")  # Chunks, Settings, Events
        await wait_for(pilot, lambda: leader.count(FetchEvents) == 2, what="job events asked")
        sent = leader.last(FetchEvents)
        assert isinstance(sent, FetchEvents)
        assert sent.job_id == "j3"
        detail = app.screen.query_one(JobDetailPanel)
        await wait_for(pilot, lambda: detail.event_lines(), what="events shown")
        assert "chunk 3 failed on node-b" in "\n".join(detail.event_lines())
        assert "something about j1" not in "\n".join(detail.event_lines())
        await leader.add_event("chunk 3 retried by alice", "j3")
        await leader.add_event("j1 news", "j1")
        await wait_for(pilot, lambda: "retried" in "\n".join(detail.event_lines()))
        assert "j1 news" not in "\n".join(detail.event_lines())
        assert "chunk 3 retried by alice" in screen_text(app)
