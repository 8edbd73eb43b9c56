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
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
from collections.abc import Iterator, Sequence

_Item = tuple[logging.LogRecord, tuple[logging.Handler, ...]] | None


class _Queued(logging.Handler):
    """Stands in for a logger's handlers: queues each record for them."""

    def __init__(self, records: queue.SimpleQueue[_Item], targets: Sequence[logging.Handler]):
        super().__init__()
        self.records = records
        self.targets = tuple(targets)

    def emit(self, record: logging.LogRecord) -> None:
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
        writer.join(10.0)
