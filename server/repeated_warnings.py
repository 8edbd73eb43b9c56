"""A link's repeated warnings: the first few of each minute written, the rest counted.

A link that floods bad frames (a break round sent 350 a second from thirty
links) wrote one warning each: the leader's log grew by 100 kB a second and
its writer thread took CPU from the loop, while saying nothing new after the
first lines. Each link keeps one of these for its bad frames: ``BURST`` lines
a ``WINDOW``, then one line saying how many more there were.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

BURST = 5
WINDOW = 60.0


class RepeatedWarnings:
    """Warnings of one kind from one source (a link), at most ``burst`` a ``window``."""

    def __init__(
        self,
        logger: logging.Logger,
        source: str,
        burst: int = BURST,
        window: float = WINDOW,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.logger = logger
        self.source = source
        self.burst = burst
        self.window = window
        self.clock = clock
        self._began = clock()
        self._written = 0
        self._held = 0  # warnings not written in this window

    def warn(self, what: str) -> None:
        """``<source>: <what>``, unless this window has had its share."""
        if self.clock() - self._began >= self.window:
            self.flush()
            self._began = self.clock()
            self._written = 0
        if self._written < self.burst:
            self._written += 1
            self.logger.warning("%s: %s", self.source, what)
        else:
            self._held += 1

    def flush(self) -> None:
        """Say how many were not written (at a window's end, and when the link closes)."""
        if self._held:
            self.logger.warning(
                "%s: %d more like that in %.0f s, not written one by one",
                self.source,
                self._held,
                min(self.clock() - self._began, self.window),
            )
            self._held = 0
