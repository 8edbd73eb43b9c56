"""The agents' own plain-text logs: the last lines in memory, all of it on disk.

``<root>/nodes/<name>.log`` grows as AgentLog messages arrive; the console's
peer view and ``GET /api/nodes/{name}/log`` read the in-memory tail. The file
is opened through :mod:`server.logfiles` (never through a symlink) and
written by the logs' writer (the leader's process of its own,
:mod:`server.log_process`), and a failed write is reported once and never
raises. A node's first tail since the leader started reads the file's end
through the writer too (after the lines asked to be written before it), so
the loop never waits on the sync root, and the lines written before a
restart are shown with those that came since.
"""

from __future__ import annotations

import contextlib
import logging
from collections import deque
from io import TextIOWrapper
from pathlib import Path

from farmtui.printable import printable
from server import logfiles
from server.joblogs import answer
from server.logwriter import LogSink, LogWriter, weigh_lines

log = logging.getLogger("farmtui.leader.nodelogs")

KEEP_LINES = 2000


class NodeLogs:
    def __init__(self, root: Path, writer: LogSink | None = None) -> None:
        self.root = root
        self.lines: dict[str, deque[str]] = {}
        self._own_writer = writer is None
        self.writer: LogSink = LogWriter("farmtui-node-logs") if writer is None else writer
        self._append = self.writer.operation(self._write)
        self._close_files = self.writer.operation(self._close_all)
        self._read_end = self.writer.operation(self._read_file)
        # Lines appended to each node's log since the leader started, and the nodes
        # whose lines in memory begin with what the file held (``tail``).
        self._appended: dict[str, int] = {}
        self._loaded: set[str] = set()
        # Used on the writer thread only.
        self._files: dict[str, TextIOWrapper] = {}
        # Nodes whose log failed and was reported, until it works again.
        self._broken: set[str] = set()

    def append(self, node: str, lines: list[str]) -> None:
        """On the loop, only the last ``KEEP_LINES`` are looked at; the file's text is made on
        the writer thread. (A message of 87,000 empty lines, which fits in a batch, took the
        loop 10-20 ms here, in the group commit, where no link is charged for it.)"""
        kept = self.lines.setdefault(node, deque(maxlen=KEEP_LINES))
        kept.extend(_plain(line) for line in lines[-KEEP_LINES:])
        self._appended[node] = self._appended.get(node, 0) + len(lines)
        self.writer.write(self._append, node, tuple(lines), weight=weigh_lines(lines))

    def _write(self, node: str, lines: tuple[str, ...]) -> None:
        text = "".join(_plain(line) + "\n" for line in lines)
        try:
            handle = self._files.get(node)
            if handle is None:
                fd = logfiles.open_append(self.root, self._relative(node))
                handle = open(fd, "a", encoding="utf-8", errors="replace")  # noqa: SIM115
                self._files[node] = handle
            handle.write(text)
            handle.flush()
        except (OSError, ValueError) as exc:
            self._close(node, quiet=True)
            if node not in self._broken:
                self._broken.add(node)
                why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
                log.error("cannot write the log of node %s: %s", node, why)
            return
        self._broken.discard(node)

    @staticmethod
    def _relative(node: str) -> str:
        return f"nodes/{node}.log"

    async def tail(self, node: str, count: int) -> list[str]:
        """The last ``count`` lines; OSError when the sync root did not answer in time.

        The first time for a node, its file's end is read (by the writer, after
        every line asked before); lines appended meanwhile follow it.
        """
        if node not in self._loaded:
            before = self._appended.get(node, 0)
            found = await answer(self.writer.call_op(self._read_end, node))
            if node not in self._loaded:  # not filled by another read meanwhile
                since = self._appended.get(node, 0) - before
                newer = list(self.lines.get(node, ()))[-since:] if since else []
                self.lines[node] = deque([*found, *newer], maxlen=KEEP_LINES)
                self._loaded.add(node)
        return self.kept(node, count)

    def kept(self, node: str, count: int) -> list[str]:
        """The last ``count`` lines in memory (those since the leader started, until the
        first ``tail`` read the file's end)."""
        count = max(0, min(count, KEEP_LINES))
        return list(self.lines.get(node, ()))[-count:] if count else []

    def _read_file(self, node: str) -> list[str]:
        """The end of the node's file (on the writer): what is written so far, flushed."""
        handle = self._files.get(node)
        if handle is not None:
            with contextlib.suppress(OSError, ValueError):
                handle.flush()
        try:
            found = logfiles.read_tail(self.root, self._relative(node), 256 * 1024)
        except (OSError, ValueError):
            return []
        if found is None:
            return []
        data, cut = found
        lines = data.decode("utf-8", errors="replace").splitlines()
        if cut:
            lines = lines[1:]  # the end of a line whose start was not read
        return lines[-KEEP_LINES:]

    def _close(self, node: str, *, quiet: bool = False) -> None:
        handle = self._files.pop(node, None)
        if handle is not None:
            try:
                handle.close()
            except (OSError, ValueError) as exc:
                if not quiet:
                    log.error("cannot write the log of node %s: %s", node, exc)

    def _close_all(self) -> None:
        for node in list(self._files):
            self._close(node)

    def close(self) -> None:
        self.writer.write(self._close_files)
        if self._own_writer:  # a shared writer is closed by its owner (the leader, bounded)
            self.writer.close()


def _plain(line: str) -> str:
    """An agent's line as plain text: its token's holder writes it, and operators read the
    file with ``tail -f`` (an ESC in one was a terminal escape there, a newline a forged
    line: break round 33b)."""
    return printable(line.rstrip("\n"), multiline=True).replace("\n", "\\n")  # tabs kept
