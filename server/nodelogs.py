"""The agents' own plain-text logs: the last lines in memory, all of it on disk.

``<root>/nodes/<name>.log`` grows as AgentLog messages arrive; the console's
peer view and ``GET /api/nodes/{name}/log`` read the in-memory tail.
"""

from __future__ import annotations

import logging
from collections import deque
from io import TextIOWrapper
from pathlib import Path

from server.paths import confine

log = logging.getLogger("farmtui.leader.nodelogs")

KEEP_LINES = 2000


class NodeLogs:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.lines: dict[str, deque[str]] = {}
        self._files: dict[str, TextIOWrapper] = {}

    def append(self, node: str, lines: list[str]) -> None:
        clean = [line.rstrip("\n") for line in lines]
        self.lines.setdefault(node, deque(maxlen=KEEP_LINES)).extend(clean)
        try:
            handle = self._files.get(node)
            if handle is None:
                path = confine(self.root, f"nodes/{node}.log")
                path.parent.mkdir(parents=True, exist_ok=True)
                handle = self._files[node] = open(path, "a", encoding="utf-8")  # noqa: SIM115
            handle.write("".join(line + "\n" for line in clean))
            handle.flush()
        except OSError as exc:
            log.error("cannot write the log of node %s: %s", node, exc)

    def tail(self, node: str, count: int) -> list[str]:
        """The last ``count`` lines (from the file when the leader restarted since)."""
        count = max(0, min(count, KEEP_LINES))
        kept = self.lines.get(node)
        if kept is None:
            kept = self.lines[node] = deque(self._read_file(node), maxlen=KEEP_LINES)
        return list(kept)[-count:] if count else []

    def _read_file(self, node: str) -> list[str]:
        try:
            path = confine(self.root, f"nodes/{node}.log")
            with open(path, "rb") as handle:
                size = handle.seek(0, 2)
                handle.seek(max(0, size - 256 * 1024))
                return handle.read().decode("utf-8", errors="replace").splitlines()[-KEEP_LINES:]
        except (OSError, ValueError):
            return []

    def close(self) -> None:
        for handle in self._files.values():
            handle.close()
        self._files.clear()
