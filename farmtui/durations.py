"""Durations as people type them: ``90``, ``90s``, ``5m``, ``1h30m``, ``1.5h``, ``2d``.

Used by ``farm submit``/``farm set`` flags and job files, so a timeout reads the
same everywhere. A bare number is seconds.
"""

from __future__ import annotations

import math
import re

from farmtui.errors import DurationError

_UNITS = {"d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0}
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)([dhms])")
_HINT = "expected e.g. 90, 90s, 5m, 1h30m, 1.5h"


def parse_duration(value: str | int | float) -> float:
    """Seconds in ``value``; DurationError (a ValueError) with a one-line message otherwise.

    Units go largest first, each at most once (``1h30m``, not ``30m1h``).
    """
    if isinstance(value, bool):
        raise DurationError(f"bad duration {value!r} ({_HINT})")
    if isinstance(value, int | float):
        seconds = float(value)
        text = repr(value)
    else:
        text = value.strip().lower().replace(" ", "")
        seconds = _parse_text(text, value)
    if not math.isfinite(seconds) or seconds < 0:
        raise DurationError(f"bad duration {text}: must be a finite number of seconds >= 0")
    return seconds


def _parse_text(text: str, original: str) -> float:
    if not text:
        raise DurationError(f"bad duration {original!r}: empty ({_HINT})")
    try:
        return float(text) if re.fullmatch(r"\d+(\.\d*)?|\.\d+", text) else _parse_units(text)
    except DurationError:
        raise DurationError(f"bad duration {original!r} ({_HINT})") from None


def _parse_units(text: str) -> float:
    total = 0.0
    position = 0
    last_rank = -1
    order = list(_UNITS)
    for match in _PART.finditer(text):
        rank = order.index(match.group(2))
        if match.start() != position or rank <= last_rank:
            raise DurationError(text)
        total += float(match.group(1)) * _UNITS[match.group(2)]
        position = match.end()
        last_rank = rank
    if position != len(text) or last_rank < 0:
        raise DurationError(text)
    return total


def format_duration(seconds: float | None) -> str:
    """Short human form for tables: ``5400`` -> ``1h30m``, ``42.3`` -> ``42s``, None -> ``-``."""
    if seconds is None or not math.isfinite(seconds):
        return "-"
    whole = max(0, round(seconds))
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d{hours:02d}h"
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"
