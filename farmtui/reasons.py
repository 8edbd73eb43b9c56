"""A job's wait reason as one line, and its estimate, the same in ``farm jobs``, ``farm show``
and the console."""

from __future__ import annotations

import time

from farmtui.protocol import JobView, WaitReason, is_operator_block

# Beyond this far ahead a time is shown with its date.
_SAME_DAY = 20 * 3600


def clock(timestamp: float, now: float | None = None) -> str:
    """``12:31:20`` in the reader's own time zone; ``Dec 03 12:31`` when not soon."""
    moment = time.localtime(timestamp)
    if abs(timestamp - (time.time() if now is None else now)) > _SAME_DAY:
        return time.strftime("%b %d %H:%M", moment)
    return time.strftime("%H:%M:%S", moment)


def block_end(until: float, now: float) -> str:
    """``until 12:39:00``, or ``until unblocked`` for an operator's block (its record says a
    year from now: shown as a time, it read as one already past)."""
    return "until unblocked" if is_operator_block(until, now) else f"until {clock(until, now)}"


def reason_line(reason: WaitReason | None, now: float | None = None) -> str:
    """``retry 2 of 3 at 12:31:20``, ``blocked on 3/3 nodes until 12:39:00``; "" for none."""
    if reason is None:
        return ""
    if reason.until is None:
        return reason.text
    word = "at" if reason.kind == "retry" else "until"
    return f"{reason.text} {word} {clock(reason.until, now)}"


# A job in these states is over: nothing of it is left to estimate, or to show as going on.
FINISHED: frozenset[str] = frozenset({"done", "cancelled"})


def shown_etr(job: JobView) -> float | None:
    """The estimate of time remaining as shown: none (a dash) once the job is over, where
    the record says 0 (``farm show`` and the console said "ETR 0s" of a finished job while
    ``farm jobs`` showed a dash)."""
    return None if job.state in FINISHED else job.stats.etr
