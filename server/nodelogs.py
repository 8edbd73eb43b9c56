"""The agents' own plain-text logs: the last lines in memory, all of it on disk.

``<root>/nodes/<name>.log`` grows as AgentLog messages arrive; the console's
peer view and ``GET /api/nodes/{name}/log`` read the in-memory tail. The file
is opened through :mod:`server.logfiles` (never through a symlink) and
written on the log writer thread (:mod:`server.logwriter`), and a failed write
is reported once and never raises.
"""

from __future__ import annotations

import logging
from collections import deque
from io import TextIOWrapper
from pathlib import Path

from server import logfiles
from server.logwriter import LogWriter, weigh_lines

log = logging.getLogger("farmtui.leader.nodelogs")

KEEP_LINES = 2000


class NodeLogs:
    def __init__(self, root: Path, writer: LogWriter | None = None) -> None:
        self.root = root
        self.lines: dict[str, deque[str]] = {}
        self._own_writer = writer is None
        self.writer = LogWriter("farmtui-node-logs") if writer is None else writer
        self._append = self.writer.operation(self._write)
        # Used on the writer thread only.
        self._files: dict[str, TextIOWrapper] = {}
        # Nodes whose log failed and was reported, until it works again.
        self._broken: set[str] = set()

    def append(self, node: str, lines: list[str]) -> None:
        """On the loop, only the last ``KEEP_LINES`` are looked at; the file's text is made on
        the writer thread. (A message of 87,000 empty lines, which fits in a batch, took the
        loop 10-20 ms here, in the group commit, where no link is charged for it.)"""
        kept = self.lines.setdefault(node, deque(maxlen=KEEP_LINES))
        kept.extend(line.rstrip("\n") for line in lines[-KEEP_LINES:])
        self.writer.write(self._append, node, tuple(lines), weight=weigh_lines(lines))

    def _write(self, node: str, lines: tuple[str, ...]) -> None:
        text = "".join(line.rstrip("\n") + "\n" for line in lines)
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

    def tail(self, node: str, count: int) -> list[str]:
        """The last ``count`` lines (from the file when the leader restarted since)."""
        count = max(0, min(count, KEEP_LINES))
        kept = self.lines.get(node)
        if kept is None:
            kept = self.lines[node] = deque(self._read_file(node), maxlen=KEEP_LINES)
        return list(kept)[-count:] if count else []

    def _read_file(self, node: str) -> list[str]:
        try:
            found = logfiles.read_tail(self.root, self._relative(node), 256 * 1024)
        except (OSError, ValueError):
            return []
        if found is None:
            return []
        return found[0].decode("utf-8", errors="replace").splitlines()[-KEEP_LINES:]

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
        self.writer.submit(self._close_all)
        if self._own_writer:  # a shared writer is closed by its owner (the leader, bounded)
            self.writer.close()
