"""The agent's own log: a file in its state folder, and a stream to the leader.

The console's peer view shows any node's agent log; the link drains
:class:`LogStream` every second or so and sends the lines as ``AgentLog``.

The handlers are fed from a thread of their own (:mod:`farmtui.logqueue`): an
agent run in a terminal whose reader stopped (an SSH link gone quiet) blocked
on stderr, its event loop with it, so its heartbeats stopped, its lease
lapsed and its renders were killed. Writing the lines on the loop was also a
tenth of an agent's own work per short chunk.
"""

from __future__ import annotations

import logging
import sys
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from farmtui.logqueue import LogThread

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


@dataclass(frozen=True, slots=True)
class AgentLogging:
    """What ``attach`` set up, for ``detach``."""

    stream: LogStream
    handlers: list[logging.Handler]
    queued: logging.Handler
    thread: LogThread

    def wait(self) -> None:
        """Block until every line logged so far is written (tests; not on the loop)."""
        self.thread.wait()


def attach(state_dir: Path, *, to_stderr: bool = True) -> AgentLogging:
    """Send ``farmtui.agent`` logging to ``<state_dir>/agent.log``, a LogStream and stderr,
    through a writer thread of its own."""
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
    thread = LogThread("farmtui-agent-log")
    queued = thread.queued(handlers)
    logger.addHandler(queued)
    return AgentLogging(stream, handlers, queued, thread)


def detach(logging_: AgentLogging) -> None:
    """Write what is queued, then close the handlers."""
    logging.getLogger(LOGGER).removeHandler(logging_.queued)
    logging_.thread.stop()
    for handler in logging_.handlers:
        handler.close()
