"""Turning a renderer's raw output into lines, whatever it throws at us.

Renderers print progress with bare ``\\r`` (ffmpeg), lines of megabytes,
bytes that are not UTF-8, and a last line without a newline. Each becomes
one or more ``str`` lines no longer than ``max_bytes``.
"""

from __future__ import annotations

import re

MAX_LINE_BYTES = 16 * 1024
_NEWLINES = re.compile(rb"\r\n|\r|\n")


class LineSplitter:
    """Feed blocks of bytes, get complete lines back; ``close`` returns the rest."""

    def __init__(self, max_bytes: int = MAX_LINE_BYTES) -> None:
        self.max_bytes = max_bytes
        self._pending = b""
        self._ended_with_cr = False

    def _cut(self, raw: bytes) -> list[str]:
        return [
            raw[start : start + self.max_bytes].decode("utf-8", errors="replace")
            for start in range(0, max(len(raw), 1), self.max_bytes)
        ]

    def feed(self, block: bytes) -> list[str]:
        # A "\r\n" split across two blocks is one line end, not two.
        if self._ended_with_cr and block.startswith(b"\n"):
            block = block[1:]
        data = self._pending + block
        self._ended_with_cr = data.endswith(b"\r")
        *complete, self._pending = _NEWLINES.split(data)
        lines = [line for raw in complete for line in self._cut(raw)]
        while len(self._pending) > self.max_bytes:
            lines.append(self._pending[: self.max_bytes].decode("utf-8", errors="replace"))
            self._pending = self._pending[self.max_bytes :]
        return lines

    def close(self) -> list[str]:
        rest, self._pending = self._pending, b""
        return self._cut(rest) if rest else []
