"""The Logs panel keeps the source the operator chose; Task Output shows the watched
job's chunk, at the attempt the operator picked (issue 11, defects 1 and 2)."""

from __future__ import annotations

from farmtui.console.app import FarmConsole
from farmtui.console.widgets.logs_panel import LogsPanel
from farmtui.protocol import FetchTaskOutput
from tests.console.conftest import make_app, synced, wait_for
from tests.console.screen import screen_text
from tests.console.scripted_leader import ScriptedLeader, output_line


def logs(app: FarmConsole) -> LogsPanel:
    return app.screen.query_one(LogsPanel)


def retry_chunk_4(leader: ScriptedLeader) -> None:
    """j1's failed chunk 4 is retried; attempt 2 starts on node-a when chunk 3 is done."""
    leader.chunk_action("j1", "retry", [4])
    leader.finish("j1", 3)
    leader.start("j1", 4)
    assert leader.running("j1", 4) == ("node-a", 2)


def watching(app: FarmConsole, job_id: str) -> bool:
    return app.state.watched is not None and app.state.watched.job_id == job_id


def printed(app: FarmConsole) -> list[str]:
    """The task output's lines the renderer printed (not the leader's header)."""
    return [line for line in logs(app).task_lines() if ": line " in line]


async def farm_moves_on(
    pilot: object, app: FarmConsole, leader: ScriptedLeader, cpu: float
) -> None:
    """A node update and a job update arrive, as they do every few seconds on a live farm."""
    leader.reading("node-a", cpu, 41.0)
    priority = int(cpu)
    leader.run(lambda now: leader.leader.scheduler.set_priority("j5", priority, "admin", now))
    await wait_for(
        pilot,  # type: ignore[arg-type]
        lambda: (
            app.state.jobs["j5"].priority == priority
            and app.state.nodes["node-a"].cpu_percent == cpu
        ),
        what="the updates applied",
    )
    await pilot.pause()  # type: ignore[attr-defined]


async def test_the_chosen_source_survives_node_and_job_updates(leader: ScriptedLeader) -> None:
    app = make_app(leader)
    async with app.run_test(size=(80, 24)) as pilot:
        await synced(pilot, app)
        await pilot.press("4", "down", "l")  # node-b's agent log
        await wait_for(pilot, lambda: "node-b: connected to leader" in screen_text(app))
        # Back to the Monitor Log with the dropdown, as an operator would (3 gives the
        # keyboard to the log: the source picker is two Shift+Tabs up from it).
        await pilot.press("3", "shift+tab", "shift+tab", "enter", "up", "enter")
        await wait_for(pilot, lambda: "synced as admin" in screen_text(app))
        for cpu in (50.0, 60.0):
            await farm_moves_on(pilot, app, leader, cpu)
            text = screen_text(app)
            assert "synced as admin" in text
            assert "node-b: agent started" not in text
            assert logs(app).source == "monitor"
        # Task Output stays too.
        await pilot.press("2", "t", "enter")  # chunk 0 of j1
        line = output_line("j1", 0, 1, 2)
        await wait_for(pilot, lambda: line in screen_text(app))
        await farm_moves_on(pilot, app, leader, 70.0)
        assert line in screen_text(app)
        assert logs(app).source == "task"


async def test_switching_jobs_replaces_the_task_output(leader: ScriptedLeader) -> None:
    app = make_app(leader)
    async with app.run_test(size=(80, 24)) as pilot:
        await synced(pilot, app)
        await pilot.press("enter", "t", "down", "down", "enter")  # chunk 2 of j1
        await wait_for(pilot, lambda: output_line("j1", 2, 1, 2) in printed(app))
        await pilot.press("1", "end")  # j5 under the cursor: the detail view follows it
        await wait_for(pilot, lambda: watching(app, "j5"), what="j5 watched")
        await pilot.press("3")
        # The same chunk of the new job replaces the old output ...
        await wait_for(pilot, lambda: output_line("j5", 2, 1, 2) in printed(app))
        sent = leader.last(FetchTaskOutput)
        assert isinstance(sent, FetchTaskOutput)
        assert (sent.job_id, sent.chunk) == ("j5", 2)
        # ... and j1's running chunk printing on is not mixed in.
        leader.output("j1", 3, 1, ["late line of j1"])
        leader.action("hold", ["j3"])  # an event after it, as a marker
        await wait_for(pilot, lambda: any("hold" in e.text for e in app.state.events))
        await pilot.pause()
        text = screen_text(app)
        assert "of j1" not in text
        assert "late line of j1" not in text
        assert printed(app) == [output_line("j5", 2, 1, i) for i in range(3)]
        assert "chunk 2 · attempt 1 of 1 (latest)" in text


async def test_no_output_is_left_over_for_a_chunk_that_has_not_run(leader: ScriptedLeader) -> None:
    app = make_app(leader)
    async with app.run_test(size=(80, 24)) as pilot:
        await synced(pilot, app)
        await pilot.press("enter", "t", "enter")  # chunk 0 of j1
        await wait_for(pilot, lambda: output_line("j1", 0, 1, 2) in printed(app))
        await pilot.press("1", "down")  # j2: queued, none of its chunks has run
        await wait_for(pilot, lambda: watching(app, "j2"), what="j2 watched")
        await pilot.press("3")
        await wait_for(pilot, lambda: "chunk 0 · not run yet" in screen_text(app))
        assert logs(app).task_lines() == []


async def test_any_attempt_of_a_chunk_can_be_read(leader: ScriptedLeader) -> None:
    retry_chunk_4(leader)  # attempt 1 failed on node-a, attempt 2 runs there
    app = make_app(leader)
    async with app.run_test(size=(80, 24)) as pilot:
        await synced(pilot, app)
        await pilot.press("enter", "t", *["down"] * 4, "enter")  # chunk 4's output
        await wait_for(pilot, lambda: output_line("j1", 4, 2, 2) in printed(app))
        assert "chunk 4 · attempt 2 of 2 (latest) · node-a" in screen_text(app)
        await pilot.press("left")
        await wait_for(pilot, lambda: output_line("j1", 4, 1, 2) in printed(app))
        sent = leader.last(FetchTaskOutput)
        assert isinstance(sent, FetchTaskOutput)
        assert (sent.job_id, sent.chunk, sent.attempt) == ("j1", 4, 1)
        text = screen_text(app)
        assert "chunk 4 · attempt 1 of 2 · node-a · failed, exit 1" in text
        assert "attempt 2: line" not in text
        await pilot.press("right")
        await wait_for(pilot, lambda: output_line("j1", 4, 2, 2) in printed(app))
        assert "attempt 2 of 2 (latest)" in screen_text(app)


async def test_the_newest_attempt_is_followed_until_an_older_one_is_picked(
    leader: ScriptedLeader,
) -> None:
    app = make_app(leader)
    async with app.run_test(size=(80, 24)) as pilot:
        await synced(pilot, app)
        await pilot.press("enter", "t", *["down"] * 4, "enter")  # chunk 4: failed, attempt 1
        await wait_for(pilot, lambda: output_line("j1", 4, 1, 2) in printed(app))
        retry_chunk_4(leader)
        await wait_for(pilot, lambda: output_line("j1", 4, 2, 2) in printed(app))
        assert "attempt 2 of 2 (latest)" in screen_text(app)
        # An older attempt picked by hand stays on screen through the next retry.
        await pilot.press("left")
        await wait_for(pilot, lambda: output_line("j1", 4, 1, 2) in printed(app))
        leader.finish("j1", 4, "failed")  # chunk 7 takes the slot (one at a time)
        leader.chunk_action("j1", "retry", [4])
        leader.render("j1", 7)  # then chunk 4 runs again
        leader.start("j1", 4)  # attempt 3
        await wait_for(pilot, lambda: "attempt 1 of 3" in screen_text(app))
        assert printed(app) == [output_line("j1", 4, 1, i) for i in range(3)]
