"""The steps waiting for the group commit, in the order they are applied.

Steps submitted ``ahead`` (a tick, a node's hello, its disconnect) go first,
in their order. The rest take turns by source, up to ``QUANTUM`` steps of
each source in turn, each source's in the order it submitted them: a node's
reports are an agent link's source, so no link's flood of reports delays
another node's by more than a few steps of each other node. (One step each,
an agent's frame of reports was spread over as many turns, and c2 made
7,177-7,727 chunks/s against 7,958-8,151 with a quantum, in the same runs.)
First come, first served, thirty links sending batches of a thousand reports
each put millions of steps ahead of a healthy node's: its reports, and then
its reads, waited behind them, and a job of 4 s took 14.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable
from typing import Generic, TypeVar

T = TypeVar("T")

# Steps of one source taken running before the next source's turn: more than an agent's
# frame holds in c1 and c2, a sixteenth of a batch.
QUANTUM = 64


class StepLine(Generic[T]):
    """Steps ahead first, then up to ``QUANTUM`` of each source in turn."""

    __slots__ = ("_ahead", "_by_source", "_turn", "_count", "_left")

    def __init__(self) -> None:
        self._ahead: deque[T] = deque()
        self._by_source: dict[Hashable, deque[T]] = {}
        self._turn: deque[Hashable] = deque()  # sources with steps waiting, in turn
        self._count = 0
        self._left = QUANTUM  # steps the source at the head of the turn may still take

    def __len__(self) -> int:
        return self._count

    def put(self, step: T, source: Hashable, *, ahead: bool = False) -> None:
        self._count += 1
        if ahead:
            self._ahead.append(step)
            return
        waiting = self._by_source.get(source)
        if waiting is None:
            waiting = self._by_source[source] = deque()
            self._turn.append(source)
        waiting.append(step)

    def take(self) -> T | None:
        """The next step to apply, or None when none waits."""
        if self._ahead:
            self._count -= 1
            return self._ahead.popleft()
        if not self._turn:
            return None
        source = self._turn[0]
        waiting = self._by_source[source]
        step = waiting.popleft()
        self._left -= 1
        if not waiting:
            del self._by_source[source]
            self._turn.popleft()
            self._left = QUANTUM
        elif self._left <= 0:
            self._turn.rotate(-1)
            self._left = QUANTUM
        self._count -= 1
        return step
