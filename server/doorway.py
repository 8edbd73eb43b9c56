"""New connections are let in a few a turn of the event loop, so a crowd never holds it.

When a leader starts (or comes back) with hundreds of agents, they all connect
within a few milliseconds. The loop then read every one's first request in a
single turn: parsing it, the WebSocket handshake, starting the link's task, and
in the next turn every link's hello. With 300 agents those turns took 45-100 ms
(scale.py c1), and everything else waited: ``/healthz``, the consoles, the
beat of the loop-lag watchdog.

A connection's first read is therefore let in only while this turn has room
(``PER_TURN``); past that, the connection stops reading and waits in line. At the
start of each later turn the next ones in line are let in, in the order they came.
A connection is let in once: what it sends afterwards is read as it comes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from typing import Protocol

from server.per_loop import PerLoop

log = logging.getLogger("farmtui.leader.http")

# New connections let in a turn. A WebSocket handshake with its link's start and
# hello costs 0.15-0.3 ms here: 32 of them are a few milliseconds of a turn.
PER_TURN = 32


class Waiting(Protocol):
    """A connection that may wait at the door."""

    def come_in(self) -> None:
        """Read what was held back; from now on, read as data comes."""

    def gone(self) -> bool:
        """Whether the connection was closed while it waited."""

    def close(self) -> None:
        """Drop the connection (its ``come_in`` failed)."""


class Doorway:
    """The door of one event loop (see the module's docstring)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, per_turn: int = PER_TURN) -> None:
        self.loop = loop
        self.per_turn = per_turn
        self.line: deque[Waiting] = deque()
        self._room = per_turn
        self._turn_scheduled = False
        self.waited = 0  # connections that had to wait, in the leader's life

    def enter(self, connection: Waiting) -> bool:
        """True: come in now. False: it is queued, and ``come_in`` is called on its turn."""
        if self._room > 0 and not self.line:
            self._room -= 1
            self._next_turn()
            return True
        self.line.append(connection)
        self.waited += 1
        self._next_turn()
        return False

    def _next_turn(self) -> None:
        if not self._turn_scheduled:
            self._turn_scheduled = True
            self.loop.call_soon(self._turn)

    def _turn(self) -> None:
        self._turn_scheduled = False
        self._room = self.per_turn
        while self.line and self._room > 0:
            connection = self.line.popleft()
            if connection.gone():
                continue
            self._room -= 1
            try:
                connection.come_in()
            except Exception:  # one connection's fault must not leave the line waiting
                log.exception("a connection let in failed")
                with contextlib.suppress(Exception):
                    connection.close()
        if self.line or self._room < self.per_turn:
            # Those let in used this turn's room: the next turn starts with it whole.
            self._next_turn()


# The door of each loop.
doorway = PerLoop(Doorway)
