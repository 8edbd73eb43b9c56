"""``farm events --follow`` against reads of the leader's events, one after another."""

from __future__ import annotations

import pytest

from farmtui.cli.farm_events import _follow
from farmtui.errors import LeaderDown, LeaderError
from farmtui.protocol import EventView


def event(time: float, text: str) -> EventView:
    return EventView(time=time, level="info", text=text)


def follow(reads: list[list[EventView] | Exception], limit: int) -> None:
    """``_follow`` over these reads, then a Ctrl-C; no read is shorter than ``limit``."""
    asked: list[int] = []

    def read(count: int) -> list[EventView]:
        asked.append(count)
        if not reads:
            raise KeyboardInterrupt
        answer = reads.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    with pytest.raises(KeyboardInterrupt):
        _follow(read, limit, interval=0.0, as_json=False)
    assert all(count >= limit for count in asked)


def test_the_latest_then_only_new_events_each_once(capsys: pytest.CaptureFixture[str]) -> None:
    """With ``--limit 1`` the first read was one event long: older events of the same
    moment looked new the next time, and were printed after it (break round 36b)."""
    same = [event(1.0, "a"), event(2.0, "b"), event(2.0, "c"), event(2.0, "d")]
    later = [*same, event(3.0, "e"), event(3.0, "f")]
    follow([same, same, later, later], limit=1)
    lines = [line.split(": ", 1)[1] for line in capsys.readouterr().out.splitlines()]
    assert lines == ["d", "e", "f"]


def test_a_leader_away_for_a_moment_is_waited_for(capsys: pytest.CaptureFixture[str]) -> None:
    """A proxy's 502 while the leader restarts ended the follow (break round 36b)."""
    reads: list[list[EventView] | Exception] = [
        [event(1.0, "a")],
        LeaderError("HTTP 502 Bad Gateway", 502),
        LeaderDown("cannot reach the leader"),
        [event(1.0, "a"), event(2.0, "b")],
    ]
    follow(reads, limit=5)
    captured = capsys.readouterr()
    assert [line.split(": ", 1)[1] for line in captured.out.splitlines()] == ["a", "b"]
    assert "still following" in captured.err
    with pytest.raises(LeaderError):  # a refusal is no outage: said at once
        follow([LeaderError("the token was refused", 401)], limit=5)
