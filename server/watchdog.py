"""A loop-lag watchdog: every stall of the leader's event loop is logged with what was running.

Everything the leader does runs on one event loop, so one slow call (a big
commit, a disk on NFS, a huge view) delays every agent and console at once,
and nodes can look silent only because the leader could not read them. The
watchdog makes such stalls visible:

- a task on the loop beats every ``interval`` seconds;
- a thread checks the beats; once the loop has missed more than ``threshold``
  seconds of them it takes the loop thread's stack (``sys._current_frames``),
  which names the function that is holding the loop;
- when the loop beats again, the stall is logged with its length, how much
  of it the loop's thread spent on the CPU (much less than the stall: the
  machine or another thread held it back, not the leader's own work) and
  that stack, and counted in ``stalls`` / ``longest``;
- every beat's lateness, stall or not, goes into a histogram
  (``lag_counts`` over ``LAG_BUCKETS``, ``longest_lag``), which ``/metrics``
  exposes: a benchmark or Prometheus can then tell a loop that never lagged
  50 ms from one that did, below the threshold worth a log line.

The cyclic garbage collector holds the interpreter while it runs, so the
thread cannot look then; its pauses over ``threshold`` are logged apart
(``gc.callbacks``), with the generation and how much it walked.
"""

from __future__ import annotations

import asyncio
import bisect
import gc
import logging
import sys
import threading
import time
import traceback
from collections.abc import Callable

log = logging.getLogger("farmtui.leader.watchdog")

THRESHOLD = 0.1  # seconds: the "no stall over 100 ms" is what we watch for
INTERVAL = 0.02
STACK_DEPTH = 8
# Upper bounds (seconds) of the beats' lateness histogram. Fine around 50 ms, the
# issue's target for a loop under load, and coarse beyond the watchdog's threshold.
LAG_BUCKETS = (0.005, 0.01, 0.02, 0.03, 0.04, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class LoopWatchdog:
    def __init__(
        self,
        threshold: float = THRESHOLD,
        interval: float = INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.threshold = threshold
        self.interval = interval
        self.clock = clock
        self.stalls = 0
        self.longest = 0.0
        self._beat = clock()
        self._beat_cpu = time.thread_time()  # the loop thread's CPU time at the last beat
        self._loop_thread: int | None = None
        self._where: str | None = None  # the loop's stack, taken during the current stall
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None
        self._gc_began = 0.0
        self.gc_pauses = 0
        self.gc_seconds = 0.0  # every collection's pause, while the watchdog runs
        # Beats by how late they woke: lag_counts[i] counts those up to LAG_BUCKETS[i]
        # (the last, those beyond every bound); not cumulative.
        self.lag_counts = [0] * (len(LAG_BUCKETS) + 1)
        self.lag_sum = 0.0
        self.longest_lag = 0.0

    async def run(self) -> None:
        """Beat on the loop until cancelled; the checking thread lives as long."""
        self._loop_thread = threading.get_ident()
        self._beat = self.clock()
        self._beat_cpu = time.thread_time()
        self._stopped.clear()
        self._thread = threading.Thread(target=self._watch, name="loop-watchdog", daemon=True)
        self._thread.start()
        gc.callbacks.append(self._gc)
        try:
            while True:
                await asyncio.sleep(self.interval)
                self._beat_now()
        finally:
            self._stopped.set()
            gc.callbacks.remove(self._gc)

    def _gc(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._gc_began = time.perf_counter()
            return
        paused = time.perf_counter() - self._gc_began
        self.gc_seconds += paused
        if paused > self.threshold:
            self.gc_pauses += 1
            log.warning(
                "the garbage collector paused the leader for %.0f ms "
                "(generation %d, %d collected, %d objects kept)",
                paused * 1000,
                info.get("generation", -1),
                info.get("collected", 0),
                len(gc.get_objects(info.get("generation", 2))),
            )

    def _beat_now(self) -> None:
        now, cpu = self.clock(), time.thread_time()
        late = max(0.0, now - self._beat - self.interval)
        worked = cpu - self._beat_cpu
        self._beat, self._beat_cpu = now, cpu
        self.lag_counts[bisect.bisect_left(LAG_BUCKETS, late)] += 1
        self.lag_sum += late
        self.longest_lag = max(self.longest_lag, late)
        if late <= self.threshold:
            return
        self.stalls += 1
        self.longest = max(self.longest, late)
        where, self._where = self._where, None
        log.warning(
            "the event loop stalled for %.0f ms (%.0f ms of it on the CPU); it was running:\n%s",
            late * 1000,
            min(worked, late) * 1000,
            where or "  (not caught: the stall ended before the watchdog looked)",
        )

    def _watch(self) -> None:
        while not self._stopped.wait(self.interval):
            late = self.clock() - self._beat - self.interval
            if late > self.threshold and self._where is None:
                self._where = self._loop_stack()

    def _loop_stack(self) -> str:
        # Not with the collector on: CPython 3.11's _current_frames holds the lock of the
        # threads' list while it allocates, and a collection then may run Python code
        # (weakref callbacks) that hands the interpreter to a thread starting or ending,
        # which waits for that lock: every thread of the process stopped for good (seen
        # in CI; python/cpython#106883, fixed the same way in later releases).
        collecting = gc.isenabled()
        gc.disable()
        try:
            frames = sys._current_frames()
        finally:
            if collecting:
                gc.enable()
        frame = frames.get(self._loop_thread or -1)
        if frame is None:
            return "  (the loop's thread is gone)"
        stack = traceback.extract_stack(frame)[-STACK_DEPTH:]
        return "".join(traceback.format_list(stack)).rstrip()
