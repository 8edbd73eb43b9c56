"""Logs (monitor, peer, task output) and the nodes panel."""

from __future__ import annotations

from textual.widgets import Select

from farmtui.console.widgets.logs_panel import LogsPanel
from farmtui.console.widgets.nodes_panel import NodesPanel
from farmtui.protocol import FetchNodeLog, FetchTaskOutput, SetNodeEnabled
from tests.console.conftest import make_app, synced, wait_for
from tests.console.screen import screen_text
from tests.console.scripted_leader import ScriptedLeader, output_line


def logs(app: object) -> LogsPanel:
    return app.screen.query_one(LogsPanel)  # type: ignore[attr-defined, no-any-return]


async def test_monitor_log_filters_by_level(leader: ScriptedLeader) -> None:
    app = make_app(leader)
    async with app.run_test(size=(80, 24)) as pilot:
        await synced(pilot, app)
        # The leader's own events: info (chunks done), error (chunk 4 failed), and a
        # warning it gives when a running chunk passes its time limit.
        node, attempt = leader.running("j1", 3)
        leader.run(
            lambda now: leader.leader.scheduler.chunk_timed_out(
                node, "j1", 3, attempt, "max_render", 4000.0, now
            )
        )
        info, warn, error = (
            "done in 20.0s",
            "chunk 3 attempt 1 on node-a",  # (passed its max render limit)
            "chunk 4 attempt 1 failed",
        )
        await pilot.press("3")
        await wait_for(pilot, lambda: any(warn in x for x in logs(app).monitor_lines()))
        lines = logs(app).monitor_lines()
        assert any(info in line for line in lines)
        assert any(error in line for line in lines)
        assert any("synced as admin (admin)" in line for line in lines)
        level = app.screen.query_one("#logs-level", Select)
        level.value = "warn"
        await pilot.pause()
        lines = logs(app).monitor_lines()
        assert not any(info in line for line in lines)
        assert any(warn in line for line in lines)
        assert any(error in line for line in lines)
        level.value = "error"
        await pilot.pause()
        lines = logs(app).monitor_lines()
        assert [line for line in lines if warn in line] == []
        assert any("ERROR" in line and error in line for line in lines)


async def test_monitor_level_select_by_keyboard(leader: ScriptedLeader) -> None:
    app = make_app(leader)
    async with app.run_test(size=(80, 24)) as pilot:
        await synced(pilot, app)
        # 3 gives the keyboard to the log; the pickers are above it.
        await pilot.press("3", "shift+tab", "enter", "down", "down", "down", "enter")
        await wait_for(pilot, lambda: logs(app).level == "error")


async def test_peer_log_is_refreshed(leader: ScriptedLeader, monkeypatch: object) -> None:
    import pytest

    assert isinstance(monkeypatch, pytest.MonkeyPatch)
    monkeypatch.setattr(LogsPanel, "PEER_REFRESH", 0.1)
    app = make_app(leader)
    async with app.run_test(size=(80, 24)) as pilot:
        await synced(pilot, app)
        await pilot.press("4")  # nodes: pick node-b, open its log with l
        await pilot.press("down", "l")
        await wait_for(pilot, lambda: "node-b: connected to leader" in logs(app).peer_lines())
        assert logs(app).source == "peer"
        first = leader.count(FetchNodeLog)
        leader.agent_log("node-b", ["node-b: rendering j1 chunk 4"])
        await wait_for(pilot, lambda: leader.count(FetchNodeLog) >= first + 2, what="refresh")
        await wait_for(pilot, lambda: "node-b: rendering j1 chunk 4" in logs(app).peer_lines())
        # Appended, not duplicated.
        assert logs(app).peer_lines().count("node-b: agent started") == 1
        assert "node-b: rendering j1 chunk 4" in screen_text(app)
        # An agent's own line without its date and logger: at 80 columns those filled the
        # width, and every line read the same (break round 33c).
        leader.agent_log(
            "node-b",
            ["2026-12-07 17:56:02,114 INFO    farmtui.agent.supervisor: chunk j1:4:1 done"],
        )
        said = "17:56:02 INFO  chunk j1:4:1 done"
        await wait_for(pilot, lambda: said in logs(app).peer_lines())
        assert said in screen_text(app)
        # Refreshing stops when another source is shown.
        logs(app).show_source("monitor")
        await pilot.pause()
        stopped_at = leader.count(FetchNodeLog)
        await pilot.pause(0.35)
        assert leader.count(FetchNodeLog) == stopped_at


async def test_peer_log_interval_is_three_seconds() -> None:
    assert LogsPanel.PEER_REFRESH == 3.0


async def test_task_output_follows_the_picked_chunk(leader: ScriptedLeader) -> None:
    app = make_app(leader)
    async with app.run_test(size=(80, 24)) as pilot:
        await synced(pilot, app)
        await pilot.press("enter", "t")  # detail, chunks tab
        await pilot.press("down", "down", "down", "enter")  # chunk 3 (rendering) -> Logs
        await wait_for(pilot, lambda: output_line("j1", 3, 1, 2) in logs(app).task_lines())
        sent = leader.last(FetchTaskOutput)
        assert isinstance(sent, FetchTaskOutput)
        assert (sent.job_id, sent.chunk, sent.follow) == ("j1", 3, True)
        leader.output("j1", 3, 1, ["Fra:24 Mem:1.2G | Rendering 50%"])  # node-a prints on
        await wait_for(pilot, lambda: "Fra:24 Mem:1.2G | Rendering 50%" in logs(app).task_lines())
        lines = logs(app).task_lines()
        assert lines.index(output_line("j1", 3, 1, 0)) < lines.index(
            "Fra:24 Mem:1.2G | Rendering 50%"
        )
        assert "Rendering 50%" in screen_text(app)
        # Pick another chunk on the left: its output replaces the right side.
        await pilot.click("#task-chunks", offset=(2, 5))  # chunk 4
        await wait_for(pilot, lambda: output_line("j1", 4, 1, 0) in logs(app).task_lines())
        assert not any("chunk 3" in line for line in logs(app).task_lines())


async def test_nodes_panel_and_enable_disable(leader: ScriptedLeader) -> None:
    app = make_app(leader)
    async with app.run_test(size=(80, 24)) as pilot:
        await synced(pilot, app)
        await pilot.press("4")
        text = screen_text(app)
        assert "node-a" in text
        assert "1/4" in text
        assert "87%" in text
        assert "41%/64G" in text
        assert "j1#3" in text
        assert " dis " in text
        await pilot.press("d")  # node-a: disable
        await wait_for(pilot, lambda: app.state.nodes["node-a"].state == "disabled")
        assert leader.node("node-a").state == "disabled"
        sent = leader.last(SetNodeEnabled)
        assert isinstance(sent, SetNodeEnabled)
        assert not sent.enabled
        await pilot.press("down", "down", "d")  # node-c: enable
        await wait_for(pilot, lambda: app.state.nodes["node-c"].state == "online")
        assert leader.node("node-c").state == "online"
        table = app.screen.query_one(NodesPanel)
        assert table.row_cells("node-c")[1][0] == "on"


async def test_nodes_enable_refused_for_non_admins(leader: ScriptedLeader) -> None:
    app = make_app(leader, token=leader.user_token("bob"))
    async with app.run_test(size=(80, 24)) as pilot:
        await synced(pilot, app)
        await pilot.press("4", "d")
        await pilot.pause()
        assert leader.count(SetNodeEnabled) == 0
        assert any("Only admins" in n.message for n in app._notifications)
        assert leader.node("node-a").state == "online"
