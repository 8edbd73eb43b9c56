"""The farm's event history for the console: its Monitor Log and each job's event log.

A job's history is its ``events.log`` in the sync root (read on the log
thread). The farm's latest events are kept in memory as they are committed;
after a restart the first read fills them in from the event logs of the jobs
that were busy last, so a console opened after a restart still shows what
happened before it.
"""

from __future__ import annotations

import asyncio
import heapq
import re
from collections import deque
from collections.abc import Callable, Container, Mapping
from datetime import datetime

from farmtui.protocol import LEVELS, EventView, Level
from server.joblogs import JobLogs, events_path, iso_time
from server.model import Changes, Job

# Farm events kept in memory for the Monitor Log.
KEPT = 5000
# After a restart, the event logs of this many of the latest busy jobs fill it in.
JOBS_READ = 50
# Bytes of one events.log read at most.
TAIL_BYTES = 256 * 1024

_LINE = re.compile(r"^(\S+) (INFO|WARN|ERROR) +(\S+?): (.*)\Z")
_LEVELS: dict[str, Level] = {"INFO": "info", "WARN": "warn", "ERROR": "error"}


def parse_event_line(line: str, job_id: str | None) -> EventView | None:
    """An ``events.log`` line (``joblogs.event_line``) back as an event; None if it is not one."""
    match = _LINE.match(line)
    if match is None:
        return None
    stamp, level, actor, text = match.groups()
    try:
        when = datetime.fromisoformat(stamp).timestamp()
    except ValueError:
        return None
    return EventView(
        time=when,
        level=_LEVELS[level],
        text=text,
        job_id=job_id,
        actor=None if actor == "leader" else actor,
    )


class History:
    def __init__(self, jobs: Callable[[], Mapping[str, Job]], logs: JobLogs) -> None:
        # The scheduler's jobs (a new dict after each load).
        self.jobs = jobs
        self.logs = logs
        self._recent: deque[EventView] = deque(maxlen=KEPT)
        # The one fill from the logs after a start; done once it has run.
        self._filling: asyncio.Future[None] | None = None

    def observe(self, changes: Changes) -> None:
        """Keep a commit's events (after the commit)."""
        self._recent.extend(changes.events)

    async def of_job(self, job_id: str, limit: int) -> list[EventView]:
        """The job's last ``limit`` events, oldest first."""
        lines = await self.logs.tail(events_path(job_id), TAIL_BYTES) or []
        events = [e for e in (parse_event_line(line, job_id) for line in lines) if e is not None]
        return events[-limit:]

    async def latest(
        self, limit: int, job_id: str | None = None, levels: Container[str] = LEVELS
    ) -> list[EventView]:
        """The farm's last ``limit`` events of ``levels``, oldest first; ``job_id``: that
        job's, from its own log (the farm's kept ones may hold none of them)."""
        if job_id is not None:
            events = await self.of_job(job_id, KEPT)
            return [e for e in events if e.level in levels][-limit:]
        filling = self._filling
        if filling is None:
            filling = self._filling = asyncio.ensure_future(self._fill())
        try:
            await asyncio.shield(filling)
        except Exception:
            if self._filling is filling:  # a log that could not be read: tried again next time
                self._filling = None
            raise
        if levels is LEVELS:
            return list(self._recent)[-limit:]
        return [e for e in self._recent if e.level in levels][-limit:]

    async def _fill(self) -> None:
        busy = heapq.nlargest(
            JOBS_READ,
            self.jobs().values(),
            key=lambda job: job.finished or job.started or job.created,
        )
        read = await asyncio.gather(*(self.of_job(job.id, KEPT) for job in busy))
        # Events logged since the start are both in memory and in the logs (there
        # to the millisecond).
        seen = {_identity(e) for e in self._recent}
        older = [e for events in read for e in events if _identity(e) not in seen]
        merged = sorted([*older, *self._recent], key=lambda e: e.time)
        self._recent = deque(merged[-KEPT:], maxlen=KEPT)


def _identity(event: EventView) -> tuple[str, str | None, str]:
    # Its time as its log line has it: cut to the millisecond, not rounded (an event of
    # .4008 s read back from its log as .400 was shown twice after a restart).
    return iso_time(event.time), event.job_id, " ".join(event.text.splitlines())
