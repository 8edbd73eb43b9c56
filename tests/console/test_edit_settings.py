"""The settings dialog checks a change as the leader will, and sends nothing it would refuse.

The job (on a real leader) has a maximum render time of 1 h and 3 retries. The
refusals are the words of ``farmtui.jobfields`` (the same the leader, ``farm
set`` and PATCH give, see tests/server/test_job_fields.py), led by the input's label.
"""

from __future__ import annotations

from textual.pilot import Pilot
from textual.widgets import Input

from farmtui.console import fmt
from farmtui.console.app import FarmConsole
from farmtui.console.screens.edit_settings import EditSettingsScreen
from farmtui.console.widgets.job_detail import JobDetailPanel
from farmtui.protocol import JobView, Timeouts
from server.scheduler_config import SchedulerConfig
from tests.console.conftest import synced, wait_for
from tests.console.real_farm import RealFarm
from tests.console.screen import screen_text


def an_hour_max(farm: RealFarm) -> JobView:
    return farm.submit(
        "shot_010", timeouts=Timeouts(max_render=3600.0, on_timeout="requeue"), retries=3
    )


async def open_settings(pilot: Pilot[None], app: FarmConsole, job: JobView) -> EditSettingsScreen:
    await synced(pilot, app, job.id)
    await pilot.press("enter")
    await pilot.pause()
    await pilot.press("e")
    await wait_for(pilot, lambda: isinstance(app.screen, EditSettingsScreen))
    assert isinstance(app.screen, EditSettingsScreen)
    return app.screen


async def type_into(pilot: Pilot[None], screen: EditSettingsScreen, widget: str, text: str) -> None:
    screen.query_one(f"#{widget}", Input).value = text
    await pilot.pause()


REFUSED = [
    (
        "edit-min-render",
        "2h",
        "Min render: the minimum render time (7200s) is longer than the maximum render "
        "time (3600s)",
    ),
    (
        "edit-max-render",
        "0",
        "Max render: the maximum render time must be more than 0 (leave it unset for no limit)",
    ),
    ("edit-max-start", "soon", "Max start: bad duration 'soon'"),
    ("edit-retries", "-1", "Retries: -1 is out of range (0-1000000)"),
    ("edit-retries", "[b]x", "Retries: '[b]x' is not a whole number"),
]


async def test_a_change_the_leader_would_refuse_is_refused_here(farm: RealFarm) -> None:
    job = an_hour_max(farm)
    app = farm.app()
    async with app.run_test(size=(80, 24), notifications=True) as pilot:
        screen = await open_settings(pilot, app, job)
        for widget, text, message in REFUSED:
            field = screen.query_one(f"#{widget}", Input)
            before = field.value
            await type_into(pilot, screen, widget, text)
            await pilot.press("ctrl+s")
            await wait_for(
                pilot, lambda message=message: screen.refusal.startswith(message), what=message
            )
            assert app.screen is screen  # still open, to correct the value
            # Said in the dialog, the buttons in sight: a toast covered them at 80x24.
            await pilot.pause()
            said = screen.query_one("#edit-refusal").region
            assert said.height
            assert not said.overlaps(screen.query_one("#edit-buttons").region)
            assert message[:40] in screen_text(app)
            field.value = before
        await pilot.press("escape")
        await wait_for(pilot, lambda: not isinstance(app.screen, EditSettingsScreen))
    # The leader's job is as it was: nothing was sent.
    spec = farm.client.show(job.id).job.spec
    assert (spec.timeouts, spec.retries) == (job.spec.timeouts, 3)


async def test_a_good_change_is_sent_with_the_other_timeouts_kept(farm: RealFarm) -> None:
    job = an_hour_max(farm)
    app = farm.app()
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_settings(pilot, app, job)
        await type_into(pilot, screen, "edit-min-render", "30s")
        await type_into(pilot, screen, "edit-max-start", "")
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: farm.client.show(job.id).job.spec.timeouts.min_render == 30.0)
        t = farm.client.show(job.id).job.spec.timeouts
        assert app.state.jobs[job.id].spec.timeouts == t
        assert (t.min_render, t.max_render, t.max_start, t.on_timeout) == (
            30.0,
            3600.0,
            None,
            "requeue",
        )


async def test_a_job_without_its_own_retries_shows_the_leaders(farm: RealFarm) -> None:
    """The leader's numbers are shown, not just "leader default" or a dash, in the dialog
    and the tab: its retries, first retry delay and longest delay."""
    leaders = f"{SchedulerConfig().retries} (leader default)"  # the shared leader's config
    job = farm.submit("shot_020")
    assert job.spec.retries is None
    app = farm.app()
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await open_settings(pilot, app, job)
        assert screen.query_one("#edit-retries", Input).placeholder == leaders
        assert leaders in screen_text(app)
        await pilot.press("escape")
        await wait_for(pilot, lambda: not isinstance(app.screen, EditSettingsScreen))
        app.query_one(JobDetailPanel).show_tab("tab-settings")
        config = SchedulerConfig()
        row = (
            f"Retries  {leaders}  delay {fmt.duration(config.retry_delay)} (leader default)"
            f"  cap {fmt.duration(config.retry_cap)} (leader default)"
        )
        await wait_for(pilot, lambda: row in screen_text(app), what=row)


def test_a_settings_duration_under_a_minute_is_shown_as_set() -> None:
    """A job's own --retry-delay 0.4s showed as "delay 0s" (break round 35a)."""
    from farmtui.console.widgets.job_detail import settings_text
    from farmtui.protocol import JobSpec, JobView, Timeouts

    spec = JobSpec(retry_delay=0.4, retry_cap=90, timeouts=Timeouts(max_render=1.5))
    job = JobView(
        id="j", name="n", owner="o", state="queued", priority=50, position=0, frames="1",
        chunk=1, renderer="generic", spec=spec,
    )  # fmt: skip
    text = settings_text(job).plain
    assert "delay 0.4s  cap 1m30s" in text
    assert "Max render  1.5s" in text
