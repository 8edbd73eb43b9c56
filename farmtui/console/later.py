"""One-shot callbacks after a delay that always fire (instead of Textual's ``set_timer``).

Textual 8's one-shot timer skips a tick whose time has already passed when
its task first looks at the clock, and a one-shot timer has no other tick:
a delay of a few microseconds (the rest of a repaint pause), or any delay
shorter than the moment its task waits to be scheduled on a busy machine,
never fires, silently. The console's repaints waited on such a timer and
then stopped for good: ``bench/console_perf.py`` saw 473 to 3,971 of 5,000
frame events painted, the rest never (``tests/console/test_later.py``: a
delay of 0.1 µs fires here).

``later`` runs ``callback`` on the message pump's own turn (``call_next``,
as Textual's timers do) once the event loop's own timer says so.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from textual._context import NoActiveAppError
from textual.message_pump import MessagePump


class Later:
    """A callback due after a delay; ``stop`` before it runs and it never does."""

    def __init__(self, pump: MessagePump, delay: float, callback: Callable[[], object]) -> None:
        self._pump = pump
        self._callback = callback
        self._stopped = False
        self._handle = asyncio.get_running_loop().call_later(max(0.0, delay), self._due)

    def _due(self) -> None:
        if self._wanted():
            self._pump.call_next(self._run)

    def _run(self) -> None:
        if self._wanted():
            self._stopped = True
            self._callback()

    def _wanted(self) -> bool:
        """Not stopped, and its widget still running in an app that is not closing
        (Textual stops a widget's own timers when it closes)."""
        try:
            return not self._stopped and self._pump.is_running and not self._pump.app._exit
        except NoActiveAppError:
            return False

    def stop(self) -> None:
        self._stopped = True
        self._handle.cancel()


def later(pump: MessagePump, delay: float, callback: Callable[[], object]) -> Later:
    """Call ``callback`` on ``pump``'s turn after ``delay`` seconds (at once when ≤ 0)."""
    return Later(pump, delay, callback)
