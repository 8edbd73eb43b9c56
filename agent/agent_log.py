"""The agent's own log: a file in its state folder, and a stream to the leader.

The console's peer view shows any node's agent log; the link drains
:class:`LogStream` every second or so and sends the lines as ``AgentLog``.

Lines to a stderr that may block (a terminal, a pipe, journald's socket) are
written by a thread of their own (:mod:`farmtui.logqueue`): an agent in a
terminal whose reader stopped (an SSH link gone quiet) blocked on its first
write there, its event loop with it, so its heartbeats stopped, its lease
lapsed and its renders were killed. The log file, the stream to the leader
and a stderr that is a regular file are written where the line is logged:
handing each line to a thread cost a short chunk a tenth of its rate
(`scale.py` d, two lines a chunk), in the hand-over of the interpreter's
lock, not in the writing.
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
import sys
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from farmtui.logqueue import LogThread
from farmtui.printable import printable

LOGGER = "farmtui.agent"
FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


class PlainFormatter(logging.Formatter):
    """A line's message with its control characters shown as escapes (``printable``).

    Lines quote what a job's submitter wrote (its command, paths built from its output
    pattern): a newline in them forged a line of its own in the agent log, the node's log
    on the sync root and the agent's stderr, and an ESC reached whoever ran ``tail -f``
    (break round 33b). A traceback after the message keeps its lines.
    """

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 (logging's name)
        record.message = printable(record.message)
        return super().formatMessage(record)


class OnceFormatter(PlainFormatter):
    """Formats a record once for every handler that shares this formatter.

    The log file and the stream to the leader print each line alike. Formatting
    (its time with ``strftime``) was over a quarter of what a line cost the
    agent, and each of the two did it (``agent_profile.py``, three or four lines
    a short chunk).
    """

    def format(self, record: logging.LogRecord) -> str:
        line: str | None = getattr(record, "_agent_line", None)
        if line is None:
            line = super().format(record)
            record._agent_line = line
        return line


class LogStream(logging.Handler):
    """Keeps formatted log lines until the link sends them (bounded: old lines drop)."""

    def __init__(self, limit: int = 5000, formatter: logging.Formatter | None = None) -> None:
        super().__init__(logging.INFO)
        self._lines: deque[str] = deque(maxlen=limit)
        self.setFormatter(formatter or PlainFormatter(FORMAT))

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
    # What the logger was given: the handlers, stderr's through ``thread`` if it may block.
    attached: list[logging.Handler]
    thread: LogThread | None

    def wait(self) -> None:
        """Block until every line logged so far is written (tests; not on the loop)."""
        if self.thread is not None:
            self.thread.wait()


def may_block(stream: object) -> bool:
    """Whether a write to ``stream`` can wait for a reader: anything but a regular file."""
    try:
        fileno = stream.fileno()  # type: ignore[attr-defined]
        return not stat.S_ISREG(os.fstat(fileno).st_mode)
    except (AttributeError, OSError, ValueError):  # no descriptor (io.UnsupportedOperation)
        return True


@contextlib.contextmanager
def lean_records() -> Iterator[None]:
    """Records made without their caller, thread and process, while the agent runs.

    The agent's lines print none of them (``FORMAT``), and finding them was half
    of what a line cost (29 against 14 us here, with the agent's three handlers;
    the logging HOWTO's "Optimization"), for three or four lines a short chunk.
    Process-wide switches: set where the agent's process runs it (``run_agent``)
    and put back after, not in ``attach``, which tests call in a process whose
    other logs want them.
    """
    saved = (logging._srcfile, logging.logThreads, logging.logProcesses, logging.logMultiprocessing)
    logging._srcfile = None  # the HOWTO's switch for the caller
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    try:
        yield
    finally:
        (
            logging._srcfile,
            logging.logThreads,
            logging.logProcesses,
            logging.logMultiprocessing,
        ) = saved


def attach(state_dir: Path, *, to_stderr: bool = True) -> AgentLogging:
    """Send ``farmtui.agent`` logging to ``<state_dir>/agent.log``, a LogStream and stderr."""
    state_dir.mkdir(parents=True, exist_ok=True)
    logger = logging.getLogger(LOGGER)
    logger.setLevel(logging.INFO)
    shared = OnceFormatter(FORMAT)
    stream = LogStream(formatter=shared)
    file_handler = LogFile(state_dir / "agent.log")
    file_handler.setFormatter(shared)
    handlers: list[logging.Handler] = [stream, file_handler]
    attached = list(handlers)
    thread: LogThread | None = None
    if to_stderr:
        console = logging.StreamHandler()
        console.setFormatter(PlainFormatter("%(levelname)s %(message)s"))
        handlers.append(console)
        if may_block(console.stream):
            thread = LogThread("farmtui-agent-log")
            attached.append(thread.queued([console]))
        else:
            attached.append(console)
    for handler in attached:
        logger.addHandler(handler)
    return AgentLogging(stream, handlers, attached, thread)


def detach(logging_: AgentLogging) -> None:
    """Write what is queued, then close the handlers."""
    logger = logging.getLogger(LOGGER)
    for handler in logging_.attached:
        logger.removeHandler(handler)
    if logging_.thread is not None:
        logging_.thread.stop()
    for handler in logging_.handlers:
        handler.close()
