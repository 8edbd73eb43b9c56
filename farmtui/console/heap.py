"""The console and Python's garbage collector, around a large farm's snapshot.

A snapshot of 10,000 jobs is some 100,000 new objects at once. With the
collector running, decoding it set off full collections that walked them
again and again (60 of the 90 ms the decode took), and the first repaint
after it walked them once more: the first paint of a big farm missed its
0.2 s target by that much. Nothing in a decoded message can form a reference
cycle, so the collector rests while msgspec builds a big one; and what it
built lives until a later message replaces it, so it is frozen out of
collections at once (``gc.freeze``, as the leader does with the farm it
loads). Reference counting alone frees it when it is replaced.

Freezing also keeps whatever else is alive at that moment (the screen's
widgets, a finished request's garbage not yet collected) out of collections:
a cycle among those is only found once ``tidy`` unfreezes, collects and
freezes again. The console does that a moment after a big message
(``tidy_due``), off the first paint's critical path: one full collection,
which the collector would have run by itself before long anyway.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator

# Messages at least this long are decoded with the collector paused (a
# Snapshot of ~20 jobs; everyday changes are far smaller and not worth it).
PAUSE_FROM_BYTES = 64 * 1024

_untidy = False


@contextlib.contextmanager
def decoding(size: int) -> Iterator[None]:
    """Decode a message of ``size`` bytes; when big, with the collector paused, and
    freeze what was built (see the module docstring)."""
    global _untidy
    if size < PAUSE_FROM_BYTES or not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
        gc.freeze()
        _untidy = True
    finally:
        gc.enable()


def tidy_due() -> bool:
    """Whether something was frozen since the last ``tidy``."""
    return _untidy


def tidy() -> None:
    """Collect cycles that died while frozen, and freeze the survivors again."""
    global _untidy
    _untidy = False
    gc.unfreeze()
    gc.collect()
    gc.freeze()


def let_go() -> None:
    """The console is closing: everything goes back to the collector's care."""
    global _untidy
    _untidy = False
    gc.unfreeze()
