"""The Logs panel keeps the source the operator chose; Task Output shows the watched
job's chunk, at the attempt the operator picked (issue 11, defects 1 and 2)."""

from __future__ import annotations

import msgspec

from farmtui.console.app import FarmConsole
from farmtui.console.widgets.logs_panel import LogsPanel
from farmtui.protocol import (
    Event,
    EventView,
    FetchTaskOutput,
    JobsChanged,
    NodesChanged,
    TaskOutput,
)
from tests.console.conftest import make_app, synced, wait_for
from tests.console.fake_leader import T0, FakeLeader
from tests.console.screen import screen_text


def logs(app: FarmConsole) -> LogsPanel:
    return app.screen.query_one(LogsPanel)


def watching(app: FarmConsole, job_id: str) -> bool:
    return app.state.watched is not None and app.state.watched.job_id == job_id


async def farm_moves_on(pilot: object, app: FarmConsole, leader: FakeLeader, cpu: float) -> None:
    """A node update and a job update arrive, as they do every few seconds on a live farm."""
    node = msgspec.structs.replace(leader.nodes["node-a"], cpu_percent=cpu)
    leader.nodes["node-a"] = node
    await leader.broadcast(NodesChanged(nodes=[node]))
    stats = msgspec.structs.replace(leader.jobs["j2"].stats, frames_done=int(cpu))
    await leader.broadcast(JobsChanged(jobs=[leader.set_job("j2", stats=stats)]))
    await wait_for(
        pilot,  # type: ignore[arg-type]
        lambda: app.state.jobs["j2"].stats.frames_done == int(cpu),
        what="the updates applied",
    )
    await pilot.pause()  # type: ignore[attr-defined]


async def test_the_chosen_source_survives_node_and_job_updates(leader: FakeLeader) -> None:
    app = make_app(leader.url)
    async with app.run_test(size=(80, 24)) as pilot:
        await synced(pilot, app)
        await pilot.press("4", "down", "l")  # node-b's agent log
        await wait_for(pilot, lambda: "node-b: connected to leader" in screen_text(app))
        # Back to the Monitor Log with the dropdown, as an operator would.
        await pilot.press("3", "enter", "up", "enter")
        await wait_for(pilot, lambda: "synced as alice" in screen_text(app))
        for cpu in (50.0, 60.0):
            await farm_moves_on(pilot, app, leader, cpu)
            text = screen_text(app)
            assert "synced as alice" in text
            assert "node-b: agent started" not in text
            assert logs(app).source == "monitor"
        # Task Output stays too.
        await pilot.press("2", "t", "enter")  # chunk 1 of j1
        await wait_for(pilot, lambda: "chunk 1 of j1: line 2" in screen_text(app))
        await farm_moves_on(pilot, app, leader, 70.0)
        assert "chunk 1 of j1: line 2" in screen_text(app)
        assert logs(app).source == "task"


async def test_switching_jobs_replaces_the_task_output(leader: FakeLeader) -> None:
    app = make_app(leader.url)
    async with app.run_test(size=(80, 24)) as pilot:
        await synced(pilot, app)
        await pilot.press("enter", "t", "down", "down", "enter")  # chunk 3 of j1
        await wait_for(pilot, lambda: "chunk 3 of j1: line 2" in logs(app).task_lines())
        await pilot.press("1", "end")  # j5 under the cursor: the detail view follows it
        await wait_for(pilot, lambda: watching(app, "j5"), what="j5 watched")
        await pilot.press("3")
        # The same chunk of the new job replaces the old output ...
        await wait_for(pilot, lambda: "chunk 3 of j5: line 2" in logs(app).task_lines())
        sent = leader.last(FetchTaskOutput)
        assert isinstance(sent, FetchTaskOutput)
        assert (sent.job_id, sent.chunk) == ("j5", 3)
        # ... and lines of the old job still on their way are not mixed in.
        await leader.broadcast(
            TaskOutput(job_id="j1", chunk=3, attempt=1, lines=["late line of j1"], append=True)
        )
        await leader.broadcast(Event(event=EventView(time=T0, level="info", text="marker")))
        await wait_for(pilot, lambda: any(e.text == "marker" for e in app.state.events))
        await pilot.pause()
        text = screen_text(app)
        assert "of j1" not in text
        assert "late line of j1" not in text
        assert logs(app).task_lines() == [f"chunk 3 of j5: line {i}" for i in range(3)]
        assert "chunk 3 · attempt 1 of 1 (latest)" in text


async def test_no_output_is_left_over_for_a_chunk_that_has_not_run(leader: FakeLeader) -> None:
    app = make_app(leader.url)
    async with app.run_test(size=(80, 24)) as pilot:
        await synced(pilot, app)
        await pilot.press("enter", "t", "enter")  # chunk 1 of j1
        await wait_for(pilot, lambda: "chunk 1 of j1: line 2" in logs(app).task_lines())
        await pilot.press("1", "down")  # j2: queued, none of its chunks has run
        await wait_for(pilot, lambda: watching(app, "j2"), what="j2 watched")
        await pilot.press("3")
        await wait_for(pilot, lambda: "chunk 1 · not run yet" in screen_text(app))
        assert logs(app).task_lines() == []


async def test_any_attempt_of_a_chunk_can_be_read(leader: FakeLeader) -> None:
    await leader.retry_chunk("j1", 5)  # attempt 1 failed on node-b, attempt 2 runs on node-a
    app = make_app(leader.url)
    async with app.run_test(size=(80, 24)) as pilot:
        await synced(pilot, app)
        await pilot.press("enter", "t", *["down"] * 4, "enter")  # chunk 5's output
        await wait_for(pilot, lambda: "chunk 5 of j1 attempt 2: line 2" in logs(app).task_lines())
        assert "chunk 5 · attempt 2 of 2 (latest) · node-a" in screen_text(app)
        await pilot.press("left")
        await wait_for(pilot, lambda: "chunk 5 of j1: line 2" in logs(app).task_lines())
        sent = leader.last(FetchTaskOutput)
        assert isinstance(sent, FetchTaskOutput)
        assert (sent.job_id, sent.chunk, sent.attempt) == ("j1", 5, 1)
        text = screen_text(app)
        assert "chunk 5 · attempt 1 of 2 · node-b · failed, exit 1" in text
        assert "attempt 2: line" not in text
        await pilot.press("right")
        await wait_for(pilot, lambda: "chunk 5 of j1 attempt 2: line 2" in logs(app).task_lines())
        assert "attempt 2 of 2 (latest)" in screen_text(app)


async def test_the_newest_attempt_is_followed_until_an_older_one_is_picked(
    leader: FakeLeader,
) -> None:
    app = make_app(leader.url)
    async with app.run_test(size=(80, 24)) as pilot:
        await synced(pilot, app)
        await pilot.press("enter", "t", *["down"] * 4, "enter")  # chunk 5: failed, attempt 1
        await wait_for(pilot, lambda: "chunk 5 of j1: line 2" in logs(app).task_lines())
        await leader.retry_chunk("j1", 5)
        await wait_for(pilot, lambda: "chunk 5 of j1 attempt 2: line 2" in logs(app).task_lines())
        assert "attempt 2 of 2 (latest)" in screen_text(app)
        # An older attempt picked by hand stays on screen through the next retry.
        await pilot.press("left")
        await wait_for(pilot, lambda: "chunk 5 of j1: line 2" in logs(app).task_lines())
        await leader.retry_chunk("j1", 5)
        await wait_for(pilot, lambda: "attempt 1 of 3" in screen_text(app))
        assert logs(app).task_lines() == [f"chunk 5 of j1: line {i}" for i in range(3)]
