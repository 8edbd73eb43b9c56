"""The outcome of an attempt, decided from plain facts (no processes, no clock)."""

from __future__ import annotations

import pytest

from agent.chunk_outcome import Stop, Verdict, decide
from farmtui.protocol import ChunkTimeouts


def _decide(
    *,
    stop: Stop | None = None,
    returncode: int | None = 0,
    elapsed: float = 10.0,
    timeouts: ChunkTimeouts | None = None,
    missing: list[int] | None = None,
    others: list[str] | None = None,
) -> Verdict:
    return decide(
        stop=stop,
        returncode=returncode,
        elapsed=elapsed,
        timeouts=timeouts or ChunkTimeouts(),
        missing=missing or [],
        others=others or [],
    )


def test_exit_zero_with_every_file_is_done_and_copies_them() -> None:
    assert _decide() == Verdict("done", "", deliver="expected")


@pytest.mark.parametrize(
    ("returncode", "reason"), [(1, "exited with 1"), (-9, "killed by SIGKILL"), (None, "unknown")]
)
def test_a_bad_exit_fails_and_copies_nothing(returncode: int | None, reason: str) -> None:
    verdict = _decide(returncode=returncode)
    assert (verdict.outcome, verdict.deliver) == ("failed", "none")
    assert reason in verdict.reason


def test_exit_zero_without_its_frames_fails_naming_them() -> None:
    verdict = _decide(missing=[3, 4], others=["renders/extra.txt"])
    assert verdict.outcome == "failed"
    assert verdict.reason == "exited 0 but did not write frame(s) 3, 4; renders/extra.txt"
    assert verdict.missing == (3, 4)


def test_a_stop_wins_and_only_complete_keeps_what_was_written() -> None:
    killed = _decide(stop=Stop("killed", "cancel by bob"))
    assert (killed.outcome, killed.reason, killed.deliver) == ("killed", "cancel by bob", "none")
    stop = Stop("timeout", "max_render timeout", "max_render")
    assert _decide(stop=stop).deliver == "none"
    complete = _decide(stop=stop, timeouts=ChunkTimeouts(on_timeout="complete"))
    assert (complete.outcome, complete.kind, complete.deliver) == (
        "timeout",
        "max_render",
        "present",
    )


def test_too_fast_is_a_min_render_timeout_unless_it_only_notifies() -> None:
    fast = _decide(elapsed=0.5, timeouts=ChunkTimeouts(min_render=2.0))
    assert (fast.outcome, fast.kind) == ("timeout", "min_render")
    assert fast.reason.endswith("exited with 0")
    notify = _decide(elapsed=0.5, timeouts=ChunkTimeouts(min_render=2.0, on_timeout="notify"))
    assert (notify.outcome, notify.notify) == ("done", "min_render")


def test_a_timeouts_limit_is_shown_to_a_tenth_of_a_second() -> None:
    """An auto timeout (a mean times a multiplier) showed as ``limit 2.02525 s``."""
    from agent.chunk_outcome import timeout_reason

    assert timeout_reason("max_render", 3.04, 2.02525) == (
        "max_render timeout after 3.0 s (limit 2 s)"
    )
    assert timeout_reason("max_render", 61.0, 60.0).endswith("(limit 60 s)")
    assert timeout_reason("min_render", 1.0, 2.25).endswith("(limit 2.2 s)")
