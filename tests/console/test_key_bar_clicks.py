"""The key bar is clickable: a click on a key (or its label) does what the key does,
confirmations included, against a real leader."""

from __future__ import annotations

from farmtui.console.app import FarmConsole
from farmtui.console.screens.confirm import ConfirmScreen
from farmtui.console.screens.help import HelpScreen
from farmtui.console.widgets.key_bar import KeyBar
from tests.console.conftest import synced, wait_for
from tests.console.real_farm import RealFarm
from tests.console.screen import screen_text


async def click_key_bar(pilot: object, app: FarmConsole, label: str) -> None:
    """Click the middle of ``label`` where the key bar shows it."""
    bar = app.screen.query_one(KeyBar)
    y = bar.region.y
    line = screen_text(app).splitlines()[y]
    assert f" {label}" in line, f"{label!r} is not in the key bar: {line!r}"
    x = line.index(f" {label}") + 1 + len(label) // 2
    await pilot.click(offset=(x, y))  # type: ignore[attr-defined]


async def test_clicking_a_key_runs_it_and_a_costly_one_still_asks(farm: RealFarm) -> None:
    job = farm.submit("shot_010")
    app = farm.app()
    async with app.run_test(size=(200, 50)) as pilot:
        await synced(pilot, app, job.id)
        await click_key_bar(pilot, app, "pause")
        await wait_for(pilot, lambda: farm.client.show(job.id).job.state == "paused")
        await wait_for(pilot, lambda: app.state.jobs[job.id].state == "paused")

        await click_key_bar(pilot, app, "cancel")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        await pilot.press("n")
        await wait_for(pilot, lambda: not isinstance(app.screen, ConfirmScreen))
        assert farm.client.show(job.id).job.state == "paused"
        await click_key_bar(pilot, app, "cancel")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        await pilot.press("y")
        await wait_for(pilot, lambda: farm.client.show(job.id).job.state == "cancelled")


async def test_the_key_bar_at_80_columns_opens_help_and_follows_the_focus(
    farm: RealFarm,
) -> None:
    job = farm.submit("shot_010", frames="1-20", chunk=5)
    app = farm.app()
    async with app.run_test(size=(80, 24)) as pilot:
        await synced(pilot, app, job.id)
        await click_key_bar(pilot, app, "keys")
        await wait_for(pilot, lambda: isinstance(app.screen, HelpScreen))
        await pilot.press("escape")
        await wait_for(pilot, lambda: not isinstance(app.screen, HelpScreen))
        # In the detail view the bar offers the frame grid's keys; a click opens the heat map.
        await pilot.press("2")
        await wait_for(pilot, lambda: "heat map" in screen_text(app).splitlines()[-1])
        await click_key_bar(pilot, app, "heat map")
        await wait_for(pilot, lambda: app.screen.detail.grid.heat)  # type: ignore[attr-defined]
        assert "time/frame" in screen_text(app)
