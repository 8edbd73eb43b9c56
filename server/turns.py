"""Agents' frames take a share of each turn of the event loop, never the whole turn.

With 300 agents a turn of the loop found a frame waiting from most of them,
and read and answered every one before it came back to anything else: turns of
40-70 ms in which ``/healthz``, the consoles and the loop-lag watchdog's beat
all waited (``bench/scale.py`` c1 and c2). So the links' readers and writers
ask ``full()`` before each frame: once frames have had ``BUDGET`` of this turn,
the rest wait for a later one (``await share()``), behind whatever else was
ready.

A turn is told apart from the next without touching the loop itself: the first
frame of a turn schedules (``call_soon``) the end of its share, which runs
among the next turn's callbacks.

Those waiting form a line and go first come, first served. Without the line a
frame woken early in a turn, before the end of the previous share had run,
found the share used up, waited again, and was queued ahead of the next end
too: every turn, as long as other frames took theirs (a break round starved a
healthy agent's reads for 40 s that way, behind three links sending large
invalid frames). Now while anyone waits, newcomers queue behind, and only the
first in line looks at the share, so nobody starts a new share behind its
back: once the pending end has run, it finds a fresh one within a turn. Only
the first ``LOOKING`` places look each turn (a step of their task each); the
rest wait parked until the line reaches them.

A place in the line is one frame, whatever the frame costs, so no frame may
cost much: with thirty links sending frames of 3.8 MB (40 ms to a second of
decoding each) a healthy agent's every frame waited a round of them and it was
declared lost. The agent link refuses unread any frame longer than a batch
(``server.agent_link.serve``), and the agent cuts its messages to fit.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable

from server.per_loop import PerLoop

# Seconds of frame handling a turn, at most (one frame more may run past it).
BUDGET = 0.008
# Places at the head of the line that look for their turn each turn of the loop; the
# rest wait parked. With 300 agents the line held ~290 frames (c1, at the median),
# and each one looking cost a step of its task every turn.
LOOKING = 32


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
        self._line: deque[_Place] = deque()
        self.waited = 0  # frames that waited for a later turn, in the loop's life

    @property
    def in_line(self) -> int:
        """Frames waiting for a turn now."""
        return len(self._line)

    def full(self) -> bool:
        """Whether a frame must wait now (then ``await share()``)."""
        return bool(self._line) or self._used_up()

    def _used_up(self) -> bool:
        now = self.clock()
        if self._began is None:
            self._began = now
            self.loop.call_soon(self._next)
            return False
        return now - self._began > self.budget

    def _next(self) -> None:
        self._began = None

    async def share(self) -> None:
        """Return in a turn with room for one more frame, after those who asked earlier."""
        place = _Place()
        line = self._line
        line.append(place)
        self.waited += 1
        try:
            if len(line) > LOOKING:
                place.parked = self.loop.create_future()
                await place.parked  # until it is among the first LOOKING
            while True:
                await asyncio.sleep(0)
                if line[0] is place and not self._used_up():
                    return
        finally:
            # Out of the line however it ends: served, or its link closed meanwhile.
            if line[0] is place:
                line.popleft()
            else:
                line.remove(place)
            if len(line) >= LOOKING:
                now_among = line[LOOKING - 1].parked
                if now_among is not None and not now_among.done():
                    now_among.set_result(None)


class _Place:
    """A frame's place in the line; ``parked`` while it is not among the first LOOKING."""

    __slots__ = ("parked",)

    def __init__(self) -> None:
        self.parked: asyncio.Future[None] | None = None


# The turns of each loop.
turns = PerLoop(Turns)
