"""Agents' frames take a share of each turn of the event loop, never the whole
turn; links whose frames cost the loop little go ahead of those that cost it much.

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

Those waiting form lines, first come, first served, and while anyone waits
newcomers queue behind: only the first in line looks at the share, so nobody
starts a new share behind its back. (Without the line a frame woken early in a
turn, before the end of the previous share had run, found the share used up and
waited again, every turn: a break round starved a healthy agent's reads for
40 s that way.) Only the first ``LOOKING`` places of a line look each turn (a
step of their task each); the rest wait parked until the line reaches them.

Two lines, by what the link's frames cost the loop lately (a link's reads
and its writes each have an ``Account``, charged with the loop thread's CPU
seconds each frame takes: decoding and applying, or writing; not wall time,
which on a loaded machine counted the thread's preemption against whichever
link it hit). A frame of a link whose frames took ``COSTLY`` or more
lately (or any frame over 64 kB: ``agent_link.serve``) waits in the costly
line, which goes only once the cheap line has had as much of the loop as the
last costly frame took (or is empty): links that keep the loop busy share at
most half of it, and an agent's heartbeat, its reports and its
``LeaseRenewed`` wait for at most one of their frames. With one line, a place
being one frame whatever it cost, thirty links of frames just under a batch's
limit (2-5 ms of decoding each) made a healthy node's every frame wait a
round of theirs: a job took 25 s against 4.3 s with 47 attempts killed, and a
hundred such links had the node lost and frames rendered twice.

A link's writes wait in the costly line too while its reads are costly
(``linked``): they are answers to those reads (an ``Ack`` a frame). In the
cheap line, a hundred flooding links' Acks had a healthy node's ``Welcome``
and ``LeaseRenewed`` wait up to 0.9 s behind them (a loaded machine,
``flood.py hbseq1000 100``): its lease lapsed, it was lost, and frames it had
finished were rendered again.

Fair queueing proper (each link's place in virtual time by all it has used)
was tried and put back: with 300 busy agents, one whose frame took 20 ms (a
pause of the collector, say) then waited for 300 others to catch up, seconds,
and c1 had nodes lost.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable

from server.per_loop import PerLoop

# Seconds of frame handling a turn, at most (one frame more may run past it).
BUDGET = 0.008
# Places at the head of a line that look for their turn each turn of the loop; the
# rest wait parked. With 300 agents the line held ~290 frames (c1, at the median),
# and each one looking cost a step of its task every turn.
LOOKING = 32
# A link whose frames took this much of the loop or more lately waits in the costly line.
# An agent's frames take 0.05-0.5 ms (c1); 87,000 empty lines of output, 2.4 ms.
COSTLY = 0.001
# The most one frame is charged: a frame that took longer (the collector ran in it,
# say) must not keep its link's next frames behind for long.
MOST_CHARGED = 0.02


class Account:
    """One link's reads' or writes' use of the loop: what their frames took lately, each
    frame counting half as much as the one after it."""

    __slots__ = ("lately",)

    def __init__(self) -> None:
        self.lately = 0.0


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
        self._cheap: deque[_Place] = deque()
        self._costly: deque[_Place] = deque()
        # Seconds of the loop the cheap line is owed before the costly line goes again.
        self._owed = 0.0
        self.waited = 0  # frames that waited for a later turn, in the loop's life

    @property
    def in_line(self) -> int:
        """Frames waiting for a turn now."""
        return len(self._cheap) + len(self._costly)

    def full(self) -> bool:
        """Whether a frame must wait now (then ``await share(account)``)."""
        return bool(self._cheap or self._costly) or self._used_up()

    def charge(self, account: Account, seconds: float, linked: Account | None = None) -> None:
        """A frame of ``account`` took ``seconds`` of the loop (``linked`` as in ``share``)."""
        seconds = min(seconds, MOST_CHARGED)
        if _costly(account, linked):  # it went as a costly one
            self._owed = seconds
        else:
            self._owed = max(0.0, self._owed - seconds)
        # Not only the last frame: a link's cheap writes (answers to its costly frames)
        # must not pass its next costly read off as cheap.
        account.lately = max(seconds, account.lately / 2)

    def _used_up(self) -> bool:
        now = self.clock()
        if self._began is None:
            self._began = now
            self.loop.call_soon(self._next)
            return False
        return now - self._began > self.budget

    def _next(self) -> None:
        self._began = None

    def _first(self) -> _Place | None:
        """The place that goes next: the cheap line's, unless the costly line is due."""
        if self._costly and (not self._cheap or self._owed <= 0.0):
            return self._costly[0]
        return self._cheap[0] if self._cheap else None

    async def share(self, account: Account, linked: Account | None = None) -> None:
        """Return in a turn with room for one more frame of ``account``, after those who
        asked earlier in its line: the costly one if ``account``, or the ``linked``
        account it answers (a link's reads, for its writes), took much lately."""
        place = _Place()
        line = self._costly if _costly(account, linked) else self._cheap
        line.append(place)
        self.waited += 1
        try:
            if len(line) > LOOKING:
                place.parked = self.loop.create_future()
                await place.parked  # until it is among the first LOOKING
            while True:
                await asyncio.sleep(0)
                if self._first() is place and not self._used_up():
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


def _costly(account: Account, linked: Account | None) -> bool:
    return account.lately >= COSTLY or (linked is not None and linked.lately >= COSTLY)


class _Place:
    """A frame's place in a line; ``parked`` while it is not among the first LOOKING."""

    __slots__ = ("parked",)

    def __init__(self) -> None:
        self.parked: asyncio.Future[None] | None = None


# The turns of each loop.
turns = PerLoop(Turns)
