"""A link's repeated warnings: a few a minute written, the rest counted."""

from __future__ import annotations

import logging

import pytest

from server.repeated_warnings import RepeatedWarnings


def test_a_flood_of_warnings_writes_a_few_then_says_how_many_more(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = [0.0]
    warnings = RepeatedWarnings(
        logging.getLogger("test.links"), "node flood1", burst=5, window=60.0, clock=lambda: clock[0]
    )
    with caplog.at_level(logging.WARNING, logger="test.links"):
        for n in range(350):
            warnings.warn(f"ignored a message: bad frame {n}")
        assert caplog.messages == [
            f"node flood1: ignored a message: bad frame {n}" for n in range(5)
        ]
        caplog.clear()
        clock[0] = 61.0  # a new window: what was held back is said, then the new one
        warnings.warn("ignored a message: bad frame 350")
        assert caplog.messages == [
            "node flood1: 345 more like that in 60 s, not written one by one",
            "node flood1: ignored a message: bad frame 350",
        ]
        caplog.clear()
        warnings.flush()  # the link closed: nothing held back, nothing to say
        assert caplog.messages == []
        for _ in range(10):
            warnings.warn("ignored a message: again")
        clock[0] = 70.0
        warnings.flush()
        assert caplog.messages[-1] == "node flood1: 6 more like that in 9 s, not written one by one"
