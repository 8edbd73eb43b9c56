"""What the jobs table shows: the ``/`` filter syntax, ``s`` sort, ``H`` hide finished."""

from __future__ import annotations

import pytest

from farmtui.console.job_list import FilterError, JobList, parse_filter
from farmtui.console.state import Change, ConsoleState
from farmtui.console.widgets.jobs_table import JobsTable
from tests.console.conftest import make_app, synced, wait_for
from tests.console.screen import screen_text
from tests.console.scripted_leader import ScriptedLeader


@pytest.fixture
def console_state(leader: ScriptedLeader) -> ConsoleState:
    """The standard farm as a console holds it after the real leader's snapshot."""
    state = ConsoleState()
    state.apply(leader.snapshot(include_archived=True), Change())
    return state


def test_filter_terms_words_and_states(console_state: ConsoleState) -> None:
    def shown(listing: JobList, text: str = "") -> list[object]:
        assert listing.set_filter(text) is None
        return listing.rows(console_state)

    listing = JobList()
    assert shown(listing, "owner:alice") == ["j1", "j4"]
    assert shown(listing, "state:failed") == ["j3"]
    assert shown(listing, "state:fail,paus") == ["j3", "j4"]  # abbreviations and lists
    assert shown(listing, "state:rend owner:alice") == ["j1"]
    assert shown(listing, "shot_0 owner:alice") == ["j1", "j4"]
    assert shown(listing, "turn") == ["j5"]
    assert shown(listing, "pri:<50") == ["j1"]
    assert shown(listing, "pri:50 name:fx") == ["j3"]
    assert shown(listing, "state:") == ["j1", "j2", "j3", "j4", "j5"]  # still typing


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("colour:red", "unknown filter colour:"),
        ("state:sleeping", "no job state"),
        ("pri:x", "pri:"),
    ],
)
def test_a_filter_that_cannot_be_read_says_why_and_keeps_the_old_one(
    text: str, problem: str
) -> None:
    with pytest.raises(FilterError, match=problem):
        parse_filter(text)
    listing = JobList()
    assert listing.set_filter("owner:bob") is None
    error = listing.set_filter(text)
    assert error is not None
    assert problem in error
    assert listing.text_filter == "owner:bob"


def test_sort_and_hide_finished(console_state: ConsoleState) -> None:
    listing = JobList()
    assert listing.rows(console_state) == ["j1", "j2", "j3", "j4", "j5"]
    assert listing.reorderable
    assert listing.next_sort() == "name"
    assert not listing.reorderable
    assert listing.rows(console_state) == ["j1", "j2", "j3", "j4", "j5"]  # shot_010 ... turntable
    listing.next_sort()
    assert listing.sort == "owner"
    assert listing.rows(console_state) == ["j1", "j4", "j2", "j3", "j5"]  # alice, alice, bob ...
    listing.sort = "dispatch"
    listing.hide_finished = True
    assert listing.rows(console_state) == ["j1", "j2", "j3", "j4"]  # turntable (done) hidden


async def test_sort_hide_and_filter_keys(leader: ScriptedLeader) -> None:
    app = make_app(leader)
    async with app.run_test(size=(80, 24)) as pilot:
        await synced(pilot, app)
        table = app.screen.query_one(JobsTable)
        await pilot.press("s")  # name
        await pilot.press("s")  # owner
        await pilot.pause()
        assert table.keys == ["j1", "j4", "j2", "j3", "j5"]
        assert "Owner▼" in screen_text(app)
        assert "sort owner" in screen_text(app)
        await pilot.press(*["s"] * 4)  # back to dispatch order
        await pilot.pause()
        assert table.keys == ["j1", "j2", "j3", "j4", "j5"]
        assert "▼" not in screen_text(app)
        await pilot.press("H")
        await wait_for(pilot, lambda: "j5" not in table.keys)
        assert "−finished" in screen_text(app)
        await pilot.press("H")
        await wait_for(pilot, lambda: "j5" in table.keys)
        await pilot.press("slash", *"state:fail,paus", "enter")
        await wait_for(pilot, lambda: table.keys == ["j3", "j4"])
        # A job that leaves the filter's state leaves the table.
        leader.action("resume", ["j4"])
        await wait_for(pilot, lambda: table.keys == ["j3"])


def test_snapshot_alone_is_no_transition(leader: ScriptedLeader) -> None:
    state = ConsoleState()
    change = Change()
    state.apply(leader.snapshot(), change)
    assert change.transitions == []
