"""Job logs in the sync root, so ``tail -f`` works without the console.

- ``jobs/<job_id>/events.log``: one line per event (time, level, actor, text);
- ``jobs/<job_id>/chunk-<NNNN>.attempt-<A>.log``: a header (command line, node,
  start time), the renderer's raw output, and a footer (outcome, exit status
  or signal, duration).

Every write and read runs elsewhere, in the order asked: in the leader, in a
process of its own (:mod:`server.log_process`); alone (tests, scripts), on a
writer thread (:mod:`server.logwriter`). The event loop never opens, writes or
flushes a file in the sync root, which on a farm is a filer that may be slow.
Files stay open while they are written and are flushed when the writer
catches up, so an output line costs a buffered write, not an open. A read
runs after the writes asked for before it, so what the leader has announced
is in what it reads back.

Users' renderers may share the sync root, so nothing under ``jobs/`` is
trusted: files are opened through :mod:`server.logfiles` (no symlink is ever
followed; one planted where a log goes is taken back). A log that cannot be
written is reported once in the leader's log and otherwise ignored: no
method here raises, so a chunk's state changes whatever happens to its log.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import errno
import logging
import math
import os
import shlex
import time
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple, TypeVar

from farmtui.printable import printable
from farmtui.protocol import MAX_TIMESTAMP, ChunkFinished, EventView
from server import logfiles
from server.logwriter import LogSink, LogWriter, PlainValue, weigh_lines

if TYPE_CHECKING:
    from server.model import EndedAttempt

log = logging.getLogger("farmtui.leader.joblogs")
T = TypeVar("T")

# Open files kept at most; the least recently written are closed first.
MAX_OPEN = 256
# Reading a log for the console or the API: at most this much from its end.
TAIL_BYTES = 512 * 1024
# Failures of the whole file system, reported once every ``DISK_REPORT_EVERY`` s.
WHOLE_DISK = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO})
DISK_REPORT_EVERY = 10.0
# Seconds a read waits for the logs' writer (behind a filer that stopped answering).
READ_WAIT = 10.0
# Text a log file keeps before it is written without waiting for a flush.
WRITE_AT = 64 * 1024
# Logs whose failure was reported, so a broken log costs one line, not one per write.
MAX_FAILED_REMEMBERED = 4096

# An event as the loop queues it for the writer thread: time, level, actor, text.
EventFields = tuple[float, str, "str | None", str]


def job_dir(job_id: str) -> str:
    return f"jobs/{job_id}"


def events_path(job_id: str) -> str:
    return f"jobs/{job_id}/events.log"


def chunk_log_path(job_id: str, chunk: int, attempt: int) -> str:
    """The chunk attempt's log, relative to the sync root (``AssignChunk.log_path``)."""
    # zfill as ``{chunk:04d}`` (a sign first too), a third cheaper: thrice a chunk rendered.
    return f"jobs/{job_id}/chunk-{str(chunk).zfill(4)}.attempt-{attempt}.log"


def iso_time(timestamp: float) -> str:
    """``2026-12-01T20:43:07.318+00:00``: local time with its offset, to the millisecond."""
    if not 0 <= timestamp <= MAX_TIMESTAMP:
        # Not a time a clock of the farm gives: said as it is rather than raising
        # (``datetime`` does, far enough either way), so the line is still written.
        return f"{timestamp!r} (not a date)"
    # Rounded to the microsecond, then cut to the millisecond, as datetime does.
    fraction, seconds = math.modf(timestamp)
    whole, micros = int(seconds), round(fraction * 1e6)
    if micros >= 1_000_000:
        whole, micros = whole + 1, micros - 1_000_000
    millis = micros // 1000
    # One tuple read and replaced whole: writer threads of several leaders (tests) may
    # format at once, and must never pair one second's date with another's.
    second, date, offset = _second_cache[0]
    if second != whole:
        # Formatting a date is the slow part; a busy farm logs many lines a second.
        moment = datetime.fromtimestamp(whole).astimezone()
        text = moment.isoformat(timespec="seconds")
        second, date, offset = _second_cache[0] = (whole, text[:19], text[19:])
    return f"{date}.{millis:03d}{offset}"


# [(second, its date and time, its UTC offset)]: iso_time's last second.
_second_cache: list[tuple[int | None, str, str]] = [(None, "", "")]


def event_line(event: EventView) -> str:
    return _event_line(event.time, event.level, event.actor, event.text)


def _event_line(time: float, level: str, actor: str | None, text: str) -> str:
    text = " ".join(text.splitlines())
    return f"{iso_time(time)} {level.upper():<5} {actor or 'leader'}: {text}\n"


class _LogFile:
    """A log open for appending: text kept until ``flush`` writes it in one ``write``.

    A raw descriptor, not ``open(fd, "a")``: Python's text file asks the kernel
    five more times on opening (a ``stat``, an ``ioctl``, three ``lseek``), and
    with a chunk log made for every attempt those were most of the calls. Text
    is kept as ``str`` pieces until written, so a header and a footer that
    come close together cost one write.
    """

    __slots__ = ("fd", "_pieces", "_size")

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._pieces: list[str] = []
        self._size = 0

    def write(self, text: str) -> None:
        self._pieces.append(text)
        self._size += len(text)
        if self._size >= WRITE_AT:
            self.flush()

    def flush(self) -> bool:
        """Write what is kept; whether there was anything to write."""
        if not self._pieces:
            return False
        data = "".join(self._pieces).encode("utf-8", errors="replace")
        self._pieces.clear()
        self._size = 0
        view = memoryview(data)
        while view:  # a regular file takes it whole, unless interrupted
            view = view[os.write(self.fd, view) :]
        return True

    def close(self) -> bool:
        """Flush and close; whether anything was written."""
        try:
            return self.flush()
        finally:
            os.close(self.fd)


class _Files:
    """The open log files of one sync root: used on the writer thread only."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.folders = logfiles.Folders(root)
        self._open: OrderedDict[str, _LogFile] = OrderedDict()
        self._dirty: set[str] = set()
        # Logs whose last write failed and was reported (see ``_failed``).
        self._broken: set[str] = set()
        # The last failure of the whole file system reported (errno, when), and the
        # failures not reported since (see ``_failed``).
        self._disk_failure: tuple[int, float] | None = None
        self._disk_quiet = 0

    # --- writing ------------------------------------------------------------------
    def _file(self, relative: str) -> _LogFile:
        handle = self._open.get(relative)
        if handle is not None:
            self._open.move_to_end(relative)
            return handle
        handle = self._open[relative] = _LogFile(self.folders.open_append(relative))
        while len(self._open) > MAX_OPEN:
            old, old_handle = self._open.popitem(last=False)
            self._dirty.discard(old)
            self._closed(old, old_handle)
        return handle

    def _failed(self, relative: str, exc: Exception) -> None:
        """Report a log that cannot be written, once until it works again."""
        if relative in self._broken:
            return
        if len(self._broken) >= MAX_FAILED_REMEMBERED:
            self._broken.clear()
        self._broken.add(relative)
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        if isinstance(exc, OSError) and exc.errno in WHOLE_DISK:
            # Every new chunk log fails the same way on a full disk: a line for each was
            # twenty a second. One line a while, with how many more failed meanwhile.
            now = time.monotonic()
            last = self._disk_failure
            if last is not None and last[0] == exc.errno and now - last[1] < DISK_REPORT_EVERY:
                self._disk_quiet += 1
                return
            quiet, self._disk_quiet = self._disk_quiet, 0
            self._disk_failure = (exc.errno, now)
            if quiet:
                why += f" ({quiet} more logs could not be written since the last report)"
        log.error("cannot write the log %s: %s", relative, why or type(exc).__name__)

    def write_lines(self, relative: str, lines: tuple[str, ...]) -> None:
        self.write(relative, _lines_text(lines))

    def write(self, relative: str, text: str) -> None:
        try:
            self._file(relative).write(text)
        except (OSError, ValueError) as exc:  # ValueError: a bad name
            self._failed(relative, exc)
            self.close_file(relative)
            return
        self._dirty.add(relative)

    def _closed(self, relative: str, handle: _LogFile) -> None:
        try:
            wrote = handle.close()
        except OSError as exc:
            self._failed(relative, exc)
        else:
            if wrote:  # it works again: a next failure is news
                self._broken.discard(relative)

    def write_and_close(self, relative: str, text: str) -> None:
        self.write(relative, text)
        self.close_file(relative)

    # Text made here from the values the loop queued (see ``JobLogs``).
    def write_events(self, relative: str, *events: EventFields) -> None:
        self.write(relative, "".join(_event_line(*fields) for fields in events))

    def write_header(
        self,
        relative: str,
        job_id: str,
        chunk: int,
        attempt: int,
        node: str,
        now: float,
        *command: str,
    ) -> None:
        self.write(relative, _started_header(job_id, chunk, attempt, node, command, now))

    def write_footer(self, relative: str, *footer: PlainValue) -> None:
        self.write_and_close(relative, _finished_footer(Footer(*footer)))  # type: ignore[arg-type]

    def end_begun(self, relative: str, *footer: PlainValue) -> None:
        """``write_footer``, for a log whose header was written (its render started)."""
        if relative in self._open or os.path.lexists(self.root / relative):
            self.write_footer(relative, *footer)

    def close_file(self, relative: str) -> None:
        handle = self._open.pop(relative, None)
        self._dirty.discard(relative)
        if handle is not None:
            self._closed(relative, handle)

    def flush(self) -> None:
        for relative in list(self._dirty):
            handle = self._open.get(relative)
            if handle is not None:
                try:
                    handle.flush()
                    self._broken.discard(relative)  # written: a next failure is news
                    if os.fstat(handle.fd).st_nlink == 0:
                        # Someone unlinked or renamed over it: write a new one from now on.
                        log.warning("the log %s was replaced: starting it anew", relative)
                        self.close_file(relative)
                except OSError as exc:
                    self._failed(relative, exc)
        self._dirty.clear()

    def forget_job(self, job_id: str) -> None:
        """Close the job's files and remove its log folder."""
        prefix = job_dir(job_id) + "/"
        for relative in [r for r in self._open if r.startswith(prefix)]:
            self.close_file(relative)
        self._broken = {r for r in self._broken if not r.startswith(prefix)}
        self.folders.forget(tuple(logfiles.parts_of(job_dir(job_id))))
        logfiles.remove_folder(self.root, job_dir(job_id))

    def close_all(self) -> None:
        self.flush()
        for relative in list(self._open):
            self.close_file(relative)
        self.folders.close()

    def tail_bytes(self, relative: str, max_bytes: int) -> tuple[bytes, bool] | None:
        self.flush()
        return logfiles.read_tail(self.root, relative, max_bytes)

    def read(self, relative: str, max_bytes: int) -> bytes | None:
        """The log's last ``max_bytes``; cut, from its first whole line, after a line that
        says so (``farm logs`` of a long chunk log began mid-line and said nothing)."""
        found = self.tail_bytes(relative, max_bytes)
        if found is None:
            return None
        data, cut = found
        if not cut:
            return data
        whole = data[data.find(b"\n") + 1 :] if b"\n" in data else b""
        return (_cut_notice(relative, max_bytes) + "\n").encode() + whole

    def tail(self, relative: str, max_bytes: int, say_cut: bool = False) -> list[str] | None:
        """The log's last lines; ``say_cut``: after a line that says so if it was cut (a
        console's Task Output began mid-output and said nothing)."""
        found = self.tail_bytes(relative, max_bytes)
        if found is None:
            return None
        data, cut = found
        lines = data.decode("utf-8", errors="replace").splitlines()
        if cut and lines:
            lines = lines[1:]  # a partial first line
            if say_cut:
                lines.insert(0, _cut_notice(relative, max_bytes))
        return lines


def _cut_notice(relative: str, max_bytes: int) -> str:
    """The line before a log served cut: how much of it, and where all of it is."""
    if max_bytes % 2**20 == 0:
        size = f"{max_bytes // 2**20} MiB"
    elif max_bytes % 2**10 == 0:
        size = f"{max_bytes // 2**10} KiB"
    else:
        size = f"{max_bytes} bytes"
    return (
        f"# farmtui: only the last {size} of this log are served; "
        f"all of it is {relative} in the sync root"
    )


class Footer(NamedTuple):
    """What a chunk log's footer says, as the loop queues it (plain values)."""

    node: str
    finished: float
    started: float
    outcome: str
    timeout_kind: str
    exit_status: str
    reason: str
    missing: str  # the frames not written, "1, 2, 30"


def _finished_footer(f: Footer) -> str:
    duration = f"{f.finished - f.started:.3f}s" if f.started else "unknown"
    footer = (
        f"# finished: {iso_time(f.finished)} on {f.node}\n"
        f"# outcome: {f.outcome}"
        + (f" ({f.timeout_kind})" if f.timeout_kind else "")
        + f"; exit status: {f.exit_status or 'none'}; duration: {duration}\n"
    )
    if f.reason:
        footer += f"# reason: {' '.join(f.reason.splitlines())}\n"
    if f.missing:
        footer += f"# missing frames: {f.missing}\n"
    return footer


def _started_header(
    job_id: str, chunk: int, attempt: int, node: str, command: Sequence[str], now: float
) -> str:
    return (
        f"# farmtui: job {job_id} chunk {chunk} attempt {attempt}\n"
        f"# node: {node}\n"
        f"# started: {iso_time(now)}\n"
        # One line whatever the job's argv holds: a newline in it wrote lines of its own
        # into the header (a "# outcome:" of the job's choosing, say).
        f"# command: {printable(shlex.join(command)) if command else '(not reported)'}\n"
    )


def _lines_text(lines: Sequence[str]) -> str:
    return "".join(line if line.endswith("\n") else line + "\n" for line in lines)


class JobLogs:
    """Appends to the job logs of one sync root, through the writer thread.

    Every method returns at once (the text is formatted on the writer thread
    too); ``tail`` and ``read`` are awaited and see every write asked before.
    """

    def __init__(self, root: Path, writer: LogSink | None = None) -> None:
        self.root = root
        self._own_writer = writer is None
        self.writer: LogSink = LogWriter() if writer is None else writer
        self._files = _Files(root)
        self.writer.on_idle(self._files.flush)
        # The loop queues values, and the text is made on the writer thread: formatting
        # times and lines was a tenth of the loop's work with 300 agents' chunks. Queued
        # as tuples of plain values (see LogWriter.write).
        files = self._files
        self._append = self.writer.operation(files.write)
        self._append_lines = self.writer.operation(files.write_lines)
        self._append_events = self.writer.operation(files.write_events)
        self._append_header = self.writer.operation(files.write_header)
        self._append_footer = self.writer.operation(files.write_footer)
        self._end_begun = self.writer.operation(files.end_begun)
        self._forget = self.writer.operation(files.forget_job)
        self._close_all = self.writer.operation(files.close_all)
        self._read = self.writer.operation(files.read)
        self._tail = self.writer.operation(files.tail)

    def _write(self, relative: str, text: str) -> None:
        self.writer.write(self._append, relative, text)

    def event(self, event: EventView) -> None:
        self.events((event,))

    def events(self, events: Iterable[EventView]) -> None:
        """Several events, in order: one write per job's ``events.log``, not one a line.

        A commit of many chunks' reports names three or four events per chunk;
        handing the writer thread each line alone cost more than the line.
        """
        fields: dict[str, list[EventFields]] = {}
        for event in events:
            if event.job_id:
                fields.setdefault(event.job_id, []).append(
                    (event.time, event.level, event.actor, event.text)
                )
        for job_id, queued in fields.items():
            self.writer.write(self._append_events, events_path(job_id), *queued)

    def chunk_started(
        self, job_id: str, chunk: int, attempt: int, node: str, command: list[str], now: float
    ) -> None:
        relative = chunk_log_path(job_id, chunk, attempt)
        self.writer.write(
            self._append_header, relative, job_id, chunk, attempt, node, now, *command
        )

    def chunk_output(self, job_id: str, chunk: int, attempt: int, lines: list[str]) -> None:
        if lines:
            # Joined on the writer thread: 87,000 lines (a message that fits in a batch)
            # took the loop 5-10 ms here.
            self.writer.write(
                self._append_lines,
                chunk_log_path(job_id, chunk, attempt),
                tuple(lines),
                weight=weigh_lines(lines),
            )

    def chunk_finished(self, report: ChunkFinished, node: str, now: float) -> None:
        relative = chunk_log_path(report.job_id, report.chunk, report.attempt)
        footer = (
            node,
            report.finished or now,
            report.started,
            report.outcome,
            report.timeout_kind or "",
            report.exit_status or "",
            report.reason or "",
            ", ".join(map(str, report.missing)),
        )  # Footer's fields, in order: plain values to queue (and send, see ``log_process``)
        self.writer.write(self._append_footer, relative, *footer)

    def attempt_ended(self, ended: EndedAttempt, now: float) -> None:
        """The footer of an attempt the leader ended (stopped, its node lost), if its render
        had begun a log: its agent's late report is stale and adds nothing to it."""
        relative = chunk_log_path(ended.job_id, ended.chunk, ended.attempt)
        footer = (ended.node, now, ended.started, ended.outcome, "", "", ended.reason, "")
        self.writer.write(self._end_begun, relative, *footer)

    def forget_job(self, job_id: str) -> None:
        """Close the job's files and remove its log folder (after what was asked before)."""
        self.writer.write(self._forget, job_id)

    def flush(self) -> None:
        """Block until everything asked so far is written and flushed: tests, shutdown."""
        self.writer.wait()

    def close(self) -> None:
        """Write what is queued and close every file; a shared writer's owner closes it.

        Not waiting for a shared writer here: its owner's ``close`` waits a bounded
        time, and a filer that stopped answering must not keep the leader from stopping.
        """
        self.writer.write(self._close_all)
        if self._own_writer:
            self.writer.close()

    # --- reading ------------------------------------------------------------------
    # Both are asked for at once (not when first awaited), so they see exactly the
    # writes asked before them: a console that follows a chunk from now on gets
    # the tail read here and then only the lines that came after it.
    def read(self, relative: str, max_bytes: int = TAIL_BYTES) -> asyncio.Future[bytes | None]:
        """The last ``max_bytes`` of a log, None if there is none (or a symlink is there)."""
        return answer(self.writer.call_op(self._read, relative, max_bytes))

    def tail(
        self, relative: str, max_bytes: int = TAIL_BYTES, *, say_cut: bool = False
    ) -> asyncio.Future[list[str] | None]:
        """The last lines of a log (None if it does not exist yet); ``say_cut``: after a
        line that says where all of it is, when it is longer."""
        return answer(self.writer.call_op(self._tail, relative, max_bytes, say_cut))


def answer(asked: concurrent.futures.Future[T]) -> asyncio.Future[T]:
    """The writer's answer, or OSError after ``READ_WAIT`` s: a filer that stopped
    answering fails a read in one line rather than holding it (and its console's turn)."""

    async def within_read_wait() -> T:
        try:
            return await asyncio.wait_for(asyncio.wrap_future(asked), READ_WAIT)
        except TimeoutError:
            why = f"the sync root did not answer within {READ_WAIT:g} s"
            raise OSError(errno.ETIMEDOUT, why) from None

    return asyncio.ensure_future(within_read_wait())
