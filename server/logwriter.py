"""One thread that does the leader's log I/O, in the order it was asked for.

The job and node logs live in the sync root, which on a real farm is NFS or
SMB: opening a chunk's log there (folder by folder, never through a symlink)
costs far more than the event that asked for it, and a slow filer would stall
every agent and console with it. So the event loop only queues work (a
closure, about a microsecond) and this thread runs it.

Order is what makes it simple: work runs in the order it was submitted, so a
read submitted after a write sees that write (``call``), and closing a job's
files before its folder is deleted needs no lock. Files are flushed whenever
the queue runs dry, and at least every ``FLUSH_EVERY`` items under load, so
``tail -f`` sees lines within moments.

A filer that stops answering must not cost the leader its memory: past
``MAX_QUEUED`` waiting items, new writes are dropped and counted, and the
count is logged once the queue drains again. Writes are queued as tuples of
an operation number and plain values (``write``), not closures: the garbage
collector stops looking at such a tuple after its first pass, so a backlog of
a slow filer does not make every collection longer.
"""

from __future__ import annotations

import concurrent.futures
import logging
import queue
import threading
from collections.abc import Callable
from typing import TypeVar

log = logging.getLogger("farmtui.leader.logwriter")

T = TypeVar("T")
# What ``write`` queues: values the garbage collector stops looking at (in a tuple) once
# it has seen them, however long they wait for a slow filer.
PlainValue = str | int | float | None | tuple["PlainValue", ...]

# Items between two flushes while the queue never runs dry.
FLUSH_EVERY = 512
# Waiting items beyond which writes are dropped (a hung filer).
MAX_QUEUED = 200_000

_STOP = object()


class LogWriter:
    """Runs submitted work on one thread; ``flushers`` run whenever it catches up."""

    def __init__(self, name: str = "farmtui-logs") -> None:
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._flushers: list[Callable[[], None]] = []
        self._operations: list[Callable[..., None]] = []
        self._closed = False
        self.dropped = 0
        self._dropped_reported = 0
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def on_idle(self, flusher: Callable[[], None]) -> None:
        """Run ``flusher`` on the writer thread each time it has caught up."""
        self._flushers.append(flusher)

    def operation(self, function: Callable[..., None]) -> int:
        """Register what ``write(number, ...)`` does on the writer thread; its number."""
        self._operations.append(function)
        return len(self._operations) - 1

    def write(self, operation: int, *args: PlainValue) -> None:
        """Queue ``operation(*args)`` (see ``operation``); never blocks, never raises."""
        self._put((operation, *args))

    def submit(self, work: Callable[[], None]) -> None:
        """Queue ``work``; never blocks, never raises."""
        self._put(work)

    def _put(self, item: object) -> None:
        if self._closed:
            return
        if self._queue.qsize() >= MAX_QUEUED:
            self.dropped += 1
            return
        self._queue.put(item)

    def call(self, work: Callable[[], T]) -> concurrent.futures.Future[T]:
        """Run ``work`` after everything submitted before it; its result, or its exception."""
        future: concurrent.futures.Future[T] = concurrent.futures.Future()

        def run() -> None:
            if not future.set_running_or_notify_cancel():
                return
            try:
                self._flush()
                future.set_result(work())
            except BaseException as exc:  # handed to whoever waits for it
                future.set_exception(exc)

        if self._closed:
            future.set_exception(RuntimeError("the log writer is closed"))
        else:
            self._queue.put(run)  # never dropped: someone waits for it
        return future

    def wait(self, timeout: float | None = None) -> None:
        """Block until everything submitted so far is written and flushed (not on the loop)."""
        if not self._closed:
            self.call(lambda: None).result(timeout)

    def close(self, timeout: float = 30.0) -> None:
        """Write what is queued, flush, and stop the thread."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(_STOP)
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.error(
                "the log writer did not finish within %.0f s; some lines may be lost", timeout
            )

    # --- the writer thread ----------------------------------------------------------
    def _run(self) -> None:
        done = 0
        while True:
            item = self._queue.get()
            while True:
                if item is _STOP:
                    self._flush()
                    return
                try:
                    if type(item) is tuple:
                        self._operations[item[0]](*item[1:])
                    else:
                        item()  # type: ignore[operator]
                except Exception:
                    log.exception("log work failed")
                done += 1
                if done % FLUSH_EVERY == 0:
                    self._flush()
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
            self._flush()

    def _flush(self) -> None:
        for flusher in self._flushers:
            try:
                flusher()
            except Exception:
                log.exception("flushing the logs failed")
        if self.dropped != self._dropped_reported:
            log.error(
                "the sync root is not keeping up: %d log writes dropped so far",
                self.dropped,
            )
            self._dropped_reported = self.dropped
