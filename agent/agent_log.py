"""The agent's own log: a file in its state folder, and a stream to the leader.

The console's peer view shows any node's agent log; the link drains
:class:`LogStream` every second or so and sends the lines as ``AgentLog``.
"""

from __future__ import annotations

import logging
import sys
from collections import deque
from pathlib import Path

LOGGER = "farmtui.agent"
FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


class LogStream(logging.Handler):
    """Keeps formatted log lines until the link sends them (bounded: old lines drop)."""

    def __init__(self, limit: int = 5000) -> None:
        super().__init__(logging.INFO)
        self._lines: deque[str] = deque(maxlen=limit)
        self.setFormatter(logging.Formatter(FORMAT))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._lines.extend(self.format(record).splitlines() or [""])
        except Exception:  # a logging handler must never raise
            self.handleError(record)

    def drain(self) -> list[str]:
        lines = list(self._lines)
        self._lines.clear()
        return lines


class LogFile(logging.FileHandler):
    """The log file; one it cannot write (a full disk) says so once on stderr, not with a
    traceback for every line, and again only after it could write in between."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, encoding="utf-8")
        self.failing = False
        self._failed = False

    def emit(self, record: logging.LogRecord) -> None:
        self._failed = False
        super().emit(record)  # calls handleError on a failure
        if not self._failed:
            self.failing = False

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 (logging's name)
        self._failed = True
        if not self.failing:
            self.failing = True
            why = sys.exc_info()[1]
            sys.stderr.write(f"cannot write the agent log {self.baseFilename}: {why}\n")


def attach(state_dir: Path, *, to_stderr: bool = True) -> tuple[LogStream, list[logging.Handler]]:
    """Send ``farmtui.agent`` logging to ``<state_dir>/agent.log``, a LogStream and stderr.

    Returns the stream and every handler added, for :func:`detach`.
    """
    state_dir.mkdir(parents=True, exist_ok=True)
    logger = logging.getLogger(LOGGER)
    logger.setLevel(logging.INFO)
    stream = LogStream()
    file_handler = LogFile(state_dir / "agent.log")
    file_handler.setFormatter(logging.Formatter(FORMAT))
    handlers: list[logging.Handler] = [stream, file_handler]
    if to_stderr:
        console = logging.StreamHandler()
        console.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
        handlers.append(console)
    for handler in handlers:
        logger.addHandler(handler)
    return stream, handlers


def detach(handlers: list[logging.Handler]) -> None:
    logger = logging.getLogger(LOGGER)
    for handler in handlers:
        logger.removeHandler(handler)
        handler.close()
