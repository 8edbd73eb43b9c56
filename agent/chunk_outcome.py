"""What an attempt's end means: a pure decision, like the leader's scheduler.

``ChunkRun`` gathers the facts (why it stopped, the exit code, how long it
ran, which expected files are missing or empty) and :func:`decide` says what
to report and which files to copy to the sync root. No I/O, no clock: it is
tested with plain values.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from agent.process_tree import exit_status
from farmtui.protocol import ChunkTimeouts

TimeoutKind = Literal["min_render", "max_render", "max_start"]
Outcome = Literal["done", "failed", "timeout", "killed"]
# Which files to copy to the sync root before reporting: none, the frames that
# exist (a timeout treated as success), or every expected file (success).
Deliver = Literal["none", "present", "expected"]


@dataclass(frozen=True, slots=True)
class Stop:
    """Why the agent stopped the chunk before it ended by itself."""

    outcome: Outcome
    reason: str
    kind: TimeoutKind | None = None


@dataclass(frozen=True, slots=True)
class Verdict:
    outcome: Outcome
    reason: str
    kind: TimeoutKind | None = None
    missing: tuple[int, ...] = ()
    deliver: Deliver = "none"
    # on_timeout=notify: tell the leader this limit passed; the outcome is unaffected.
    notify: TimeoutKind | None = None


def reason_for_exit(returncode: int) -> str:
    status = exit_status(returncode)
    return f"killed by {status}" if returncode < 0 else f"exited with {status}"


def decide(
    *,
    stop: Stop | None,
    returncode: int | None,
    elapsed: float,
    timeouts: ChunkTimeouts,
    missing: list[int],
    others: list[str],
) -> Verdict:
    """The outcome of an attempt whose whole tree is gone.

    ``returncode`` is None when the renderer never ran (or its status is
    unknown). A chunk is done only when the renderer exited 0, ran at least
    the minimum render time, and every expected file exists and is non-empty.
    """
    if stop is not None:
        deliver: Deliver = "none"
        if stop.outcome == "timeout" and timeouts.on_timeout == "complete":
            deliver = "present"  # the leader treats it as success: keep what was written
        return Verdict(stop.outcome, stop.reason, stop.kind, deliver=deliver)
    notify: TimeoutKind | None = None
    if timeouts.min_render is not None and elapsed < timeouts.min_render:
        if timeouts.on_timeout == "notify":
            notify = "min_render"
        else:
            why = timeout_reason("min_render", elapsed, timeouts.min_render)
            if returncode is not None:
                why += f", {reason_for_exit(returncode)}"
            return Verdict("timeout", why, "min_render")
    if returncode is None:
        return Verdict("failed", "the renderer's exit status is unknown", notify=notify)
    if returncode != 0:
        return Verdict("failed", reason_for_exit(returncode), notify=notify)
    if missing or others:
        what = []
        if missing:
            what.append(f"frame(s) {', '.join(map(str, missing))}")
        if others:
            what.append(", ".join(others))
        return Verdict(
            "failed",
            f"exited 0 but did not write {'; '.join(what)}",
            missing=tuple(missing),
            notify=notify,
        )
    return Verdict("done", "", deliver="expected", notify=notify)


def timeout_reason(kind: TimeoutKind, elapsed: float, limit: float) -> str:
    """``max_render timeout after 61.0 s (limit 60 s)``; an auto timeout's limit is a
    mean times a multiplier, shown to a tenth (it was ``limit 2.02525 s``)."""
    shown = f"{limit:.1f}".removesuffix(".0")
    return f"{kind} timeout after {elapsed:.1f} s (limit {shown} s)"
