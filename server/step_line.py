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

A ``mark`` notes every step waiting now; ``passed(mark)`` says whether all of
them have been taken since, whatever came after them: an operator's change
waits for the reports that arrived before it, in groups, without applying
them all in one turn of the loop.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable
from typing import Any, Generic, TypeVar

T = TypeVar("T")

# Steps of one source taken running before the next source's turn: more than an agent's
# frame holds in c1 and c2, a sixteenth of a batch.
QUANTUM = 64


class _Waiting(Generic[T]):
    """One source's steps (or those ahead), and how many of them were ever taken."""

    __slots__ = ("steps", "taken")

    def __init__(self) -> None:
        self.steps: deque[T] = deque()
        self.taken = 0


# For each line of steps waiting when it was made, how many must have been taken.
Mark = list[tuple[_Waiting[Any], int]]


class StepLine(Generic[T]):
    """Steps ahead first, then up to ``QUANTUM`` of each source in turn."""

    __slots__ = ("_ahead", "_by_source", "_turn", "_count", "_left")

    def __init__(self) -> None:
        self._ahead: _Waiting[T] = _Waiting()
        self._by_source: dict[Hashable, _Waiting[T]] = {}
        self._turn: deque[Hashable] = deque()  # sources with steps waiting, in turn
        self._count = 0
        self._left = QUANTUM  # steps the source at the head of the turn may still take

    def __len__(self) -> int:
        return self._count

    def put(self, step: T, source: Hashable, *, ahead: bool = False) -> None:
        self._count += 1
        if ahead:
            self._ahead.steps.append(step)
            return
        waiting = self._by_source.get(source)
        if waiting is None:
            waiting = self._by_source[source] = _Waiting()
            self._turn.append(source)
        waiting.steps.append(step)

    def take(self) -> T | None:
        """The next step to apply, or None when none waits."""
        ahead = self._ahead
        if ahead.steps:
            self._count -= 1
            ahead.taken += 1
            return ahead.steps.popleft()
        if not self._turn:
            return None
        source = self._turn[0]
        waiting = self._by_source[source]
        step = waiting.steps.popleft()
        waiting.taken += 1
        self._left -= 1
        if not waiting.steps:
            # Its counts go with it: a mark holding it is passed (all were taken).
            del self._by_source[source]
            self._turn.popleft()
            self._left = QUANTUM
        elif self._left <= 0:
            self._turn.rotate(-1)
            self._left = QUANTUM
        self._count -= 1
        return step

    def mark(self) -> Mark:
        """Every step waiting now, to ask ``passed`` about later."""
        lines = [self._ahead, *self._by_source.values()]
        return [(line, line.taken + len(line.steps)) for line in lines if line.steps]

    @staticmethod
    def passed(mark: Mark) -> bool:
        """Whether every step waiting at ``mark`` has been taken."""
        return all(line.taken >= needed for line, needed in mark)
