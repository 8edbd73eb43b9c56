"""Agents' and consoles' frames take a share of each turn of the event loop, never all of it.

With 300 agents a turn of the loop found a frame waiting from most of them,
and read and answered every one before it came back to anything else: turns of
40-70 ms in which ``/healthz``, the consoles and the loop-lag watchdog's beat
all waited (``bench/scale.py`` c1 and c2). So the links' readers and writers
ask ``full()`` before each frame: once frames have had ``BUDGET`` of this turn,
the rest wait for the next (``await share()``), in the order they asked, after
whatever else was ready.

A turn is told apart from the next without touching the loop itself: the first
frame of a turn schedules (``call_soon``) the end of its share, which runs at
the start of the next turn's callbacks, ahead of those that waited.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from server.per_loop import PerLoop

# Seconds of frame handling a turn, at most (one frame more may run past it).
BUDGET = 0.008


class Turns:
    """The share of the current turn that frames have used, on one event loop."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        budget: float = BUDGET,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.loop = loop
        self.budget = budget
        self.clock = clock
        self._began: float | None = None
        self.waited = 0  # frames that waited for a later turn, in the loop's life

    def full(self) -> bool:
        """Whether this turn's share is used up (then wait: ``share``)."""
        now = self.clock()
        if self._began is None:
            self._began = now
            self.loop.call_soon(self._next)
            return False
        return now - self._began > self.budget

    def _next(self) -> None:
        self._began = None

    async def share(self) -> None:
        """Return in the first turn with room for one more frame."""
        while self.full():
            self.waited += 1
            await asyncio.sleep(0)


# The turns of each loop.
turns = PerLoop(Turns)
