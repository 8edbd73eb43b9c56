"""One thread that does log I/O, in the order it was asked for.

The leader's own job and node logs go to a process instead
(:mod:`server.log_process`, which keeps this module's bounds); this thread
serves ``JobLogs`` and ``NodeLogs`` made on their own (tests, scripts).

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
``MAX_QUEUED`` waiting items, or ``MAX_QUEUED_LINE_BYTES`` of queued lines
(``weigh_lines``), new writes are dropped and counted, and the count is
logged once the queue drains again. Items alone were no bound: one item can
hold a message's 87,000 lines (700 kB), and a hundred links streaming such
messages to their node logs took a leader from 160 MB to 2 GB.

Writes are queued as tuples of an operation number, their weight and plain
values (``write``), not closures: the garbage collector stops looking at
such a tuple after its first pass, so a backlog of a slow filer does not
make every collection longer.
"""

from __future__ import annotations

import concurrent.futures
import logging
import queue
import threading
from collections.abc import Callable, Sequence
from typing import Any, Protocol, TypeVar

from farmtui.protocol import MAX_BATCH_BYTES

log = logging.getLogger("farmtui.leader.logwriter")

T = TypeVar("T")
# What ``write`` queues: values the garbage collector stops looking at (in a tuple) once
# it has seen them, however long they wait for a slow filer.
PlainValue = str | int | float | None | tuple["PlainValue", ...]

# Seconds ``close`` waits for what is queued: a filer that stopped answering must not
# keep the leader from stopping (what is left is lost, and said so).
CLOSE_WAIT = 30.0
# Items between two flushes while the queue never runs dry.
FLUSH_EVERY = 512
# Waiting items beyond which writes are dropped (a hung filer).
MAX_QUEUED = 200_000
# Bytes of waiting lines (as ``weigh_lines`` counts them) beyond which writes of lines
# are dropped: a minute of a hundred agents' output, a second of a flood of 87,000-line
# messages (about 5 MB each).
MAX_QUEUED_LINE_BYTES = 128 * 1024 * 1024
# What a line costs besides its characters: its string's header and its place in a tuple.
LINE_OVERHEAD = 57
# Lines whose characters are counted one by one; beyond, an agent's message (it fits
# in a batch) is taken to be as long as a batch. Counting 87,000 lines took 2.4 ms.
COUNTED_LINES = 1024

_STOP = object()


class LogSink(Protocol):
    """Where ``JobLogs`` and ``NodeLogs`` send their work: ``LogWriter`` (a thread),
    ``log_process.LogProcess`` (a process) or, in that process, ``log_process.Inline``."""

    @property
    def dropped(self) -> int: ...
    def operation(self, function: Callable[..., Any]) -> int: ...
    def on_idle(self, flusher: Callable[[], None]) -> None: ...
    def write(self, operation: int, *args: PlainValue, weight: int = 0) -> None: ...
    def call_op(self, operation: int, *args: PlainValue) -> concurrent.futures.Future[Any]: ...
    def wait(self, timeout: float | None = None) -> None: ...
    def close(self, timeout: float | None = None) -> None: ...


class Backlog:
    """What waits for a writer (a thread or a process), within the bounds above: past
    ``MAX_QUEUED`` items or ``MAX_QUEUED_LINE_BYTES`` of lines, a write is dropped and
    counted. Items are tuples of (operation, weight of its lines, ...) or not tuples."""

    def __init__(self) -> None:
        self.queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        self.closed = False  # a write then is dropped and not counted: the writer is gone
        self.dropped = 0
        # Bytes of the lines waiting; lines are queued on the loop and taken by the
        # writer's thread, hence the lock.
        self._weight = 0
        self._lock = threading.Lock()

    def put(self, item: object, weight: int = 0) -> bool:
        """Queue ``item``, which holds ``weight`` bytes of lines; False: dropped."""
        if self.closed:
            return False
        if weight:
            with self._lock:
                if self._weight + weight > MAX_QUEUED_LINE_BYTES:
                    self.dropped += 1
                    return False
                self._weight += weight
        if self.queue.qsize() >= MAX_QUEUED:
            self.done(weight)
            self.dropped += 1
            return False
        self.queue.put(item)
        return True

    def done(self, weight: int) -> None:
        """An item put with ``weight`` bytes of lines was written (or given up)."""
        if weight:
            with self._lock:
                self._weight -= weight


class LogWriter:
    """Runs submitted work on one thread; ``flushers`` run whenever it catches up."""

    def __init__(self, name: str = "farmtui-logs") -> None:
        self._backlog = Backlog()
        self._queue = self._backlog.queue
        self._flushers: list[Callable[[], None]] = []
        self._operations: list[Callable[..., Any]] = []
        self._dropped_reported = 0
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def on_idle(self, flusher: Callable[[], None]) -> None:
        """Run ``flusher`` on the writer thread each time it has caught up."""
        self._flushers.append(flusher)

    def operation(self, function: Callable[..., Any]) -> int:
        """Register what ``write(number, ...)`` does on the writer thread; its number."""
        self._operations.append(function)
        return len(self._operations) - 1

    def write(self, operation: int, *args: PlainValue, weight: int = 0) -> None:
        """Queue ``operation(*args)`` (see ``operation``); never blocks, never raises.

        ``weight``: the bytes of lines it holds (``weigh_lines``), counted against
        ``MAX_QUEUED_LINE_BYTES`` until it has run.
        """
        self._backlog.put((operation, weight, *args), weight)

    def submit(self, work: Callable[[], None]) -> None:
        """Queue ``work``; never blocks, never raises."""
        self._backlog.put(work)

    @property
    def dropped(self) -> int:
        """Writes dropped so far (the bounds were reached)."""
        return self._backlog.dropped

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

        if self._backlog.closed:
            future.set_exception(RuntimeError("the log writer is closed"))
        else:
            self._queue.put(run)  # never dropped: someone waits for it
        return future

    def call_op(self, operation: int, *args: PlainValue) -> concurrent.futures.Future[Any]:
        """Run ``operation(*args)`` (see ``operation``) after everything queued before it."""
        function = self._operations[operation]
        return self.call(lambda: function(*args))

    def wait(self, timeout: float | None = None) -> None:
        """Block until everything submitted so far is written and flushed (not on the loop)."""
        if not self._backlog.closed:
            self.call(lambda: None).result(timeout)

    def close(self, timeout: float | None = None) -> None:
        """Write what is queued, flush, and stop the thread; wait ``CLOSE_WAIT`` at most."""
        if self._backlog.closed:
            return
        timeout = CLOSE_WAIT if timeout is None else timeout
        self._backlog.closed = True
        self._queue.put(_STOP)
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.error("the log writer did not finish within %g s; some lines may be lost", timeout)

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
                        try:
                            self._operations[item[0]](*item[2:])
                        finally:
                            self._backlog.done(item[1])
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
        run_flushers(self._flushers)
        if self.dropped != self._dropped_reported:
            log.error(
                "the sync root is not keeping up: %d log writes dropped so far",
                self.dropped,
            )
            self._dropped_reported = self.dropped


def run_flushers(flushers: Sequence[Callable[[], None]]) -> None:
    """Each flusher (``on_idle``), a failing one logged and not stopping the others."""
    for flusher in flushers:
        try:
            flusher()
        except Exception:
            log.exception("flushing the logs failed")


def weigh_lines(lines: Sequence[str]) -> int:
    """What ``lines`` hold in memory, about, in bytes, for ``LogWriter.write(weight=)``.

    Never less than they hold: a line with a character past Latin-1 (an emoji)
    takes 2 or 4 bytes for each of its characters, so such lines count 4; past
    ``COUNTED_LINES`` lines the characters are not counted but taken to be a
    batch's worth (the most an agent's message carries), 4 bytes each.
    """
    if len(lines) > COUNTED_LINES:
        characters = 4 * MAX_BATCH_BYTES
    else:
        characters = sum(len(line) if line.isascii() else 4 * len(line) for line in lines)
    return 1 + LINE_OVERHEAD * len(lines) + characters
