"""The nodes view: tags, last seen, agent version, slots used/total, a CPU sparkline
from the readings the console received, and no stale readings of an offline node.
Nodes and readings reach the real leader as its agent link would give them."""

from __future__ import annotations

from farmtui.console import fmt
from farmtui.protocol import GpuInfo
from tests.console.conftest import NOW, make_app, synced, wait_for
from tests.console.screen import screen_text
from tests.console.scripted_leader import ScriptedLeader


def test_sparkline_and_ago() -> None:
    assert fmt.sparkline([0, 50, 100], 5) == "  ▁▅█"
    assert fmt.sparkline([10.0] * 9, 4) == "▁▁▁▁"
    assert [fmt.ago(s) for s in (0, 42, 300, 7200, 200000)] == ["now", "42s", "5m", "2h", "2d"]


async def test_nodes_columns_and_cpu_sparkline(leader: ScriptedLeader) -> None:
    leader.clock.now = NOW - 12  # node-a last heard from 12 s before the console's clock
    leader.reading("node-a", 87.0, 41.0)
    app = make_app(leader)
    async with app.run_test(size=(120, 24)) as pilot:
        await synced(pilot, app)
        await pilot.press("4")
        await pilot.pause()
        text = screen_text(app)
        for header in ("Node", "St", "Slots", "CPU", "Mem", "Seen", "Tags", "Agent", "Chunks"):
            assert header in text
        row = next(line for line in text.splitlines() if "node-a" in line)
        assert " on " in row
        assert "1/4" in row
        assert "gpu,linux" in row
        assert "1.4.2" in row
        assert " 12s " in row
        assert "j1#3" in row
        for cpu in (10.0, 40.0, 95.0):
            leader.reading("node-a", cpu, 41.0)
            await wait_for(pilot, lambda cpu=cpu: app.state.nodes["node-a"].cpu_percent == cpu)
        await pilot.pause()
        row = next(line for line in screen_text(app).splitlines() if "node-a" in line)
        assert "▇▁▄█  95%" in row  # 87 (snapshot), 10, 40, 95


async def test_an_offline_node_shows_no_stale_readings(leader: ScriptedLeader) -> None:
    app = make_app(leader)
    async with app.run_test(size=(120, 24)) as pilot:
        await synced(pilot, app)
        await pilot.press("4")
        leader.run(lambda now: leader.leader.scheduler.node_disconnected("node-b", now))
        await wait_for(pilot, lambda: app.state.nodes["node-b"].state == "offline")
        await pilot.pause()
        row = next(line for line in screen_text(app).splitlines() if "node-b" in line)
        assert " off " in row
        assert "%" not in row  # neither CPU nor memory
        assert "12%/32G" not in row


async def test_nodes_fit_80_columns_by_dropping_columns(leader: ScriptedLeader) -> None:
    app = make_app(leader)
    async with app.run_test(size=(80, 24)) as pilot:
        await synced(pilot, app)
        await pilot.press("4")
        await pilot.pause()
        text = screen_text(app)
        assert "Tags" in text
        assert "Agent" not in text  # the first to give way
        assert "…" not in text


async def test_gpus_in_use_show_per_node(leader: ScriptedLeader) -> None:
    gpus = [GpuInfo(index=0, name="RTX", memory=24576), GpuInfo(index=1, name="RTX", memory=24576)]
    leader.connect("node-d", 2, gpus=gpus, cpu_count=8)
    leader.connect("node-e", 1, gpus=gpus[:1], gpu_only=True, cpu_count=8)
    # A job that asks for a GPU: the leader gives it one of node-d's (gpu_only node-e's too).
    leader.submit("j7", "gpu_shot", "erin", frames="1-2", chunk=1, gpus=1, priority=0)
    app = make_app(leader)
    async with app.run_test(size=(120, 24)) as pilot:
        await synced(pilot, app, "j7")
        await pilot.press("4")
        await pilot.pause()
        text = screen_text(app)
        assert "GPUs" in text
        busy = {name: len(leader.node(name).gpus_busy) for name in ("node-d", "node-e")}
        assert sum(busy.values()) == 2  # one GPU for each of j7's two chunks
        row_d = next(line for line in text.splitlines() if "node-d" in line)
        row_e = next(line for line in text.splitlines() if "node-e" in line)
        assert f" {busy['node-d']}/2 " in row_d
        assert f"{busy['node-e']}/1 only" in row_e
