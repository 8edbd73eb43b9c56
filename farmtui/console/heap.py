"""The console and Python's garbage collector, around a large farm's snapshot.

A snapshot of 10,000 jobs is some 100,000 new objects at once. With the
collector running, decoding it set off collections that walked them again
and again (60 of the 90 ms the decode took), and the first repaint after it
walked them once more: the first paint of a big farm missed its 0.2 s target
by that much. Nothing in a decoded message can form a reference cycle, so
the collector rests while msgspec builds a big one, and what it built is
then frozen out of collections (``gc.freeze``) for the first paint.

A moment later, once the screen has painted (``SETTLE_AFTER`` in the
painting part of the screen), ``settle`` runs one full collection and freezes
what survives: the console's long-lived heap (its widgets, the farm it
shows) then stays out of the collector's later full passes, which otherwise
walked it for 100-160 ms in the middle of a stream of frame events, as the
leader's heap does (``server.heap``). A cycle that dies
while frozen (a closed dialog, a replaced job's widgets) is freed at the
next settle; settles come at most every ``SETTLE_EVERY`` seconds, so that is
as long as such garbage can wait.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator

# Messages at least this long are decoded with the collector paused (a
# Snapshot of ~20 jobs; everyday changes are far smaller and not worth it).
PAUSE_FROM_BYTES = 64 * 1024
SETTLE_EVERY = 30.0  # seconds between full collections the console asks for, at least

_due = False


@contextlib.contextmanager
def decoding(size: int) -> Iterator[None]:
    """Decode a message of ``size`` bytes; when big, with the collector paused, and
    what was built frozen until the next ``settle`` (see the module docstring)."""
    global _due
    if size < PAUSE_FROM_BYTES or not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
        gc.freeze()
        _due = True
    finally:
        gc.enable()


def settle_due() -> bool:
    """Whether a big message was frozen since the last ``settle``."""
    return _due


def settle() -> None:
    """One full collection (garbage frozen meanwhile included); the survivors stay frozen."""
    global _due
    _due = False
    gc.unfreeze()
    gc.collect()
    gc.freeze()


def let_go() -> None:
    """The console is closing: everything goes back to the collector's care."""
    global _due
    _due = False
    gc.unfreeze()
