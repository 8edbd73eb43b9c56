"""One object for each event loop: the leader runs one, tests run several in turn."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class PerLoop(Generic[T]):
    """``per_loop(loop)``: the loop's own ``T``, made by ``make(loop)`` the first time."""

    def __init__(self, make: Callable[[asyncio.AbstractEventLoop], T]) -> None:
        self.make = make
        self._made: dict[asyncio.AbstractEventLoop, T] = {}

    def __call__(self, loop: asyncio.AbstractEventLoop) -> T:
        found = self._made.get(loop)
        if found is None:
            for old in [old for old in self._made if old.is_closed()]:
                del self._made[old]
            found = self._made[loop] = self.make(loop)
        return found
