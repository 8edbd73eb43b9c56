"""The leader's own log is written on a thread of its own, never on the event loop.

Its handlers write to stderr, which may be a pipe that a slow reader (a
terminal over SSH, journald under load, a full disk) stops draining: a
blocked ``write`` there would stop every agent and console with it. So while
the leader serves, each logger's handlers are replaced by one that only
queues the record, and one thread hands the records to the handlers the
logger had, in order. Filters on those handlers (the token redaction) run
there too, unchanged.

The message is made on the caller's thread (``getMessage``), so a record
says what its arguments were when it was logged, not when it was written.

A stderr that nobody ever drains must cost neither memory nor the exit: past
``MAX_QUEUED`` waiting records new ones are dropped (and counted), and if the
writer is still stuck in a write when the leader stops, logging's own
clean-up at exit (which would wait for that write forever) is skipped.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import queue
import threading
from collections.abc import Iterator, Sequence

_Item = tuple[logging.LogRecord, tuple[logging.Handler, ...]] | None

MAX_QUEUED = 100_000
# How long the leader waits at exit for the last lines to be written.
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
            self.dropped += 1  # stderr is not being read; the leader goes on
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
        record, targets = item
        for handler in targets:
            if record.levelno >= handler.level:
                handler.handle(record)


@contextlib.contextmanager
def logging_off_the_loop(names: Sequence[str]) -> Iterator[None]:
    """While inside, the named loggers' handlers are fed from one writer thread."""
    records: queue.SimpleQueue[_Item] = queue.SimpleQueue()
    replaced: list[tuple[logging.Logger, list[logging.Handler]]] = []
    for name in names:
        logger = logging.getLogger(name)
        if logger.handlers:
            replaced.append((logger, logger.handlers[:]))
            logger.handlers = [_Queued(records, logger.handlers)]
    writer = threading.Thread(target=_write, args=(records,), name="farmtui-log", daemon=True)
    writer.start()
    try:
        yield
    finally:
        for logger, handlers in replaced:
            logger.handlers = handlers
        records.put(None)
        writer.join(EXIT_WAIT)
        if writer.is_alive():
            # Stuck writing to a pipe nobody reads: logging.shutdown would wait
            # for that handler's lock for ever, and the leader would never exit.
            atexit.unregister(logging.shutdown)
