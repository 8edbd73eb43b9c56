"""Durations as people type them."""

from __future__ import annotations

import pytest

from farmtui.durations import format_duration, parse_duration
from farmtui.errors import DurationError, InputError


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90", 90.0),
        ("90s", 90.0),
        ("5m", 300.0),
        ("1h30m", 5400.0),
        ("1.5h", 5400.0),
        ("1h 30m", 5400.0),
        ("2d", 172800.0),
        ("1h0m5s", 3605.0),
        ("0", 0.0),
        ("0.25", 0.25),
        (" 45S ", 45.0),
        (120, 120.0),
        (2.5, 2.5),
    ],
)
def test_good_durations(text: str | int | float, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    "text", ["", "  ", "5x", "m", "30m1h", "1h1h", "-5", "5 minutes", "1.2.3s", "inf", "nan", "1e3"]
)
def test_bad_durations_say_what_is_expected(text: str) -> None:
    with pytest.raises(DurationError) as caught:
        parse_duration(text)
    message = str(caught.value)
    assert "\n" not in message
    assert "bad duration" in message
    assert "90s" in message or "empty" in message


def test_a_bad_duration_is_both_a_value_error_and_an_input_error() -> None:
    with pytest.raises(ValueError, match="bad duration"):
        parse_duration("soon")
    assert issubclass(DurationError, InputError)
    with pytest.raises(DurationError):
        parse_duration(-1)
    with pytest.raises(DurationError):
        parse_duration(True)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(None, "-"), (0, "0s"), (42.4, "42s"), (90, "1m30s"), (5400, "1h30m"), (90000, "1d01h")],
)
def test_format_duration(seconds: float | None, text: str) -> None:
    assert format_duration(seconds) == text
