"""The failures view (5): rows, Enter opens that attempt's output, r retries, b blocks."""

from __future__ import annotations

import msgspec

from farmtui.console.screens.confirm import ConfirmScreen
from farmtui.console.screens.unblock import UnblockScreen
from farmtui.console.widgets.failures_panel import FailuresTable
from farmtui.console.widgets.logs_panel import LogsPanel
from farmtui.console.widgets.task_output import OutputSource
from farmtui.protocol import BlockNode, FetchFailures, JobsChanged, RunChunkAction
from tests.console.conftest import make_app, synced, wait_for
from tests.console.fake_leader import FakeLeader
from tests.console.screen import screen_text


def failures_table(app: object) -> FailuresTable:
    return app.screen.query_one(FailuresTable)  # type: ignore[attr-defined,no-any-return]


async def open_failures(pilot: object, app: object) -> FailuresTable:
    await synced(pilot, app)  # type: ignore[arg-type]
    await pilot.press("5")  # type: ignore[attr-defined]
    table = failures_table(app)
    await wait_for(pilot, lambda: len(table.rows) == 2, what="failures listed")  # type: ignore[arg-type]
    return table


async def test_rows_newest_first_with_what_failed_and_why(leader: FakeLeader) -> None:
    app = make_app(leader.url)
    async with app.run_test(size=(80, 24)) as pilot:
        table = await open_failures(pilot, app)
        assert table.has_focus
        assert table.rows == ["j1/5/1", "j3/3/1"]  # j1's chunk 5 failed last
        text = screen_text(app)
        assert "2 failed attempts in 2 jobs" in text
        rows = [line for line in text.splitlines() if "shot_0" in line and "node-b" in line]
        assert len(rows) == 2
        assert "shot_010_comp" in rows[0]
        assert "41-50" in rows[0]
        assert "fail" in rows[0]
        assert "shot_030_fx" in rows[1]
        assert "11-15" in rows[1]
        # The row under the cursor, whole, below the list.
        assert "failed · exit 1 · Error: chunk 5 ran out of memory" in text


async def test_enter_opens_that_attempts_output_of_another_job(leader: FakeLeader) -> None:
    app = make_app(leader.url)
    async with app.run_test(size=(80, 24)) as pilot:
        await open_failures(pilot, app)
        await pilot.press("down", "enter")  # j3's chunk 3, while j1 is watched
        logs = app.screen.query_one(LogsPanel)
        await wait_for(
            pilot,
            lambda: logs.task_lines() == leader.output_of("j3", 3, 1),
            what="j3 chunk 3 attempt 1 output",
        )
        assert logs.source == "task"
        assert logs.following == OutputSource("j3", 3, 1)
        assert "chunk 3 · attempt 1 of 1" in screen_text(app)
        assert "chunk 3 of j3: line 0" in screen_text(app)


async def test_enter_opens_an_older_attempt(leader: FakeLeader) -> None:
    await leader.retry_chunk("j1", 2)  # attempt 1 failed on node-b; attempt 2 runs
    app = make_app(leader.url)
    async with app.run_test(size=(80, 24)) as pilot:
        await synced(pilot, app)
        await pilot.press("5")
        table = failures_table(app)
        await wait_for(pilot, lambda: "j1/2/1" in table.rows, what="the older attempt listed")
        table.move_cursor_to_key("j1/2/1")
        await pilot.press("enter")
        logs = app.screen.query_one(LogsPanel)
        await wait_for(pilot, lambda: logs.following == OutputSource("j1", 2, 1))
        assert "attempt 1 of 2" in screen_text(app)


async def test_r_retries_the_chunk_of_the_row(leader: FakeLeader) -> None:
    app = make_app(leader.url)
    async with app.run_test(size=(80, 24)) as pilot:
        await open_failures(pilot, app)
        await pilot.press("down", "r")
        await wait_for(pilot, lambda: leader.count(RunChunkAction) == 1)
        sent = leader.last(RunChunkAction)
        assert isinstance(sent, RunChunkAction)
        assert (sent.action, sent.job_id, sent.chunks) == ("retry", "j3", [3])
        assert not isinstance(app.screen, ConfirmScreen)  # a retry costs no done work


async def test_b_blocks_the_node_after_saying_what_it_does_then_unblocks(
    leader: FakeLeader,
) -> None:
    app = make_app(leader.url)
    async with app.run_test(size=(80, 24)) as pilot:
        await open_failures(pilot, app)
        await pilot.press("down", "b")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        text = screen_text(app)
        assert "Block node-b for shot_030_fx?" in text
        assert "takes no more chunks of shot_030_fx" in text
        await pilot.press("y")
        await wait_for(pilot, lambda: "node-b" in app.state.jobs["j3"].blocked_nodes)
        sent = leader.last(BlockNode)
        assert isinstance(sent, BlockNode)
        assert (sent.job_id, sent.node, sent.blocked) == ("j3", "node-b", True)
        await pilot.pause()
        assert "⊘node-b" in screen_text(app)
        # b again on the same row lets it back.
        await pilot.press("b")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        assert "Unblock node-b for shot_030_fx?" in screen_text(app)
        await pilot.press("n")
        assert leader.count(BlockNode) == 1


async def test_detail_shows_blocked_nodes_and_unblocks(leader: FakeLeader) -> None:
    leader.set_job("j1", blocked_nodes={"node-b": 1_700_003_600.0, "node-c": 1_700_007_200.0})
    app = make_app(leader.url)
    async with app.run_test(size=(80, 24)) as pilot:
        await synced(pilot, app)
        await pilot.press("enter")
        text = screen_text(app)
        assert "blocked: node-b until 23:13:20 · node-c until 00:13:20" in text
        assert "b unblock" in text  # in the key bar
        await pilot.press("b")
        await wait_for(pilot, lambda: isinstance(app.screen, UnblockScreen))
        assert "Unblock node-c" in screen_text(app)
        await pilot.press("down", "enter")
        await wait_for(pilot, lambda: leader.count(BlockNode) == 1)
        sent = leader.last(BlockNode)
        assert isinstance(sent, BlockNode)
        assert (sent.job_id, sent.node, sent.blocked) == ("j1", "node-c", False)
        await wait_for(pilot, lambda: "node-c" not in app.state.jobs["j1"].blocked_nodes)
        await pilot.pause()
        text = screen_text(app)
        assert "blocked: node-b until" in text
        assert "node-c until" not in text


async def test_refetched_when_a_jobs_failed_count_changes(leader: FakeLeader) -> None:
    app = make_app(leader.url)
    async with app.run_test(size=(80, 24)) as pilot:
        await open_failures(pilot, app)
        asked = leader.count(FetchFailures)
        job = leader.jobs["j4"]
        stats = msgspec.structs.replace(job.stats, chunks_failed=1)
        await leader.broadcast(JobsChanged(jobs=[leader.set_job("j4", stats=stats)]))
        await wait_for(pilot, lambda: leader.count(FetchFailures) == asked + 1, within=3)
        # A change that cannot add a failure asks nothing.
        await leader.broadcast(JobsChanged(jobs=[leader.set_job("j4", priority=51)]))
        await pilot.pause(0.1)
        assert leader.count(FetchFailures) == asked + 1
