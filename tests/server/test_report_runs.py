"""How a frame's messages are cut into steps of the group commit (``agent_reports.runs``)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from farmtui.protocol import AgentLog, AgentToLeader, Heartbeat
from server.agent_reports import REPORTS_PER_STEP, runs

messages = st.lists(
    st.one_of(
        st.builds(Heartbeat, beat=st.integers(0, 5), seq=st.sampled_from([0, 7])),
        st.builds(AgentLog, lines=st.just(["x"]), seq=st.integers(0, 9)),
    ),
    max_size=3 * REPORTS_PER_STEP,
)


@given(messages)
def test_runs_keep_the_order_hold_heartbeats_alone_and_stay_short(
    frame: list[AgentToLeader],
) -> None:
    cut = list(runs(frame))
    assert [message for run in cut for message in run] == frame  # nothing lost, no reorder
    for run in cut:
        assert 1 <= len(run) <= REPORTS_PER_STEP
        if any(isinstance(message, Heartbeat) for message in run):
            assert len(run) == 1  # answered as soon as it is read, never behind a report


def test_reports_between_two_heartbeats_are_one_run() -> None:
    logs = [AgentLog(lines=[str(n)], seq=n + 1) for n in range(3)]
    beat = Heartbeat(beat=1)
    assert [len(run) for run in runs([*logs, beat, *logs])] == [3, 1, 3]
