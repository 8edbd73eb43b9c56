"""Messages the leader must not miss, kept on disk until it acknowledges them.

``ChunkStarted``, ``FramesWritten``, ``ChunkTimedOut`` and ``ChunkFinished``
get increasing sequence numbers and stay here until an ``Ack(seq >= n)``.
On reconnect the link resends what is left, in order. The file is JSON
lines, appended per message and rewritten on ack, so an agent restart (or a
crash) loses nothing: the first line of a rewritten file remembers the last
acknowledged number so sequence numbers keep growing across restarts.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import msgspec

from farmtui.protocol import (
    AgentMessage,
    AgentToLeader,
    ChunkFinished,
    ChunkStarted,
    ChunkTimedOut,
    FramesWritten,
    agent_to_leader,
    encode,
)

log = logging.getLogger("farmtui.agent.outbox")


class _Acked(msgspec.Struct):
    acked: int


_acked_decoder = msgspec.json.Decoder(_Acked)


class Outbox:
    """An ordered, persistent queue of unacknowledged agent messages."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._pending: list[AgentToLeader] = []
        self._acked = 0
        self._load()

    @property
    def acked(self) -> int:
        """The highest sequence number the leader has acknowledged."""
        return self._acked

    @property
    def last_seq(self) -> int:
        return max(self._pending[-1].seq if self._pending else 0, self._acked)

    def pending(self) -> list[AgentToLeader]:
        """Unacknowledged messages in the order they were added."""
        return list(self._pending)

    def add(self, message: AgentToLeader) -> AgentToLeader:
        """Number the message, write it to disk, and return it."""
        message.seq = self.last_seq + 1
        self._pending.append(message)
        with self.path.open("ab") as file:
            file.write(encode(message) + b"\n")
            file.flush()
            os.fsync(file.fileno())
        return message

    def ack(self, seq: int) -> None:
        """Drop everything up to and including ``seq`` and compact the file.

        An ack beyond our last number (a leader that remembers an older
        outbox) moves the counter up, so new numbers are never taken for repeats.
        """
        if seq <= self._acked:
            return
        self._acked = seq
        self._pending = [m for m in self._pending if m.seq > seq]
        self._rewrite()

    def _rewrite(self) -> None:
        temporary = self.path.with_name(self.path.name + ".tmp")
        with temporary.open("wb") as file:
            file.write(encode(_Acked(self._acked)) + b"\n")
            for message in self._pending:
                file.write(encode(message) + b"\n")
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, self.path)

    def _load(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            lines = self.path.read_bytes().splitlines()
        except FileNotFoundError:
            return
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                if line.startswith(b'{"acked"'):
                    self._acked = max(self._acked, _acked_decoder.decode(line).acked)
                    continue
                message = agent_to_leader.decode(line)
            except msgspec.DecodeError:
                # A torn last line from a crash mid-write: everything before it counts.
                log.warning("outbox %s: skipped unreadable line %d", self.path, number)
                continue
            if message.seq > self._acked:
                self._pending.append(message)


def is_reliable(message: AgentMessage) -> bool:
    """Whether a message goes through the outbox (True) or is best-effort (False)."""
    return isinstance(message, ChunkStarted | FramesWritten | ChunkTimedOut | ChunkFinished)
