"""Messages the leader must not miss, kept on disk until it acknowledges them.

``ChunkStarted``, ``FramesWritten``, ``ChunkTimedOut`` and ``ChunkFinished``
get increasing sequence numbers and stay here until an ``Ack(seq >= n)``.
On reconnect the link resends what is left, in order. Each message is
written when it is added and synced before it is sent (``synced``), so an
agent restart (or a crash, or a power cut) loses nothing the leader may have
seen. The sync runs on a thread and covers every message added meanwhile:
at one per message on the event loop, it was a fifth of a busy agent's time
and stalled its renders' output. An ack writes an ``{"acked": n}`` line
without a sync (losing one only means resending messages the leader ignores
as repeats). The last acked number is always kept, so sequence numbers keep
growing across restarts.

The files are written in place, never appended to. Making a file's growth
durable takes a commit of ext4's journal, which waits for the dirty data of
every other file in it: beside another process's fsyncs, a sync of an
append here took 14-36 ms at p99 and up to 0.85 s in a bench run, holding
the agent's reports; a ``fdatasync`` of bytes already on disk needs no
journal commit (0.2 ms at p99 beside the same load). So there are two files,
``outbox-0.jsonl`` and ``outbox-1.jsonl``, written once in full (spaces) and then only
overwritten; as a bonus a full disk does not stop the reports.

One file is live, its first line its generation (``{"outbox": g}``);
messages and acks are written after what it holds. When it is full, the
other one takes over: the acked number and the pending messages are written
at its start, synced, and only then its header with generation g + 1,
synced. A crash at any point leaves the newest whole file the one with the
highest generation (a reader takes every line of both files all the same:
see ``read_outbox``). What the file held beyond that is left as it was (a
quarter of a megabyte to write there took 28-70 ms beside the same load):
each write ends with a NUL byte that the next one overwrites, and a reader
stops at it. Should a power cut tear a write so that the mark is lost, the
older lines read after it are harmless: each is acked or repeats a pending
message (the same number), and a reader keeps the highest acked number and
each number once. An ``outbox.jsonl`` from an
older agent (JSON lines, appended) is read once and removed.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import stat
from collections import deque
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

# Each file's size: a few thousand messages before the other file takes over.
CAPACITY = 1 << 18
HEADER_WIDTH = 32  # the header line, padded with spaces (newline included)
# Generations a header may name (one a takeover: never near it); beyond: not ours.
MAX_GENERATION = 10**15
_BLANK = b" "
# Written after the last line, and overwritten by the next: a reader stops there.
_END = b"\0"
_sync_data = getattr(os, "fdatasync", os.fsync)  # macOS has no fdatasync


class _Acked(msgspec.Struct):
    acked: int


class _Header(msgspec.Struct):
    outbox: int


_acked_decoder = msgspec.json.Decoder(_Acked)
_header_decoder = msgspec.json.Decoder(_Header)


def _header(generation: int) -> bytes:
    text = encode(_Header(generation))
    return text + _BLANK * (HEADER_WIDTH - 1 - len(text)) + b"\n"


def _generation(data: bytes) -> int | None:
    """The file's generation; None for a file never finished (or not ours)."""
    first = data[: HEADER_WIDTH - 1].strip()
    if len(data) < HEADER_WIDTH or not first:
        return None
    try:
        generation = _header_decoder.decode(first).outbox
    except msgspec.DecodeError:
        return None
    return generation if 0 <= generation < MAX_GENERATION else None


def _parse(data: bytes, where: Path) -> tuple[int, list[AgentToLeader]]:
    """The acked number and the messages in JSON lines up to the end mark (spaces and
    torn lines skipped)."""
    acked = 0
    messages: list[AgentToLeader] = []
    for number, line in enumerate(data.split(_END, 1)[0].split(b"\n"), start=1):
        line = line.strip(_BLANK)
        if not line:
            continue
        try:
            if line.startswith(b'{"acked"'):
                acked = max(acked, _acked_decoder.decode(line).acked)
            else:
                messages.append(agent_to_leader.decode(line))
        except msgspec.DecodeError:
            # A line torn by a power cut: it was never synced, so never sent.
            log.warning("outbox %s: skipped unreadable line %d", where, number)
    return acked, messages


def _paths(path: Path) -> tuple[Path, Path]:
    return (
        path.with_name(f"{path.stem}-0{path.suffix}"),
        path.with_name(f"{path.stem}-1{path.suffix}"),
    )


def _read(path: Path) -> bytes:
    """The file's bytes (b"" if missing); OSError for a symlink: the agent's own files
    are never reached through one (it could lead anywhere the agent may write)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return b""
    with os.fdopen(fd, "rb") as file:
        return file.read()


def read_outbox(path: Path) -> tuple[int, list[AgentToLeader]]:
    """What an outbox at ``path`` holds, without changing it: (acked, unacknowledged)."""
    return _merge([_side(_read(side), side) for side in _paths(path)], path)


# A file as read: its generation (None: no header of ours), its bytes, its path.
_Side = tuple[int | None, bytes, Path]


def _side(data: bytes, path: Path) -> _Side:
    """The file as read; a header neither ours nor blank is warned of."""
    generation = _generation(data)
    if generation is None and data[: HEADER_WIDTH - 1].strip(_BLANK):
        log.warning("outbox %s: a header this agent did not write; read all the same", path)
    return generation, data, path


def _merge(sides: list[_Side], legacy: Path) -> tuple[int, list[AgentToLeader]]:
    """Every line of both files, and of an older agent's ``legacy`` one: (acked, unacknowledged).

    Every line in any of them is true (a report, numbered once for good, or
    an ack the leader gave), so the highest acked number and every report
    above it are kept, whichever file holds them. A file whose header was
    damaged, or names the same generation as the other, then loses nothing,
    and numbers never go back. The newer file is read first: of two copies of
    a report, its own is kept.
    """
    acked = 0
    found: dict[int, AgentToLeader] = {}
    newer_first = sorted(sides, key=lambda side: -1 if side[0] is None else side[0], reverse=True)
    sources = [(data[HEADER_WIDTH:], where) for _, data, where in newer_first]
    for data, where in [*sources, (_read(legacy), legacy)]:
        number, messages = _parse(data, where)
        acked = max(acked, number)
        for message in messages:
            found.setdefault(message.seq, message)
    return acked, [found[seq] for seq in sorted(found) if seq > acked]


def _write_all(fd: int, data: bytes, offset: int) -> None:
    view, written = memoryview(data), 0
    while written < len(data):
        written += os.pwrite(fd, view[written:], offset + written)


class Outbox:
    """An ordered, persistent queue of unacknowledged agent messages."""

    def __init__(self, path: Path, capacity: int = CAPACITY) -> None:
        self.path = path
        self.capacity = capacity
        self._paths = _paths(path)
        self._pending: deque[AgentToLeader] = deque()
        self._acked = 0
        self._fds = [-1, -1]
        self._sizes = [0, 0]
        self._live = 0
        self._generation = 0
        self._position = 0  # where the next line goes in the live file
        # Every message up to this number is on disk (synced), or could not be written.
        self.synced_seq = 0
        # Pending messages the files lack (a write failed): the next write is a takeover.
        self._behind = False
        self._sync: asyncio.Future[None] | None = None
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
        """Number the message, write it (not yet synced), and return it.

        Never raises: a message that cannot be written (the outbox outgrew its
        files on a full disk, or the disk failed) is kept in memory and sent
        all the same, and written with the next takeover that finds room. Held
        back, its chunk would stay "assigned" on the leader for good; sent, it
        is lost only if the agent dies before then, and the leader then moves
        the chunk (rendered again, never twice at once).
        """
        message.seq = self.last_seq + 1
        self._pending.append(message)
        try:
            self._write(encode(message) + b"\n")
        except OSError as exc:
            self._unwritten(exc)
        return message

    async def synced(self) -> None:
        """Return once every message added so far is on disk; OSError if it cannot be."""
        while self.synced_seq < self.last_seq:
            if self._sync is None:
                self._sync = asyncio.ensure_future(self._sync_live(self.last_seq))
            sync = self._sync
            try:
                await asyncio.shield(sync)
            finally:
                if self._sync is sync and sync.done():
                    self._sync = None

    async def _sync_live(self, upto: int) -> None:
        # A duplicate, so that closing the file meanwhile cannot leave the thread
        # syncing a number the kernel gave to another file. A takeover meanwhile
        # synced all it copied: this one is then simply more than needed.
        fd = os.dup(self._fds[self._live])
        try:
            await asyncio.to_thread(_sync_data, fd)
        finally:
            os.close(fd)
        self.synced_seq = max(self.synced_seq, upto)

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
        try:
            self._write(encode(_Acked(self._acked)) + b"\n")
        except OSError as exc:  # only means resending what the leader ignores as repeats
            log.warning("outbox %s: cannot note ack %d: %s", self.path, seq, exc)

    def _unwritten(self, exc: OSError) -> None:
        """A message is only in memory: say so (once until the files catch up)."""
        if not self._behind:
            log.error(
                "outbox %s: cannot write (%s): reports are sent but kept only in memory "
                "until there is room",
                self.path,
                exc.strerror or exc,
            )
        self._behind = True
        self.synced_seq = self.last_seq  # nothing to wait for: it will not be on disk sooner

    def close(self) -> None:
        for side, fd in enumerate(self._fds):
            if fd >= 0:
                os.close(fd)
                self._fds[side] = -1

    # ------------------------------------------------------------------ the files

    def _write(self, line: bytes) -> None:
        live = self._live
        if self._behind or self._position + len(line) + len(_END) > self._sizes[live]:
            self._take_over()  # it writes what is pending and the acked number: the line too
            self._behind = False
            return
        _write_all(self._fds[live], line + _END, self._position)
        self._position += len(line)

    def _take_over(self) -> None:
        """Make the other file live, holding the acked number and every pending message."""
        side = 1 - self._live
        body = b"".join(
            [
                _BLANK * (HEADER_WIDTH - 1) + b"\n",  # no header until the body is on disk
                encode(_Acked(self._acked)) + b"\n",
                *(encode(message) + b"\n" for message in self._pending),
                _END,
            ]
        )
        size = self._sizes[side]
        # Room for the body and as much again; back to the usual size once it fits.
        wanted = self.capacity
        while wanted < 2 * len(body):
            wanted *= 2
        resized = wanted != size
        fd = self._fds[side]
        _write_all(fd, body + _BLANK * (wanted - len(body)) if resized else body, 0)
        if resized:
            os.ftruncate(fd, wanted)  # a new size: only this sync waits for the journal
            os.fsync(fd)
        else:
            _sync_data(fd)
        # Back to 1 before a header too wide to read: the generation only tells the newer file.
        generation = self._generation + 1 if self._generation + 1 < MAX_GENERATION else 1
        _write_all(fd, _header(generation), 0)
        _sync_data(fd)
        self._sizes[side] = wanted
        self._position = len(body) - len(_END)
        self._live, self._generation = side, generation
        self.synced_seq = self.last_seq

    def _load(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        sides: list[_Side] = []
        created = False
        for side, path in enumerate(self._paths):
            created = created or not path.exists()
            flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
            fd = self._fds[side] = os.open(path, flags, 0o600)
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise OSError(errno.EINVAL, f"{path.name} is not a regular file")
            with os.fdopen(os.dup(fd), "rb") as file:  # read once, through the file it keeps
                data = file.read()
            self._sizes[side] = len(data)
            sides.append(_side(data, path))
        self._acked, messages = _merge(sides, self.path)
        self._pending = deque(messages)
        generations = [(g, side) for side, (g, _, _) in enumerate(sides) if g is not None]
        newest = max(generations, default=None)
        if created:
            _sync_directory(self.path.parent)
        if newest is not None:
            self._generation, self._live = newest
        else:
            self._live = 1  # so that the first takeover makes file 0 live
        # Start from a clean file: a torn tail never sits before the next line.
        self._take_over()
        other = 1 - self._live
        if self._sizes[other] != self.capacity:
            # Written in full now (it is stale), so that taking over never grows it.
            fd = self._fds[other]
            _write_all(fd, _BLANK * self.capacity, 0)
            os.ftruncate(fd, self.capacity)
            os.fsync(fd)
            self._sizes[other] = self.capacity
        if self.path.exists():  # an older agent's outbox, now in ours
            self.path.unlink()


def _sync_directory(folder: Path) -> None:
    """Make a new file's name durable (its folder's entry)."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def is_reliable(message: AgentMessage) -> bool:
    """Whether a message goes through the outbox (True) or is best-effort (False)."""
    return isinstance(message, ChunkStarted | FramesWritten | ChunkTimedOut | ChunkFinished)
