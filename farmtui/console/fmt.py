"""Small text formatters shared by the console's widgets (durations, clock times, bars).

``plain`` and ``plain_content`` are how any text that came from someone else
(job names, owners, paths, node names, log lines, the leader's errors) reaches
the screen: as plain text, never as markup, with control characters shown as
escapes (``farmtui.printable``). A ``str`` handed to a Textual widget is markup
(``Static``, ``Label``, ``Option``, a ``DataTable`` cell, a tooltip, a border
title), so a job named ``[/oops]`` would crash it and ``[@click=app.quit]``
would become a hidden action.
"""

from __future__ import annotations

import time

from rich.style import Style
from rich.text import Text
from textual.content import Content

from farmtui.printable import printable

EMPTY = "—"


def plain(text: str, style: str | Style = "", *, multiline: bool = False) -> Text:
    """Untrusted ``text`` as a Rich ``Text``: no markup, control characters escaped."""
    return Text(printable(text, multiline=multiline), style=style, end="")


def plain_content(text: str, *, multiline: bool = False) -> Content:
    """Untrusted ``text`` as a Textual ``Content`` (for border titles and the like)."""
    return Content(printable(text, multiline=multiline))


def log_lines(lines: list[str]) -> list[str]:
    """Log lines as a ``Log`` shows them: control characters escaped, tabs kept (it expands them).

    Textual's ``Log`` replaces only some control codes and lets ESC through to the terminal.
    """
    return [printable(line, multiline=True) for line in lines]


def duration(seconds: float | None) -> str:
    """``95`` -> ``1m35s``; ``None`` -> an em dash. Compact enough for a table cell."""
    if seconds is None or seconds < 0:
        return EMPTY
    total = int(round(seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


def setting(seconds: float | None) -> str:
    """A duration a job is set to, as set: ``0.4`` -> ``0.4s`` (``duration`` said 0s),
    ``90`` -> ``1m30s``."""
    if seconds is not None and 0 < seconds < 60 and seconds != int(seconds):
        return f"{seconds:.2f}".rstrip("0").rstrip(".") + "s"
    return duration(seconds)


def leader_default(shown: str | None) -> str:
    """A job field left to the leader: the leader's value (as shown), when it said it."""
    return "leader default" if shown is None else f"{shown} (leader default)"


def clock(timestamp: float | None) -> str:
    """A wall-clock time of day in local time, ``HH:MM:SS``."""
    if timestamp is None:
        return EMPTY
    return time.strftime("%H:%M:%S", time.localtime(timestamp))


_EIGHTHS = " ▏▎▍▌▋▊▉"


def bar(fraction: float, width: int) -> str:
    """A text progress bar of exactly ``width`` cells, with eighth-cell resolution."""
    fraction = min(max(fraction, 0.0), 1.0)
    eighths = int(round(fraction * width * 8))
    full, part = divmod(eighths, 8)
    text = "█" * full
    if full < width:
        text += _EIGHTHS[part] if part else "░"
        text += "░" * (width - full - 1)
    return text


def percent(done: int, total: int) -> str:
    """``3/4`` -> `` 75%``; always four cells."""
    if total <= 0:
        return "  0%"
    return f"{int(100 * done / total):3d}%"


_UNITS = {"h": 3600, "m": 60, "s": 1}


def parse_duration(text: str) -> float | None:
    """``90``, ``90s``, ``5m``, ``1h30m`` -> seconds; empty -> None. ValueError otherwise."""
    text = text.strip().lower()
    if not text:
        return None
    try:
        return float(text)
    except ValueError:
        pass
    total = 0.0
    number = ""
    for char in text:
        if char.isdigit() or char == ".":
            number += char
        elif char in _UNITS and number:
            total += float(number) * _UNITS[char]
            number = ""
        else:
            raise ValueError(f"not a duration: {text!r} (try 90, 90s, 5m, 1h30m)")
    if number:
        raise ValueError(f"not a duration: {text!r} (a number needs a unit after another)")
    return total


def frame_range(frames: list[int]) -> str:
    """A chunk's frames, compactly: ``1-10``, ``1-19x2``, ``7``, or ``1,4,9`` when irregular."""
    if not frames:
        return EMPTY
    if len(frames) == 1:
        return str(frames[0])
    step = frames[1] - frames[0]
    if step and all(b - a == step for a, b in zip(frames, frames[1:], strict=False)):
        return f"{frames[0]}-{frames[-1]}" + (f"x{step}" if abs(step) != 1 else "")
    return ",".join(map(str, frames))


# Abbreviations by design, so a state fits its column at 80x24 instead of being cut
# ("renderin…"). The ``?`` overlay lists them (``ABBREVIATIONS``).
JOB_STATE_SHORT: dict[str, str] = {
    "queued": "wait",
    "rendering": "rend",
    "paused": "paus",
    "holding": "hold",
    "done": "done",
    "failed": "fail",
    "cancelled": "canc",
}
CHUNK_STATE_SHORT: dict[str, str] = {
    "queued": "wait",
    "assigned": "rend",
    "waiting-retry": "retry",
    # Requeued by the farm, no retry used: its node lost, taken back, its agent stopped.
    "preempted": "requ",
    "done": "done",
    "failed": "fail",
    "held": "held",
    "excluded": "excl",
    "cancelled": "canc",
}
NODE_STATE_SHORT: dict[str, str] = {"online": "on", "offline": "off", "disabled": "dis"}
REVIEWED_MARK = "✓"
ARCHIVED_MARK = "▾"
ABBREVIATIONS: tuple[tuple[str, dict[str, str]], ...] = (
    ("job", JOB_STATE_SHORT),
    ("chunk", CHUNK_STATE_SHORT),
    ("node", NODE_STATE_SHORT),
)


def job_state(state: str, *, reviewed: bool = False, archived: bool = False) -> str:
    """``rendering`` reviewed -> ``rend✓``: a job's state and flags in five cells or fewer."""
    text = JOB_STATE_SHORT.get(state, state[:4])
    return text + (REVIEWED_MARK if reviewed else "") + (ARCHIVED_MARK if archived else "")


def ago(seconds: float) -> str:
    """How long ago, in at most four cells: ``now``, ``42s``, ``5m``, ``3h``, ``2d``."""
    if seconds < 2:
        return "now"
    if seconds < 60:
        return f"{int(seconds)}s"
    if seconds < 3600:
        return f"{int(seconds // 60)}m"
    if seconds < 86400:
        return f"{int(seconds // 3600)}h"
    return f"{int(seconds // 86400)}d"


_SPARKS = "▁▂▃▄▅▆▇█"


def sparkline(values: list[float], width: int, top: float = 100.0) -> str:
    """The last ``width`` readings (0..``top``) as a bar per cell, left-padded with spaces."""
    shown = values[-width:]
    bars = "".join(
        _SPARKS[min(int(max(value, 0.0) / top * len(_SPARKS)), len(_SPARKS) - 1)] for value in shown
    )
    return " " * (width - len(shown)) + bars
