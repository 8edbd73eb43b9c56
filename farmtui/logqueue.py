"""A process's own log is written on a thread of its own, never on its event loop.

The leader's and the agent's handlers write to stderr, which may be a pipe
that a slow reader (a terminal over SSH, journald under load, a full disk)
stops draining: a blocked ``write`` there would stop every agent and console
with the leader, and an agent's heartbeats with it (its lease then lapses and
its renders are killed). So each logger's handlers are replaced by one that
only queues the record, and one thread hands the records to the handlers the
logger had, in order. Filters on those handlers (the token redaction) run
there too, unchanged.

The message is made on the caller's thread (``getMessage``), so a record
says what its arguments were when it was logged, not when it was written.

A stderr that nobody ever drains must cost neither memory nor the exit: past
``MAX_QUEUED`` waiting records new ones are dropped (and counted), and if the
writer is still stuck in a write when the process stops, logging's own
clean-up at exit (which would wait for that write forever) is skipped.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import queue
import threading
from collections.abc import Callable, Iterator, Sequence

# A record and its handlers; a function to call once what came before is written; None: stop.
_Item = tuple[logging.LogRecord, tuple[logging.Handler, ...]] | Callable[[], None] | None

MAX_QUEUED = 100_000
# How long a process waits at exit for the last lines to be written.
EXIT_WAIT = 2.0


class _Queued(logging.Handler):
    """Stands in for a logger's handlers: queues each record for them."""

    def __init__(self, records: queue.SimpleQueue[_Item], targets: Sequence[logging.Handler]):
        super().__init__()
        self.records = records
        self.targets = tuple(targets)
        self.dropped = 0

    def emit(self, record: logging.LogRecord) -> None:
        if self.records.qsize() >= MAX_QUEUED:
            self.dropped += 1  # stderr is not being read; the process goes on
            return
        try:
            record.msg = record.getMessage()
            record.args = None
        except Exception:
            self.handleError(record)
            return
        self.records.put((record, self.targets))


def _write(records: queue.SimpleQueue[_Item]) -> None:
    while (item := records.get()) is not None:
        if callable(item):
            item()  # a marker: everything queued before it is written
            continue
        record, targets = item
        for handler in targets:
            if record.levelno >= handler.level:
                handler.handle(record)


class LogThread:
    """One writer thread, and the handlers that queue records for it (``queued``)."""

    def __init__(self, name: str = "farmtui-log") -> None:
        self.records: queue.SimpleQueue[_Item] = queue.SimpleQueue()
        self._writer = threading.Thread(target=_write, args=(self.records,), name=name, daemon=True)
        self._writer.start()

    def queued(self, targets: Sequence[logging.Handler]) -> logging.Handler:
        """A handler that stands in for ``targets``: its records are written here."""
        return _Queued(self.records, targets)

    def wait(self, timeout: float = EXIT_WAIT) -> bool:
        """Block until every record queued so far is written; False if it took too long."""
        written = threading.Event()
        self.records.put(written.set)
        return written.wait(timeout)

    def stop(self) -> None:
        """Write what is queued (for at most ``EXIT_WAIT``) and end the thread."""
        self.records.put(None)
        self._writer.join(EXIT_WAIT)
        if self._writer.is_alive():
            # Stuck writing to a pipe nobody reads: logging.shutdown would wait
            # for that handler's lock for ever, and the process would never exit.
            atexit.unregister(logging.shutdown)


@contextlib.contextmanager
def logging_off_the_loop(names: Sequence[str]) -> Iterator[None]:
    """While inside, the named loggers' handlers are fed from one writer thread."""
    thread = LogThread()
    replaced: list[tuple[logging.Logger, list[logging.Handler]]] = []
    for name in names:
        logger = logging.getLogger(name)
        if logger.handlers:
            replaced.append((logger, logger.handlers[:]))
            logger.handlers = [thread.queued(logger.handlers)]
    try:
        yield
    finally:
        for logger, handlers in replaced:
            logger.handlers = handlers
        thread.stop()
