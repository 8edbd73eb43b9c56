"""Agents' frames take a share of each turn of the event loop, never the whole
turn, and each link a fair part of that share.

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

Those waiting form a line, and while anyone waits (or was let go and has not
run yet) newcomers join it, so nobody takes a share behind its back. (Without
the line a frame woken early in a turn, before the end of the previous share
had run, found the share used up and waited again, every turn: a break round
starved a healthy agent's reads for 40 s that way.) Each turn one callback
lets go, from the head of the line, as many frames as their links' last frames
say fit in a share; they run in the next turn, and the rest wait parked. (Each
frame looking for its own turn cost a step of its task every turn: ~6% of the
loop with 300 agents, whose line held ~290 frames.)

The line is ordered by each link's use of the loop, not by arrival (fair
queueing, by virtual finishing time). Every link has an ``Account`` charged with
the seconds its frames took (decoding, applying, answering, writing). Virtual
time passes as if the links waiting shared the loop in equal parts; a frame
starts where its link's charges so far end, or now if its link has used less,
and is placed where it would end if it cost what its link's last frame did. A
link that sends little goes ahead of links that keep the loop busy, and links
that keep it busy share it by time, not by frames. First come, first served,
a healthy agent's heartbeat, and then its ``LeaseRenewed``, each waited for one
frame of every other link: thirty links of frames just under a batch's limit
(2-5 ms of decoding each) made a job take 25 s against 4.3 s and 47 attempts
killed, and a hundred had a healthy node lost and frames rendered twice.
"""

from __future__ import annotations

import asyncio
import heapq
import time
from collections.abc import Callable

from server.per_loop import PerLoop

# Seconds of frame handling a turn, at most (one frame more may run past it).
BUDGET = 0.008
# The most one frame is charged: a write that waited for a slow peer's socket (its
# time is not the loop's) must not put its link behind everyone for long.
MOST_CHARGED = 0.02
# What a frame is expected to cost when its link's last one took less (or none yet).
LEAST_EXPECTED = 0.00005
# How much each frame's cost moves the typical cost: about the last hundred frames.
TYPICAL_WEIGHT = 0.01


class Account:
    """One link's use of the loop: the virtual time its frames so far end at, and the
    cost of its last one (what its next one is expected to take)."""

    __slots__ = ("finish", "last")

    def __init__(self) -> None:
        self.finish = 0.0
        self.last = 0.0


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
        # (where it starts, what it is expected to cost, arrival number, place): the
        # line, a heap.
        self._line: list[tuple[float, float, int, _Place]] = []
        self._arrivals = 0
        self._gone = 0  # places in the heap whose frame left the line (its link closed)
        self._let_go = 0  # frames let go that have not run yet
        self._letting_go = False  # ``_let_go_some`` is due
        # Now, in virtual time: where a link quiet until now starts.
        self._virtual = 0.0
        self._typical = LEAST_EXPECTED  # what frames have cost lately
        self.waited = 0  # frames that waited for a later turn, in the loop's life

    @property
    def in_line(self) -> int:
        """Frames waiting for a turn now."""
        return len(self._line) - self._gone

    def full(self, account: Account) -> bool:
        """Whether a frame of ``account`` must wait now (then ``await share(account)``)."""
        return bool(self._line or self._let_go or self._used_up())

    def charge(self, account: Account, seconds: float) -> None:
        """A frame of ``account`` took ``seconds`` of the loop."""
        seconds = min(seconds, MOST_CHARGED)
        account.finish = max(self._virtual, account.finish) + seconds
        account.last = seconds
        # Virtual time passes as it would if every link waiting had the loop in equal
        # parts at once: a second of the loop is a second shared among them.
        self._virtual += seconds / (1 + len(self._line) - self._gone)
        # What a link's first frame is expected to cost: a flood of new links (closed
        # for their frames, straight back) is not let go a hundred at a time.
        self._typical += (seconds - self._typical) * TYPICAL_WEIGHT

    def _used_up(self) -> bool:
        now = self.clock()
        if self._began is None:
            self._began = now
            self.loop.call_soon(self._next)
            return False
        return now - self._began > self.budget

    def _next(self) -> None:
        self._began = None

    async def share(self, account: Account) -> None:
        """Return in a turn with room for one more frame of ``account``, after the frames
        of links that have used less of the loop."""
        expected = max(account.last or self._typical, LEAST_EXPECTED)
        self._arrivals += 1
        start = max(self._virtual, account.finish)
        place = _Place(start + expected, expected, self._arrivals)
        self.waited += 1
        while True:
            self._join(place)
            try:
                await place.future
            except BaseException:
                if place.future.done() and not place.future.cancelled():
                    self._let_go -= 1  # let go, and its link closed before it ran
                else:
                    place.future.cancel()
                    self._gone += 1
                raise
            self._let_go -= 1
            if not self._used_up():
                break
            # Its link's last frame said it would fit, and the share ran out before it:
            # first in line again.

    def _join(self, place: _Place) -> None:
        place.future = self.loop.create_future()
        heapq.heappush(self._line, (place.start, place.expected, place.number, place))
        if not self._letting_go:
            self._letting_go = True
            self.loop.call_soon(self._let_go_some)

    def _let_go_some(self) -> None:
        """Let go, from the head of the line, the frames expected to fit in a share; they
        run in the next turn of the loop, and this runs again after them."""
        line = self._line
        room = self.budget
        while line and room > 0:
            place = heapq.heappop(line)[3]
            if place.future.done():  # its link closed while it waited
                self._gone -= 1
                continue
            place.future.set_result(None)
            self._let_go += 1
            room -= place.expected
        if self._gone == len(line):
            line.clear()
            self._gone = 0
        if line:
            self.loop.call_soon(self._let_go_some)
        else:
            self._letting_go = False


class _Place:
    """A frame's place in the line: where it starts, in virtual time; among equals the
    frame expected to cost less goes first, then the first come. ``future`` is done
    once it may go."""

    __slots__ = ("start", "expected", "number", "future")

    def __init__(self, start: float, expected: float, number: int) -> None:
        self.start = start
        self.expected = expected
        self.number = number
        self.future: asyncio.Future[None]


# The turns of each loop.
turns = PerLoop(Turns)
