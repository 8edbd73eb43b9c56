"""A job's wait reason as one line, the same in ``farm jobs``, ``farm show`` and the console."""

from __future__ import annotations

import time

from farmtui.protocol import WaitReason

# Beyond this far ahead a time is shown with its date.
_SAME_DAY = 20 * 3600


def clock(timestamp: float, now: float | None = None) -> str:
    """``12:31:20`` in the reader's own time zone; ``Dec 03 12:31`` when not soon."""
    moment = time.localtime(timestamp)
    if abs(timestamp - (time.time() if now is None else now)) > _SAME_DAY:
        return time.strftime("%b %d %H:%M", moment)
    return time.strftime("%H:%M:%S", moment)


def reason_line(reason: WaitReason | None, now: float | None = None) -> str:
    """``retry 2 of 3 at 12:31:20``, ``blocked on 3/3 nodes until 12:39:00``; "" for none."""
    if reason is None:
        return ""
    if reason.until is None:
        return reason.text
    word = "at" if reason.kind == "retry" else "until"
    return f"{reason.text} {word} {clock(reason.until, now)}"
