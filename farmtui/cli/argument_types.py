"""Argument types: a bad value is a one-line usage error before anything runs."""

from __future__ import annotations

import argparse

from farmtui.protocol import MAX_HISTORY


def port_number(text: str) -> int:
    """A TCP port, 1-65535."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"port {text!r} is not a whole number") from None
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port {port} is not between 1 and 65535")
    return port


def whole_number(text: str, least: int) -> int:
    """``text`` as a whole number of at least ``least``, or argparse's one-line error."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < least:
        raise argparse.ArgumentTypeError(f"{value} must be at least {least}")
    return value


def positive_int(text: str) -> int:
    return whole_number(text, 1)


def count_arg(text: str) -> int:
    return whole_number(text, 0)


def slot_count(text: str) -> int:
    from farmtui.protocol import MAX_SLOTS

    value = whole_number(text, 1)
    if value > MAX_SLOTS:
        raise argparse.ArgumentTypeError(f"{value} is more than {MAX_SLOTS}")
    return value


def prefetch_count(text: str) -> int:
    from farmtui.protocol import MAX_PREFETCH

    value = whole_number(text, 0)
    if value > MAX_PREFETCH:
        raise argparse.ArgumentTypeError(f"{value} is more than {MAX_PREFETCH}")
    return value


def chunk_index(text: str) -> int:
    return whole_number(text, 0)


def history_limit(text: str) -> int:
    """How many records a history read may ask for (the leader's own limit)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if not 1 <= value <= MAX_HISTORY:
        raise argparse.ArgumentTypeError(f"{text} is not between 1 and {MAX_HISTORY}")
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"{text} must be a positive number")
    return value
