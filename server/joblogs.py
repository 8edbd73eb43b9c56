"""Job logs in the sync root, so ``tail -f`` works without the console.

- ``jobs/<job_id>/events.log``: one line per event (time, level, actor, text);
- ``jobs/<job_id>/chunk-<NNNN>.attempt-<A>.log``: a header (command line, node,
  start time), the renderer's raw output, and a footer (outcome, exit status
  or signal, duration).

Files stay open while they are written and are flushed once per batch of
events (``flush``), so an output line costs a buffered write, not an open.
"""

from __future__ import annotations

import logging
import os
import shlex
import shutil
from collections import OrderedDict
from datetime import datetime
from io import TextIOWrapper
from pathlib import Path

from farmtui.protocol import ChunkFinished, EventView
from server.paths import confine

log = logging.getLogger("farmtui.leader.joblogs")

# Open files kept at most; the least recently written are closed first.
MAX_OPEN = 256
# Reading a log for the console or the API: at most this much from its end.
TAIL_BYTES = 512 * 1024


def job_dir(job_id: str) -> str:
    return f"jobs/{job_id}"


def events_path(job_id: str) -> str:
    return f"jobs/{job_id}/events.log"


def chunk_log_path(job_id: str, chunk: int, attempt: int) -> str:
    """The chunk attempt's log, relative to the sync root (``AssignChunk.log_path``)."""
    return f"jobs/{job_id}/chunk-{chunk:04d}.attempt-{attempt}.log"


def iso_time(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp).astimezone().isoformat(timespec="milliseconds")


def event_line(event: EventView) -> str:
    text = " ".join(event.text.splitlines())
    return f"{iso_time(event.time)} {event.level.upper():<5} {event.actor or 'leader'}: {text}\n"


class JobLogs:
    """Appends to the job logs of one sync root."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._open: OrderedDict[str, TextIOWrapper] = OrderedDict()
        self._dirty: set[str] = set()

    # --- writing ------------------------------------------------------------------
    def _file(self, relative: str) -> TextIOWrapper:
        handle = self._open.get(relative)
        if handle is not None:
            self._open.move_to_end(relative)
            return handle
        path = confine(self.root, relative)
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(path, "a", encoding="utf-8", errors="replace")  # noqa: SIM115
        self._open[relative] = handle
        while len(self._open) > MAX_OPEN:
            old, old_handle = self._open.popitem(last=False)
            self._dirty.discard(old)
            old_handle.close()
        return handle

    def _write(self, relative: str, text: str) -> None:
        try:
            self._file(relative).write(text)
            self._dirty.add(relative)
        except OSError as exc:
            log.error("cannot write %s: %s", relative, exc)

    def _close(self, relative: str) -> None:
        handle = self._open.pop(relative, None)
        self._dirty.discard(relative)
        if handle is not None:
            try:
                handle.close()
            except OSError as exc:
                log.error("cannot write %s: %s", relative, exc)

    def event(self, event: EventView) -> None:
        if event.job_id:
            self._write(events_path(event.job_id), event_line(event))

    def chunk_started(
        self, job_id: str, chunk: int, attempt: int, node: str, command: list[str], now: float
    ) -> None:
        relative = chunk_log_path(job_id, chunk, attempt)
        header = (
            f"# farmtui: job {job_id} chunk {chunk} attempt {attempt}\n"
            f"# node: {node}\n"
            f"# started: {iso_time(now)}\n"
            f"# command: {shlex.join(command) if command else '(not reported)'}\n"
        )
        self._write(relative, header)

    def chunk_output(self, job_id: str, chunk: int, attempt: int, lines: list[str]) -> None:
        if lines:
            text = "".join(line if line.endswith("\n") else line + "\n" for line in lines)
            self._write(chunk_log_path(job_id, chunk, attempt), text)

    def chunk_finished(self, report: ChunkFinished, node: str, now: float) -> None:
        relative = chunk_log_path(report.job_id, report.chunk, report.attempt)
        finished = report.finished or now
        duration = f"{finished - report.started:.3f}s" if report.started else "unknown"
        footer = (
            f"# finished: {iso_time(finished)} on {node}\n"
            f"# outcome: {report.outcome}"
            + (f" ({report.timeout_kind})" if report.timeout_kind else "")
            + f"; exit status: {report.exit_status or 'none'}; duration: {duration}\n"
        )
        if report.reason:
            footer += f"# reason: {' '.join(report.reason.splitlines())}\n"
        if report.missing:
            footer += f"# missing frames: {', '.join(map(str, report.missing))}\n"
        self._write(relative, footer)
        self._close(relative)

    def flush(self) -> None:
        for relative in self._dirty:
            handle = self._open.get(relative)
            if handle is not None:
                try:
                    handle.flush()
                except OSError as exc:
                    log.error("cannot write %s: %s", relative, exc)
        self._dirty.clear()

    def forget_job(self, job_id: str) -> Path:
        """Close the job's files; returns its folder for ``delete_folder``."""
        prefix = job_dir(job_id) + "/"
        for relative in [r for r in self._open if r.startswith(prefix)]:
            self._close(relative)
        return confine(self.root, job_dir(job_id))

    def close(self) -> None:
        self.flush()
        for relative in list(self._open):
            self._close(relative)

    # --- reading ------------------------------------------------------------------
    def path(self, relative: str) -> Path:
        self.flush()
        return confine(self.root, relative)

    def tail(self, relative: str, max_bytes: int = TAIL_BYTES) -> list[str] | None:
        """The last lines of a log (None if it does not exist yet)."""
        path = self.path(relative)
        try:
            with open(path, "rb") as handle:
                size = handle.seek(0, os.SEEK_END)
                start = max(0, size - max_bytes)
                handle.seek(start)
                data = handle.read()
        except FileNotFoundError:
            return None
        lines = data.decode("utf-8", errors="replace").splitlines()
        if start > 0 and lines:
            lines = lines[1:]  # a partial first line
        return lines


def delete_folder(path: Path) -> None:
    """Remove a job's log folder (run in a thread: it may be big)."""
    shutil.rmtree(path, ignore_errors=True)
