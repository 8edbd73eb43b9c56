"""The nodes view: tags, last seen, agent version, slots used/total, a CPU sparkline
from the readings the console received, and no stale readings of an offline node."""

from __future__ import annotations

import msgspec

from farmtui.console import fmt
from farmtui.protocol import GpuInfo, NodesChanged
from tests.console.conftest import NOW, make_app, synced, wait_for
from tests.console.fake_leader import FakeLeader
from tests.console.screen import screen_text


def test_sparkline_and_ago() -> None:
    assert fmt.sparkline([0, 50, 100], 5) == "  ▁▅█"
    assert fmt.sparkline([10.0] * 9, 4) == "▁▁▁▁"
    assert [fmt.ago(s) for s in (0, 42, 300, 7200, 200000)] == ["now", "42s", "5m", "2h", "2d"]


async def test_nodes_columns_and_cpu_sparkline(leader: FakeLeader) -> None:
    node = msgspec.structs.replace(
        leader.nodes["node-a"], tags=["gpu", "linux"], version="1.4.2", last_seen=NOW - 12
    )
    leader.nodes["node-a"] = node
    app = make_app(leader.url)
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
            node = msgspec.structs.replace(node, cpu_percent=cpu)
            await leader.broadcast(NodesChanged(nodes=[node]))
            await wait_for(pilot, lambda cpu=cpu: app.state.nodes["node-a"].cpu_percent == cpu)
        await pilot.pause()
        row = next(line for line in screen_text(app).splitlines() if "node-a" in line)
        assert "▇▁▄█  95%" in row  # 87 (snapshot), 10, 40, 95


async def test_an_offline_node_shows_no_stale_readings(leader: FakeLeader) -> None:
    app = make_app(leader.url)
    async with app.run_test(size=(120, 24)) as pilot:
        await synced(pilot, app)
        await pilot.press("4")
        node = msgspec.structs.replace(leader.nodes["node-b"], state="offline", cpu_percent=3.0)
        await leader.broadcast(NodesChanged(nodes=[node]))
        await wait_for(pilot, lambda: app.state.nodes["node-b"].state == "offline")
        await pilot.pause()
        row = next(line for line in screen_text(app).splitlines() if "node-b" in line)
        assert " off " in row
        assert "%" not in row  # neither CPU nor memory
        assert "12%/32G" not in row


async def test_nodes_fit_80_columns_by_dropping_columns(leader: FakeLeader) -> None:
    app = make_app(leader.url)
    async with app.run_test(size=(80, 24)) as pilot:
        await synced(pilot, app)
        await pilot.press("4")
        await pilot.pause()
        text = screen_text(app)
        assert "Tags" in text
        assert "Agent" not in text  # the first to give way
        assert "…" not in text


async def test_gpus_in_use_show_per_node(leader: FakeLeader) -> None:
    gpus = [GpuInfo(index=0, name="RTX", memory=24576), GpuInfo(index=1, name="RTX", memory=0)]
    leader.nodes["node-a"] = msgspec.structs.replace(
        leader.nodes["node-a"], gpus=gpus, gpus_busy=[1]
    )
    leader.nodes["node-b"] = msgspec.structs.replace(
        leader.nodes["node-b"], gpus=gpus[:1], gpu_only=True
    )
    app = make_app(leader.url)
    async with app.run_test(size=(120, 24)) as pilot:
        await synced(pilot, app)
        await pilot.press("4")
        await pilot.pause()
        text = screen_text(app)
        assert "GPUs" in text
        assert " 1/2 " in next(line for line in text.splitlines() if "node-a" in line)
        assert "0/1 only" in next(line for line in text.splitlines() if "node-b" in line)
