"""The console's model, without a terminal: folding messages, order, rows, frames."""

from __future__ import annotations

import pytest

from farmtui.console import fmt
from farmtui.console.job_list import JobList
from farmtui.console.link import Backoff, console_url
from farmtui.console.state import Change, ConsoleState, GroupHeader
from farmtui.protocol import (
    ChunksChanged,
    ChunkView,
    EventView,
    FramesChanged,
    JobsChanged,
    JobsRemoved,
    JobWatched,
    Reply,
)
from tests.console.scripted_leader import ScriptedLeader


@pytest.fixture
def synced(leader: ScriptedLeader) -> tuple[ConsoleState, ScriptedLeader]:
    """A console state that received the real leader's snapshot of the standard farm."""
    state = ConsoleState()
    state.apply(leader.snapshot(), Change())
    return state, leader


def test_snapshot_then_dispatch_order(synced: tuple[ConsoleState, ScriptedLeader]) -> None:
    state, _ = synced
    assert state.dispatch_order() == ["j1", "j2", "j3", "j4", "j5"]
    assert state.role == "admin"
    assert state.is_admin


def test_job_change_marks_order_only_when_the_order_moves(
    synced: tuple[ConsoleState, ScriptedLeader],
) -> None:
    state, leader = synced
    change = Change()
    leader.action("pause", ["j2"])
    state.apply(JobsChanged(jobs=[leader.job("j2")]), change)
    assert change.jobs == {"j2"}
    assert not change.order
    change = Change()
    leader.run(lambda now: leader.leader.scheduler.set_priority("j5", 0, "admin", now))
    state.apply(JobsChanged(jobs=[leader.job("j5")]), change)
    assert change.order
    assert state.dispatch_order()[0] == "j5"


def test_removed_jobs_leave(synced: tuple[ConsoleState, ScriptedLeader]) -> None:
    state, _ = synced
    change = Change()
    state.apply(JobsRemoved(job_ids=["j3", "nope"]), change)
    assert change.removed == {"j3"}
    assert "j3" not in state.dispatch_order()


def test_rows_filter_group_and_archived(synced: tuple[ConsoleState, ScriptedLeader]) -> None:
    state, leader = synced
    state.apply(JobsChanged(jobs=[leader.job("j6")]), Change())
    assert "j6" not in JobList().rows(state)
    assert "j6" in JobList(show_archived=True).rows(state)
    listing = JobList()
    assert listing.set_filter("ALICE") is None
    assert listing.rows(state) == ["j1", "j4"]
    rows = JobList(group_by="priority").rows(state)
    assert rows[0] == GroupHeader("Priority 10", 1)
    assert rows[2] == GroupHeader("Priority 50", 3)
    by_state = JobList(group_by="state").rows(state)
    assert by_state[0] == GroupHeader("Rendering", 1)


def test_watched_frames_and_chunks(synced: tuple[ConsoleState, ScriptedLeader]) -> None:
    state, leader = synced
    change = Change()
    state.apply(JobWatched(detail=leader.detail("j1")), change)
    assert change.watched
    watched = state.watched
    assert watched is not None
    assert watched.counts[watched.states[0]] == 30  # done
    change = Change()
    state.apply(FramesChanged(job_id="j1", frames=[1, 2, 999], state="failed"), change)
    assert change.frames == [0, 1]
    assert watched.state_of(1) == "failed"
    # Frames of another job are ignored.
    change = Change()
    state.apply(FramesChanged(job_id="j2", frames=[1], state="done"), change)
    assert change.frames == []
    change = Change()
    state.apply(ChunksChanged(job_id="j1", chunks=[ChunkView(index=99)]), change)
    assert change.chunks == {99}
    assert change.new_chunks
    assert watched.chunk_order[-1] == 99


def test_replies_and_own_events(synced: tuple[ConsoleState, ScriptedLeader]) -> None:
    state, _ = synced
    change = Change()
    state.apply(Reply(request_id=3, ok=False, error="no"), change)
    assert change.replies[0].error == "no"
    event = state.log("warn", "hello")
    assert state.events[-1] is event


@pytest.mark.parametrize(
    ("leader", "url"),
    [
        ("http://127.0.0.1:7878", "ws://127.0.0.1:7878/ws/console"),
        ("https://farm.example:443/", "wss://farm.example:443/ws/console"),
        ("127.0.0.1:7878", "ws://127.0.0.1:7878/ws/console"),
    ],
)
def test_console_url(leader: str, url: str) -> None:
    assert console_url(leader) == url


def test_backoff_grows_and_caps() -> None:
    backoff = Backoff(base=1, cap=8, jitter=0)
    assert [backoff.delay(n) for n in (1, 2, 3, 4, 5, 9)] == [1, 2, 4, 8, 8, 8]


def test_formatters() -> None:
    assert fmt.duration(95) == "1m35s"
    assert fmt.duration(3700) == "1h01m"
    assert fmt.duration(None) == "—"
    assert fmt.bar(0.5, 8) == "████░░░░"
    assert len(fmt.bar(0.33, 8)) == 8
    assert fmt.frame_range([1, 2, 3]) == "1-3"
    assert fmt.frame_range([1, 3, 5]) == "1-5x2"
    assert fmt.parse_duration("1h30m") == 5400
    assert fmt.parse_duration("90") == 90
    with pytest.raises(ValueError, match="not a duration"):
        fmt.parse_duration("5x")


def test_a_watched_job_the_list_does_not_hold_stays_out_of_it(
    synced: tuple[ConsoleState, ScriptedLeader],
) -> None:
    """The detail of a job came back after the leader had removed the job from this
    console's list (archived while its watch was on the way): the job reappeared in the
    jobs table, archived, and stayed. Watching a job shows it; the list is the leader's."""
    state, leader = synced
    leader.action("archive", ["j3"])
    change = Change()
    state.apply(JobsRemoved(job_ids=["j3"]), change)
    state.apply(JobWatched(detail=leader.detail("j3")), change)
    assert "j3" not in state.jobs
    assert state.watched is not None
    assert state.watched.job.archived
    assert "j6" not in state.jobs  # archived from the start: watched, never listed
    state.apply(JobWatched(detail=leader.detail("j6")), Change())
    assert "j6" not in state.jobs


def test_events_a_restarted_leader_reads_back_are_not_shown_twice() -> None:
    """After a leader restart the console back-fills the Monitor Log from events the
    leader read back from the jobs' ``events.log``: to the millisecond and on one
    line. Compared exactly with those it had live, every one of them showed twice."""
    from server.history import parse_event_line
    from server.joblogs import event_line

    state = ConsoleState()
    live = [
        EventView(time=1_796_510_675.123456, level="info", text="job j1 queued -> rendering",
                  job_id="j1", actor="alice"),
        EventView(time=1_796_510_675.999999, level="warn", text="chunk 3 failed:\nexit 1",
                  job_id="j1"),
    ]  # fmt: skip
    state.backfill(live)
    read_back = [parse_event_line(event_line(e).rstrip("\n"), "j1") for e in live]
    assert all(e is not None for e in read_back)
    state.backfill([e for e in read_back if e is not None])
    assert [" ".join(e.text.splitlines()) for e in state.events] == [
        "job j1 queued -> rendering",
        "chunk 3 failed: exit 1",
    ]
