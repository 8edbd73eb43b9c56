"""Why isn't it rendering: the Reason column and the detail view's ``why`` line."""

from __future__ import annotations

import pytest

from farmtui.console.widgets.jobs_table import JobsTable
from farmtui.protocol import JobStats, ReasonKind, WaitReason
from farmtui.reasons import reason_line
from tests.console.conftest import NOW, make_app, synced
from tests.console.fake_leader import FakeLeader
from tests.console.screen import screen_text

# One reason of each kind, as the leader words them, on the five listed jobs.
REASONS: list[tuple[str, ReasonKind, str, float | None]] = [
    ("j1", "retry", "retry (attempt 3/4)", NOW + 80),
    ("j2", "tags", "no node has tag gpupool7", None),
    ("j3", "blocked", "blocked on 3/3 nodes", NOW + 600),
    ("j4", "paused", "paused by alice", None),
    ("j5", "limit", "machine limit 2 reached", None),
]


@pytest.fixture
def reasons(leader: FakeLeader) -> FakeLeader:
    for job_id, kind, text, until in REASONS:
        job = leader.jobs[job_id]
        leader.set_job(
            job_id,
            state="queued",
            reason=WaitReason(kind=kind, text=text, until=until),
            stats=JobStats(frames_total=job.stats.frames_total, etr=None),
        )
    return leader


@pytest.mark.parametrize(("job_id", "kind", "text", "until"), REASONS)
async def test_each_reason_is_shown_in_the_table_and_the_detail(
    reasons: FakeLeader, job_id: str, kind: ReasonKind, text: str, until: float | None
) -> None:
    app = make_app(reasons.url)
    expected = reason_line(WaitReason(kind=kind, text=text, until=until), NOW)
    async with app.run_test(size=(130, 30)) as pilot:
        await synced(pilot, app)
        table = app.screen.query_one(JobsTable)
        screen = screen_text(app)
        assert "Reason" in screen
        row = next(line for line in screen.splitlines() if reasons.jobs[job_id].name in line)
        assert expected in row
        assert row.rstrip().endswith(expected)  # the whole text, not cut
        # Nothing can run: no time remaining is estimated.
        assert "—" in row
        table.move_cursor_to_key(job_id)
        await pilot.press("enter")
        await synced(pilot, app, watched=job_id)
        assert f"why: {expected}" in screen_text(app)
    if until is not None:
        assert ("at " if kind == "retry" else "until ") in expected


async def test_the_reason_gives_way_at_80x24(reasons: FakeLeader) -> None:
    app = make_app(reasons.url)
    async with app.run_test(size=(80, 24)) as pilot:
        await synced(pilot, app)
        screen = screen_text(app)
        assert "Reason" not in screen
        assert "Owner" in screen  # the Reason column goes first
        assert "Done/Total" in screen
        await pilot.press("enter")
        await synced(pilot, app)
        assert "why: retry (attempt 3/4) at " in screen_text(app)


async def test_no_why_line_when_nothing_waits(leader: FakeLeader) -> None:
    app = make_app(leader.url)
    async with app.run_test(size=(80, 24)) as pilot:
        await synced(pilot, app)
        await pilot.press("enter")
        await synced(pilot, app)
        assert "why:" not in screen_text(app)
