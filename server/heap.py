"""The leader's heap and the cyclic garbage collector: full collections walk only what is new.

Every full collection walks every object the collector tracks, and holds the
whole leader meanwhile. The farm loaded at start-up, the jobs submitted since,
the links of hundreds of agents (each a few hundred objects of uvicorn,
websockets and our own) live for hours; walking them again every few seconds
was the leader's longest stall with 300 agents (110-130 ms over ~97,000
objects every ~6 s, `bench/README.md`).

So what survives a collection of the middle generation is frozen
(``gc.freeze``), as is what survives a full one: later collections leave it
out. Frozen at the full collections only, everything in flight at the last
young one (with 300 agents ~2,000 reports, their futures and frames) waited
in the old generation and was walked by the next full collection: 40-80 ms
every few seconds. Reference counting still frees a frozen object
that is no longer used; only a frozen object that dies in a reference cycle
(a closed link's tasks, an exception and its traceback) stays until the
frozen heap is walked again. That happens once the frozen heap has doubled
since it was last walked whole, and no sooner than ``WHOLE_WALK_EVERY`` after
that walk (``gc.unfreeze``, and the next full collection walks everything):
the walks of everything are spaced exponentially in the heap's growth, and
at least minutes apart while a farm fills up after a start. Under load the
leader makes almost no cyclic garbage (0 objects collected by the full
collections of a run with 300 agents), so what dead cycles hold meanwhile
stays small.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from typing import Any

# Full collections come after this many collections of the middle generation (Python's
# default is 10): with survivors frozen, a full collection is short, but still more
# than the young ones.
FULL_EVERY = 100
# Seconds between two walks of the whole heap, at least.
WHOLE_WALK_EVERY = 600.0


class FrozenHeap:
    """Freezes the survivors of each full collection; walks everything again when it doubled."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.installed = False
        # The frozen heap's size when it was last walked whole (at least 1), and when.
        self.walked = 1
        self.walked_at = clock()
        # The next full collection walks everything (the heap was unfrozen for it).
        self.whole = False
        # Full collections seen, and of them those that walked everything.
        self.collections = 0
        self.whole_walks = 0

    def install(self) -> None:
        """Freeze what lives now, and from now on what survives each full collection.

        What an earlier install froze is walked first: a PostgreSQL leader that
        stepped down and became active again froze its new farm beside the old
        one, which no collection ever walked again (with its log writer's pipe:
        an open descriptor and a farm's memory a takeover).
        """
        gc.unfreeze()
        gc.collect()
        gc.freeze()
        self.walked = max(1, gc.get_freeze_count())
        self.walked_at = self.clock()
        self.whole = False
        young, middle, _ = gc.get_threshold()
        gc.set_threshold(young, middle, FULL_EVERY)
        if not self.installed:
            gc.callbacks.append(self._collected)
            self.installed = True

    def uninstall(self) -> None:
        """Stop freezing and hand everything back to the collector."""
        if self.installed:
            gc.callbacks.remove(self._collected)
            self.installed = False
        gc.unfreeze()

    def _collected(self, phase: str, info: dict[str, Any]) -> None:
        if phase != "stop":
            return
        generation = info.get("generation")
        if generation == 1:
            # What survived the middle generation goes to the old one, where it waited for
            # the next full collection: under load that is every report, future and frame
            # in flight at that moment (2,000 reports with 300 agents), 40-80 ms to walk.
            # Frozen now, a full collection finds almost nothing; what dies later is freed
            # by its reference count as before. Not while a walk of everything is due.
            if not self.whole:
                gc.freeze()
            return
        if generation != 2:
            return
        # Everything still tracked has just survived a full collection: it is alive.
        self.collections += 1
        gc.freeze()
        frozen = gc.get_freeze_count()
        if self.whole:
            self.whole = False
            self.whole_walks += 1
            self.walked = max(1, frozen)
            self.walked_at = self.clock()
        elif frozen > 2 * self.walked and self.clock() - self.walked_at >= WHOLE_WALK_EVERY:
            # Dead cycles among the frozen are found only by walking them: the next one does.
            gc.unfreeze()
            self.whole = True


# The collector is the process's: one keeper for it (a leader that stands by and runs the
# farm again installs it again, never twice).
frozen_heap = FrozenHeap()
