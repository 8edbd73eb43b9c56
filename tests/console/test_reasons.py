"""Why isn't it rendering: the Reason column and the detail view's ``why`` line,
with the reasons a real leader gives (paused, held, waiting on a job, no node)."""

from __future__ import annotations

import time

from farmtui.console.widgets.jobs_table import JobsTable
from farmtui.protocol import JobView
from farmtui.reasons import reason_line
from tests.console.conftest import synced, wait_for
from tests.console.real_farm import RealFarm
from tests.console.screen import screen_text


def waiting_jobs(farm: RealFarm) -> dict[str, JobView]:
    """Jobs that wait for different reasons: paused, held, after another, tagged."""
    sim = farm.submit("sim_capped", priority=10)
    paused = farm.submit("paused_shot")
    held = farm.submit("held_shot")
    after = farm.submit("comp_after_sim", after=[sim.id])
    tagged = farm.submit("gpu_shot", tags=["gpupool7"])
    farm.client.action("pause", [paused.id])
    farm.client.action("hold", [held.id])
    return {
        job.name: job
        for job in farm.client.jobs()
        if job.id in {sim.id, paused.id, held.id, after.id, tagged.id}
    }


async def test_each_reason_the_leader_gives_is_in_the_table_and_the_detail(
    farm: RealFarm,
) -> None:
    jobs = waiting_jobs(farm)
    kinds = {name: job.reason.kind for name, job in jobs.items() if job.reason is not None}
    assert kinds["paused_shot"] == "paused"
    assert kinds["held_shot"] == "held"
    assert kinds["comp_after_sim"] == "after"
    assert len(kinds) == len(jobs)  # nothing can run: every job says why
    app = farm.app()
    async with app.run_test(size=(130, 30)) as pilot:
        await synced(pilot, app, jobs["sim_capped"].id)
        table = app.screen.query_one(JobsTable)
        assert "Reason" in screen_text(app)
        for name, job in jobs.items():
            assert job.reason is not None
            expected = reason_line(job.reason, time.time())
            row = next(line for line in screen_text(app).splitlines() if name in line)
            assert row.rstrip().endswith(expected), (name, row)  # the whole text, not cut
            assert "—" in row  # nothing can run: no time remaining is estimated
            table.move_cursor_to_key(job.id)
            await pilot.press("enter")
            await synced(pilot, app, watched=job.id)
            await wait_for(pilot, lambda e=expected: f"why: {e}" in screen_text(app))  # type: ignore[misc]
            await pilot.press("1")


async def test_the_reason_gives_way_at_80x24(farm: RealFarm) -> None:
    jobs = waiting_jobs(farm)
    paused = jobs["paused_shot"]
    app = farm.app()
    async with app.run_test(size=(80, 24)) as pilot:
        await synced(pilot, app, jobs["sim_capped"].id)
        screen = screen_text(app)
        assert "Reason" not in screen
        assert "Owner" in screen  # the Reason column goes first
        assert "Done/Total" in screen
        app.screen.query_one(JobsTable).move_cursor_to_key(paused.id)
        await pilot.press("enter")
        await synced(pilot, app, watched=paused.id)
        assert paused.reason is not None
        assert f"why: {paused.reason.text}" in screen_text(app)


async def test_no_why_line_when_nothing_waits(farm: RealFarm) -> None:
    job = farm.submit("finished_by_hand")
    farm.client.action("complete", [job.id])
    assert farm.client.show(job.id).job.reason is None
    app = farm.app()
    async with app.run_test(size=(80, 24)) as pilot:
        await synced(pilot, app, job.id)
        await pilot.press("enter")
        await synced(pilot, app, job.id)
        assert "why:" not in screen_text(app)
