"""History: the Monitor Log back-filled from the real leader's event logs (after reconnects
too), searched
with ``/``, long lines wrapped; a job's event log in the detail view's Events tab."""

from __future__ import annotations

from farmtui.console.widgets.job_detail import JobDetailPanel
from farmtui.console.widgets.logs_panel import LogsPanel
from farmtui.protocol import FetchEvents
from tests.console.conftest import make_app, synced, wait_for
from tests.console.screen import screen_text
from tests.console.scripted_leader import ScriptedLeader


def monitor(app: object) -> str:
    return "\n".join(app.screen.query_one(LogsPanel).monitor_lines())  # type: ignore[attr-defined]


FAILED_J3 = "chunk 3 attempt 1 failed on node-b"  # the rest of the line wraps


async def test_backfilled_with_job_names_and_again_after_a_reconnect(
    leader: ScriptedLeader,
) -> None:
    leader.open_gate()
    app = make_app(leader)
    async with app.run_test(size=(80, 24)) as pilot:
        await synced(pilot, app)
        await pilot.press("3")
        await wait_for(pilot, lambda: FAILED_J3 in monitor(app), what="back-fill")
        assert f"shot_030_fx {FAILED_J3}" in monitor(app)  # a name, not j3
        assert "node node-c disabled" in monitor(app)
        leader.cut()
        await wait_for(pilot, lambda: app.screen.stale, what="lost")
        leader.action("resume", ["j4"])  # while the console was away
        leader.mend()
        await wait_for(pilot, lambda: "shot_040_anim resumed" in monitor(app), what="back-fill 2")
        assert leader.count(FetchEvents) == 2
        assert monitor(app).count(FAILED_J3) == 1  # kept once
        assert "shot_040_anim resumed" in monitor(app)


async def test_slash_searches_the_monitor_log_and_esc_clears(leader: ScriptedLeader) -> None:
    app = make_app(leader)
    async with app.run_test(size=(80, 24)) as pilot:
        await synced(pilot, app)
        await pilot.press("3")
        await wait_for(pilot, lambda: "node-c disabled" in monitor(app), what="back-fill")
        await pilot.press("slash")
        await pilot.press(*"node-b")
        # Applied once the typing stops (each keystroke redrew the log before).
        await wait_for(pilot, lambda: "node-c disabled" not in monitor(app), what="search")
        assert FAILED_J3 in monitor(app)
        assert "node-c disabled" not in screen_text(app)
        await pilot.press("enter")  # keeps the search
        assert "node-c disabled" not in monitor(app)
        await pilot.press("escape")
        await pilot.pause()
        assert "node-c disabled" in monitor(app)
        assert app.screen.view == "logs"


async def test_long_lines_wrap(leader: ScriptedLeader) -> None:
    app = make_app(leader)
    async with app.run_test(size=(80, 24)) as pilot:
        await synced(pilot, app)
        await pilot.press("3")
        # The real failure line is longer than the panel: its end wraps onto the next row.
        await wait_for(pilot, lambda: "out of retries (0)" in screen_text(app), what="tail")
        row = next(line for line in screen_text(app).splitlines() if "failed on node-a" in line)
        assert "out of retries" not in row


async def test_events_tab_loads_the_jobs_log_and_appends_live(leader: ScriptedLeader) -> None:
    app = make_app(leader)
    async with app.run_test(size=(80, 24)) as pilot:
        await synced(pilot, app)
        app.screen.jobs.move_cursor_to_key("j3")
        await pilot.press("enter")
        await synced(pilot, app, watched="j3")
        await pilot.press("t", "t", "t")  # Chunks, Settings, Events
        await wait_for(
            pilot,
            lambda: any(isinstance(m, FetchEvents) and m.job_id == "j3" for m in leader.received),
            what="job events asked",
        )
        sent = leader.last(FetchEvents)
        assert isinstance(sent, FetchEvents)
        assert sent.job_id == "j3"
        detail = app.screen.query_one(JobDetailPanel)
        await wait_for(pilot, lambda: detail.event_lines(), what="events shown")
        assert FAILED_J3 in "\n".join(detail.event_lines())
        assert "chunk 0 attempt 1 done in 20.0s" not in "\n".join(detail.event_lines())  # j1's
        leader.chunk_action("j3", "retry", [3])
        leader.action("pause", ["j1"])
        await wait_for(pilot, lambda: "retry on chunks 3" in "\n".join(detail.event_lines()))
        assert "paused" not in "\n".join(detail.event_lines())
        # Shown once the panel has repainted (a loaded machine may take a few frames).
        await wait_for(
            pilot, lambda: "retry on chunks 3" in screen_text(app), within=10.0, what="painted"
        )


async def test_events_that_arrived_while_the_log_was_hidden_are_added_not_redrawn(
    leader: ScriptedLeader,
) -> None:
    """A view switch redrew all 5,000 kept events: under a flood of events a key took
    seconds (break round 27a). Now only what arrived while hidden is written, wrapped
    at the width the log has once shown."""
    app = make_app(leader)
    async with app.run_test(size=(80, 24)) as pilot:
        await synced(pilot, app)
        await pilot.press("3")
        await wait_for(pilot, lambda: "node-c disabled" in monitor(app), what="back-fill")
        panel = app.screen.query_one(LogsPanel)
        redraws: list[int] = []
        panel.rewrite_monitor = lambda: redraws.append(1)  # type: ignore[method-assign]
        await pilot.press("1")  # the jobs view: at 80 columns the log is hidden
        for number in range(30):
            leader.event("info", f"flood line {number}")
        await wait_for(pilot, lambda: any("flood line 29" in e.text for e in app.state.events))
        await pilot.pause()
        assert "flood line 0" not in monitor(app)  # held: a hidden log has no width to wrap at
        await pilot.press("3")
        await wait_for(pilot, lambda: "flood line 29" in monitor(app), what="caught up")
        assert all(f"flood line {n}\n" in monitor(app) + "\n" for n in range(30))
        assert redraws == []


async def test_a_redraw_shows_the_latest_matching_events_and_says_how_many_are_older(
    leader: ScriptedLeader,
) -> None:
    from farmtui.console.widgets.logs_panel import REWRITTEN

    app = make_app(leader)
    async with app.run_test(size=(80, 24)) as pilot:
        await synced(pilot, app)
        await pilot.press("3")
        for number in range(REWRITTEN + 200):
            app.state.log("info", f"kept line {number}")
        panel = app.screen.query_one(LogsPanel)
        panel.rewrite_monitor()
        await pilot.pause()
        lines = monitor(app)
        assert f"kept line {REWRITTEN + 199}" in lines
        assert "kept line 199\n" not in lines
        assert "older matching event(s) not shown" in lines.splitlines()[0]


async def test_lines_are_wrapped_again_when_the_terminal_narrows(leader: ScriptedLeader) -> None:
    """Wrapped once, at the width they were written at, lines were cut with a scrollbar
    when the terminal narrowed (break round 27c)."""
    app = make_app(leader)
    async with app.run_test(size=(120, 30)) as pilot:
        await synced(pilot, app)
        await pilot.press("3")
        words = " ".join(f"word{n}" for n in range(30))
        app.screen._log("info", words)  # type: ignore[attr-defined]
        await wait_for(pilot, lambda: "word29" in monitor(app), what="the line")
        await pilot.resize_terminal(50, 30)
        panel = app.screen.query_one(LogsPanel)
        width = lambda: panel.query_one("#monitor-log").scrollable_content_region.width  # noqa: E731
        await wait_for(
            pilot,
            lambda: max(len(line.rstrip()) for line in panel.monitor_lines()) <= width(),
            what="lines wrapped at the new width",
        )
        assert "word29" in monitor(app)
        assert " ".join(monitor(app).split()).count(words) == 1
