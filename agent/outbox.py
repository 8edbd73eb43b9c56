"""Messages the leader must not miss, kept on disk until it acknowledges them.

``ChunkStarted``, ``FramesWritten``, ``ChunkTimedOut`` and ``ChunkFinished``
get increasing sequence numbers and stay here until an ``Ack(seq >= n)``.
On reconnect the link resends what is left, in order. The file is JSON
lines: each message is appended when it is added and fsynced before it is
sent (``synced``), so an agent restart (or a crash) loses nothing the leader
may have seen. The fsync runs on a thread and covers every message added
meanwhile: at one per message on the event loop, it was a fifth of a busy
agent's time and stalled its renders' output. An ack appends an ``{"acked": n}`` line
without an fsync (losing one only means resending messages the leader
ignores as repeats), and the file is compacted once it has grown, so the
hot path costs one append per ack instead of a rewrite. The last acked
number survives compaction, so sequence numbers keep growing across restarts.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections import deque
from pathlib import Path
from typing import BinaryIO

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

# Rewrite the file without acknowledged messages once it has this many lines.
COMPACT_AFTER_LINES = 512


class _Acked(msgspec.Struct):
    acked: int


_acked_decoder = msgspec.json.Decoder(_Acked)


class Outbox:
    """An ordered, persistent queue of unacknowledged agent messages."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._pending: deque[AgentToLeader] = deque()
        self._acked = 0
        # Lines in the file, to know when compacting it is worth a rewrite.
        self._lines = 0
        self._file: BinaryIO | None = None
        # Every message up to this number is on disk (fsynced).
        self.synced_seq = 0
        self._sync: asyncio.Future[None] | None = None
        self._load()
        self.synced_seq = self.last_seq

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
        """Number the message, write it to the file (not yet fsynced), and return it."""
        message.seq = self.last_seq + 1
        self._pending.append(message)
        self._lines += 1
        self._append(encode(message) + b"\n")
        return message

    async def synced(self) -> None:
        """Return once every message added so far is on disk; OSError if it cannot be."""
        while self.synced_seq < self.last_seq:
            if self._sync is None:
                self._sync = asyncio.ensure_future(self._fsync(self.last_seq))
            sync = self._sync
            try:
                await asyncio.shield(sync)
            finally:
                if self._sync is sync and sync.done():
                    self._sync = None

    async def _fsync(self, upto: int) -> None:
        if self._file is None:  # compacted since: the rewrite fsynced everything
            self.synced_seq = max(self.synced_seq, upto)
            return
        # A duplicate, so that a compaction closing the file meanwhile cannot
        # leave the thread syncing a number the kernel gave to another file.
        fd = os.dup(self._file.fileno())
        try:
            await asyncio.to_thread(os.fsync, fd)
        finally:
            os.close(fd)
        self.synced_seq = max(self.synced_seq, upto)

    def _append(self, data: bytes) -> None:
        if self._file is None:
            self._file = self.path.open("ab", buffering=0)
        self._file.write(data)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def ack(self, seq: int) -> None:
        """Drop everything up to and including ``seq``.

        An ack beyond our last number (a leader that remembers an older
        outbox) moves the counter up, so new numbers are never taken for repeats.
        """
        if seq <= self._acked:
            return
        self._acked = seq
        while self._pending and self._pending[0].seq <= seq:
            self._pending.popleft()
        self._lines += 1
        if self._lines >= COMPACT_AFTER_LINES:
            self._rewrite()
        else:
            self._append(encode(_Acked(self._acked)) + b"\n")

    def _rewrite(self) -> None:
        self.close()
        temporary = self.path.with_name(self.path.name + ".tmp")
        with temporary.open("wb") as file:
            file.write(encode(_Acked(self._acked)) + b"\n")
            for message in self._pending:
                file.write(encode(message) + b"\n")
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, self.path)
        self._lines = 1 + len(self._pending)
        self.synced_seq = self.last_seq

    def _load(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return
        lines = raw.splitlines()
        self._lines = len(lines)
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
            self._pending.append(message)
        # Ack lines follow the messages they acknowledge.
        self._pending = deque(m for m in self._pending if m.seq > self._acked)
        if raw and not raw.endswith(b"\n"):
            # A torn tail: start from a clean file so the next append is a line of its own.
            self._rewrite()


def is_reliable(message: AgentMessage) -> bool:
    """Whether a message goes through the outbox (True) or is best-effort (False)."""
    return isinstance(message, ChunkStarted | FramesWritten | ChunkTimedOut | ChunkFinished)
