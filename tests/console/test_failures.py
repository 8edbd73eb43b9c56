"""The failures view (5) on the real leader: rows, Enter opens that attempt's output,
r retries, b blocks. The failures are the scripted farm's: j1's chunk 4, j3's 2 and 3."""

from __future__ import annotations

from farmtui.console.screens.confirm import ConfirmScreen
from farmtui.console.screens.unblock import UnblockScreen
from farmtui.console.widgets.failures_panel import FailuresTable
from farmtui.console.widgets.logs_panel import LogsPanel
from farmtui.console.widgets.task_output import OutputSource
from farmtui.protocol import BlockNode, FetchFailures, RunChunkAction
from tests.console.conftest import make_app, synced, wait_for
from tests.console.screen import screen_text
from tests.console.scripted_leader import ScriptedLeader, output_line


def failures_table(app: object) -> FailuresTable:
    return app.screen.query_one(FailuresTable)  # type: ignore[attr-defined,no-any-return]


async def open_failures(pilot: object, app: object) -> FailuresTable:
    await synced(pilot, app)  # type: ignore[arg-type]
    await pilot.press("5")  # type: ignore[attr-defined]
    table = failures_table(app)
    await wait_for(pilot, lambda: len(table.rows) == 3, what="failures listed")  # type: ignore[arg-type]
    return table


async def test_rows_newest_first_with_what_failed_and_why(leader: ScriptedLeader) -> None:
    app = make_app(leader)
    async with app.run_test(size=(80, 24)) as pilot:
        table = await open_failures(pilot, app)
        assert table.has_focus
        assert table.rows == ["j1/4/1", "j3/3/1", "j3/2/1"]  # j1's chunk 4 failed last
        text = screen_text(app)
        assert "3 failed attempts in 2 jobs" in text
        rows = [line for line in text.splitlines() if "shot_0" in line and "node-" in line]
        assert len(rows) == 3
        assert "shot_010_comp" in rows[0]
        assert "41-50" in rows[0]
        assert "fail" in rows[0]
        assert "shot_030_fx" in rows[1]
        assert "16-20" in rows[1]
        assert "11-15" in rows[2]
        # The row under the cursor, whole, below the list: its last error line from the log.
        assert "Error: chunk 4 ran out of memory" in text


async def test_enter_opens_that_attempts_output_of_another_job(leader: ScriptedLeader) -> None:
    app = make_app(leader)
    async with app.run_test(size=(80, 24)) as pilot:
        await open_failures(pilot, app)
        await pilot.press("down", "enter")  # j3's chunk 3, while j1 is watched
        logs = app.screen.query_one(LogsPanel)
        await wait_for(
            pilot,
            lambda: "Error: chunk 3 ran out of memory" in logs.task_lines(),
            what="j3 chunk 3 attempt 1 output",
        )
        assert output_line("j3", 3, 1, 0) in logs.task_lines()
        assert logs.source == "task"
        assert logs.following == OutputSource("j3", 3, 1)
        assert "chunk 3 · attempt 1 of 1" in screen_text(app)
        assert output_line("j3", 3, 1, 0) in screen_text(app)


async def test_enter_opens_an_older_attempt(leader: ScriptedLeader) -> None:
    # j1's chunk 4 retried: attempt 2 runs once chunk 3 is done.
    leader.chunk_action("j1", "retry", [4])
    leader.finish("j1", 3)
    assert leader.running("j1", 4) == ("node-a", 2)
    app = make_app(leader)
    async with app.run_test(size=(80, 24)) as pilot:
        await synced(pilot, app)
        await pilot.press("5")
        table = failures_table(app)
        await wait_for(pilot, lambda: "j1/4/1" in table.rows, what="the older attempt listed")
        table.move_cursor_to_key("j1/4/1")
        await pilot.press("enter")
        logs = app.screen.query_one(LogsPanel)
        await wait_for(pilot, lambda: logs.following == OutputSource("j1", 4, 1))
        await wait_for(pilot, lambda: "Error: chunk 4 ran out of memory" in logs.task_lines())
        assert "attempt 1 of 2" in screen_text(app)


async def test_r_retries_the_chunk_of_the_row(leader: ScriptedLeader) -> None:
    app = make_app(leader)
    async with app.run_test(size=(80, 24)) as pilot:
        await open_failures(pilot, app)
        await pilot.press("down", "r")
        await wait_for(pilot, lambda: leader.count(RunChunkAction) == 1)
        sent = leader.last(RunChunkAction)
        assert isinstance(sent, RunChunkAction)
        assert (sent.action, sent.job_id, sent.chunks) == ("retry", "j3", [3])
        assert not isinstance(app.screen, ConfirmScreen)  # a retry costs no done work
        assert leader.detail("j3").chunks[3].state != "failed"
        await wait_for(pilot, lambda: app.state.jobs["j3"].state != "failed")


async def test_b_blocks_the_node_after_saying_what_it_does_then_unblocks(
    leader: ScriptedLeader,
) -> None:
    app = make_app(leader)
    async with app.run_test(size=(80, 24)) as pilot:
        await open_failures(pilot, app)
        await pilot.press("down", "b")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        text = screen_text(app)
        assert "Block node-b for shot_030_fx?" in text
        assert "takes no more chunks of shot_030_fx" in text
        await pilot.press("y")
        await wait_for(pilot, lambda: "node-b" in app.state.jobs["j3"].blocked_nodes)
        assert "node-b" in leader.job("j3").blocked_nodes
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
        assert "node-b" in leader.job("j3").blocked_nodes


async def test_detail_shows_blocked_nodes_and_unblocks(leader: ScriptedLeader) -> None:
    for node in ("node-b", "node-c"):
        leader.run(
            lambda now, n=node: leader.leader.scheduler.block_node("j1", n, True, "admin", now)
        )  # type: ignore[misc]
    app = make_app(leader)
    async with app.run_test(size=(80, 24)) as pilot:
        await synced(pilot, app)
        await pilot.press("enter")
        text = screen_text(app)
        assert "blocked: node-b until " in text
        assert " · node-c until " in text
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
        assert list(leader.job("j1").blocked_nodes) == ["node-b"]
        await pilot.pause()
        text = screen_text(app)
        assert "blocked: node-b until" in text
        assert "node-c until" not in text


async def test_refetched_when_a_jobs_failed_count_changes(leader: ScriptedLeader) -> None:
    app = make_app(leader)
    async with app.run_test(size=(80, 24)) as pilot:
        await open_failures(pilot, app)
        asked = leader.count(FetchFailures)
        leader.chunk_action("j4", "set-failed", [1])
        await wait_for(pilot, lambda: leader.count(FetchFailures) == asked + 1, within=3)
        # A change that cannot add a failure asks nothing.
        leader.run(lambda now: leader.leader.scheduler.set_priority("j4", 51, "admin", now))
        await wait_for(pilot, lambda: app.state.jobs["j4"].priority == 51)
        await pilot.pause(0.1)
        assert leader.count(FetchFailures) == asked + 1
