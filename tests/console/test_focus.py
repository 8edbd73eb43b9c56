"""Where the keyboard focus goes: Escape comes back to the jobs table in the wide
layout, ``t`` cycles the detail tabs from any of them (issue 11, defect 6)."""

from __future__ import annotations

from textual.widgets import Select, TabbedContent

from farmtui.console.app import FarmConsole
from farmtui.console.widgets.jobs_table import JobsTable
from farmtui.console.widgets.logs_panel import LogsPanel
from tests.console.conftest import synced
from tests.console.real_farm import RealFarm

WIDE = (160, 48)


def active_tab(app: FarmConsole) -> str:
    return app.screen.query_one("#detail-tabs", TabbedContent).active


def focused(app: FarmConsole) -> str | None:
    return app.focused.id if app.focused is not None else None


async def test_escape_from_the_chunk_table_returns_to_the_jobs_table(farm: RealFarm) -> None:
    job = farm.submit("shot_010", frames="1-20", chunk=5)
    app = farm.app()
    async with app.run_test(size=WIDE) as pilot:
        await synced(pilot, app, job.id)
        await pilot.press("enter", "t")
        assert focused(app) == "chunk-table"
        await pilot.press("escape")
        assert app.screen.query_one(JobsTable).has_focus


async def test_escape_from_a_click_on_the_right_returns_to_the_jobs_table(
    farm: RealFarm,
) -> None:
    job = farm.submit("shot_010", frames="1-20", chunk=5)
    app = farm.app()
    async with app.run_test(size=WIDE) as pilot:
        await synced(pilot, app, job.id)  # the jobs view is current; the detail is on the right
        await pilot.click("#frame-grid")
        assert focused(app) == "frame-grid"
        await pilot.press("escape")
        assert app.screen.query_one(JobsTable).has_focus


async def test_t_cycles_the_detail_tabs_from_settings_too(farm: RealFarm) -> None:
    job = farm.submit("shot_010", frames="1-20", chunk=5)
    app = farm.app()
    async with app.run_test(size=(80, 24)) as pilot:
        await synced(pilot, app, job.id)
        await pilot.press("enter", "t", "t")
        assert active_tab(app) == "tab-settings"
        await pilot.press("t")
        assert active_tab(app) == "tab-events"
        await pilot.press("t")
        assert active_tab(app) == "tab-frames"
        assert focused(app) == "frame-grid"


async def test_3_gives_the_keyboard_to_the_log_not_its_source_picker(farm: RealFarm) -> None:
    """The source picker had the focus: the first arrow pressed to scroll the log opened
    the picker's list instead (break round 34b)."""
    job = farm.submit("shot_010", frames="1-20", chunk=5)
    app = farm.app()
    async with app.run_test(size=WIDE) as pilot:
        await synced(pilot, app, job.id)
        await pilot.press("3")
        assert focused(app) == "monitor-log"
        await pilot.press("down", "up")
        await pilot.pause()
        assert not app.screen.query_one("#logs-source", Select).expanded
        assert focused(app) == "monitor-log"
        await pilot.press("shift+tab")
        assert focused(app) == "logs-level", "the pickers are above it"
        app.screen.query_one(LogsPanel).show_source("task")
        await pilot.press("1", "3")
        assert focused(app) == "task-chunks", "Task Output: its chunk list"
