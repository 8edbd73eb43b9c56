"""Every failed or timed-out attempt across the farm, newest first: the failures view.

The leader notes attempts as their failures are committed (``observe``: the
cost of the chunks a commit touched, never of the farm). The first read after
a start finds the older ones in the loaded jobs, once. Each entry names an
attempt; what is shown of it (the job's name, the chunk's state now) is read
when asked, and the log's last error line is read from the attempt's log on
the log thread.
"""

from __future__ import annotations

import asyncio
import heapq
from collections.abc import Callable, Iterable, Mapping

from farmtui.frames import format_frames
from farmtui.protocol import FailureView
from farmtui.renderers import INPUT_LIST
from server.joblogs import JobLogs, chunk_log_path
from server.model import Attempt, Changes, Chunk, Job
from server.transitions import job_name

# Failed attempts remembered; older ones are still in their jobs' records and logs.
KEPT = 5000
FAILED = frozenset({"failed", "timeout"})
# Bytes of an attempt's log read for its last error line.
TAIL_BYTES = 8192
# Words that mark a line as an error, in the renderers' own output.
_ERROR_WORDS = (
    "error", "fatal", "traceback", "exception", "failed", "abort", "segmentation", "impossible",
    "could not open",
)  # fmt: skip
# A renderer's last words that only say it gave up, and ffmpeg's about the list of a
# chunk's files as a whole: the error line before says why (which file).
_GAVE_UP = frozenset({"conversion failed!"})
_LIST_LINE = f"{INPUT_LIST}: "

Key = tuple[str, int, int]  # job id, chunk index, attempt number


class FailureLog:
    def __init__(self, jobs: Callable[[], Mapping[str, Job]]) -> None:
        # The scheduler's jobs (a new dict after each load).
        self.jobs = jobs
        # Key -> finished time; ordered by insertion, so the oldest goes first.
        self._entries: dict[Key, float] = {}
        # Key -> the last error line of its log, once read.
        self._errors: dict[Key, str] = {}
        self._seeded = False

    def observe(self, changes: Changes) -> None:
        """Note the failures a commit holds (after the commit)."""
        for job_id in changes.removed:
            for key in [k for k in self._entries if k[0] == job_id]:
                del self._entries[key]
                self._errors.pop(key, None)
        if not self._seeded:
            return  # the first read finds them in the records
        for job_id, index in changes.chunks:
            job = self.jobs().get(job_id)
            if job is None or not job.chunks.is_made(index):
                continue
            for attempt in job.chunks.look(index).attempts:
                self._add(job_id, index, attempt)
        while len(self._entries) > KEPT:
            oldest = next(iter(self._entries))
            del self._entries[oldest]
            self._errors.pop(oldest, None)

    def _add(self, job_id: str, index: int, attempt: Attempt) -> None:
        if attempt.outcome in FAILED and attempt.finished is not None:
            self._entries.setdefault((job_id, index, attempt.number), attempt.finished)

    def _seed(self) -> None:
        found = heapq.nlargest(KEPT, _failed_attempts(self.jobs().values()), key=lambda e: e[1])
        for key, finished in sorted(found, key=lambda e: e[1]):
            self._entries.setdefault(key, finished)
        self._seeded = True

    def newest(self, limit: int) -> list[FailureView]:
        """Up to ``limit`` failures, newest first, without their logs' error lines."""
        if not self._seeded:
            self._seed()
        keys = sorted(self._entries.items(), key=lambda e: e[1], reverse=True)
        views = []
        for (job_id, index, number), _ in keys:
            view = self._view(job_id, index, number)
            if view is not None:
                views.append(view)
                if len(views) == limit:
                    break
        return views

    def _view(self, job_id: str, index: int, number: int) -> FailureView | None:
        job = self.jobs().get(job_id)
        if job is None or not job.chunks.is_made(index):
            return None
        chunk = job.chunks.look(index)
        attempt = next((a for a in chunk.attempts if a.number == number), None)
        if attempt is None or attempt.finished is None:
            return None
        return _failure_view(job, chunk, attempt, attempt.finished)

    async def newest_with_errors(self, logs: JobLogs, limit: int) -> list[FailureView]:
        """``newest`` with each attempt's last error line, read from its log off the loop."""
        views = self.newest(limit)
        # A finished attempt's log does not change: each is read once, however
        # often consoles and scripts ask.
        unread = [v for v in views if (v.job_id, v.chunk, v.attempt) not in self._errors]
        tails = await asyncio.gather(
            *(logs.tail(chunk_log_path(v.job_id, v.chunk, v.attempt), TAIL_BYTES) for v in unread)
        )
        for view, lines in zip(unread, tails, strict=True):
            if lines is not None:  # None: not written yet (the log thread is behind)
                self._errors[(view.job_id, view.chunk, view.attempt)] = last_error_line(lines)
        for view in views:
            view.error_line = self._errors.get((view.job_id, view.chunk, view.attempt), "")
        return views


def _failed_attempts(jobs: Iterable[Job]) -> Iterable[tuple[Key, float]]:
    for job in jobs:
        for chunk in job.chunks.made():
            for attempt in chunk.attempts:
                if attempt.outcome in FAILED and attempt.finished is not None:
                    yield (job.id, chunk.index, attempt.number), attempt.finished


def _failure_view(job: Job, chunk: Chunk, attempt: Attempt, finished: float) -> FailureView:
    return FailureView(
        job_id=job.id,
        job_name=job_name(job),
        chunk=chunk.index,
        frames=format_frames(list(chunk.frames)),
        node=attempt.node,
        attempt=attempt.number,
        finished=finished,
        outcome=attempt.outcome,
        reason=attempt.reason
        or (f"exit status {attempt.exit_status}" if attempt.exit_status else ""),
        chunk_state=chunk.state,
    )


def last_error_line(lines: list[str]) -> str:
    """The last line that reads like an error, else the last line the renderer wrote.

    The leader's own header and footer lines (``# ...``) are not the renderer's.
    """
    own = [line.strip() for line in lines if line.strip() and not line.startswith("# ")]
    for line in reversed(own):
        lowered = line.lower()
        if lowered in _GAVE_UP or _LIST_LINE in line:
            continue
        if any(word in lowered for word in _ERROR_WORDS):
            return line
    return own[-1] if own else ""
