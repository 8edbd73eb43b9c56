"""The console's model of the farm, kept up to date from the leader's messages.

Pure: no textual, no I/O. ``ConsoleState.apply`` folds one ``LeaderToConsole``
message into the model and records what it touched in a ``Change``, so the
widgets repaint only that (one table row, a few grid cells) instead of
rebuilding.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Literal

from farmtui.protocol import (
    ChunksChanged,
    ChunkView,
    Event,
    EventsFetched,
    EventView,
    Failures,
    FailureView,
    FrameRun,
    FramesChanged,
    FrameState,
    JobDetail,
    JobsChanged,
    JobsRemoved,
    JobState,
    JobView,
    JobWatched,
    LeaderToConsole,
    NodeLog,
    NodesChanged,
    NodeView,
    Reply,
    Role,
    Snapshot,
    TaskOutput,
)
from farmtui.tables import held_as_a_whole

# Grid order of frame states; a frame's state is stored as its index here.
FRAME_STATES: tuple[FrameState, ...] = (
    "unassigned",
    "assigned",
    "staged",
    "done",
    "failed",
    "held",
    "excluded",
)
FRAME_CODE: dict[str, int] = {name: code for code, name in enumerate(FRAME_STATES)}

# Order of the groups when jobs are grouped by state.
JOB_STATES: tuple[JobState, ...] = (
    "rendering",
    "queued",
    "holding",
    "paused",
    "failed",
    "done",
    "cancelled",
)

GroupBy = Literal["none", "priority", "state"]
CPU_HISTORY = 24  # readings kept per node
GROUP_CYCLE: dict[GroupBy, GroupBy] = {"none": "priority", "priority": "state", "state": "none"}


@dataclass(frozen=True)
class RetryDefaults:
    """The leader's retry settings for a job without its own (None: it did not say)."""

    retries: int | None = None
    delay: float | None = None
    cap: float | None = None


@dataclass(frozen=True)
class GroupHeader:
    """A group's title line in the jobs table (not a job)."""

    label: str
    count: int


Row = str | GroupHeader  # a job id, or a group title


@dataclass
class Change:
    """What a batch of messages changed; widgets refresh only this."""

    resync: bool = False
    order: bool = False
    jobs: set[str] = field(default_factory=set)
    removed: set[str] = field(default_factory=set)
    nodes: bool = False
    watched: bool = False
    watched_job: bool = False
    chunks: set[int] = field(default_factory=set)
    new_chunks: bool = False
    frames: list[int] = field(default_factory=list)
    task_output: list[TaskOutput] = field(default_factory=list)
    node_logs: list[NodeLog] = field(default_factory=list)
    events: list[EventView] = field(default_factory=list)
    replies: list[Reply] = field(default_factory=list)
    # A new list of failed attempts arrived (the failures view repaints).
    failures: bool = False
    # A job's state or failed-chunk count moved: the failures list may be out of date.
    failures_stale: bool = False
    # The farm's events were back-filled (the Monitor Log is rewritten).
    events_backfilled: bool = False
    # Event logs of single jobs, as asked for by the detail view's Events tab.
    job_events: list[EventsFetched] = field(default_factory=list)
    # Jobs whose state moved while live (not in a snapshot): (job id, old state, new state).
    transitions: list[tuple[str, JobState, JobState]] = field(default_factory=list)


class WatchedJob:
    """The job shown in the detail view: its chunks and one state code per frame."""

    def __init__(self, detail: JobDetail) -> None:
        self.job: JobView = detail.job
        self.job_id = detail.job.id
        self.blocked_nodes = dict(detail.blocked_nodes)
        # Grid order is ascending frame number, whatever order the frame list has.
        # Built with map/zip/sorted so a 100,000-frame job loads in a few milliseconds.
        if detail.next_after is not None and detail.frame_runs_complete:
            # One page of a big job's chunks: ``frame_states`` has only that page's
            # frames (the grid stopped at frame 10,000, its legend counted those);
            # the runs cover every frame.
            frames, codes = _frames_of_runs(detail.frame_runs)
        else:
            states = detail.frame_states
            frames = list(map(int, states))
            codes = bytearray(map(FRAME_CODE.__getitem__, states.values()))
        ascending = sorted(frames)
        if frames != ascending:
            order = sorted(range(len(frames)), key=frames.__getitem__)
            codes = bytearray(codes[i] for i in order)
            frames = ascending
        self.frames: list[int] = frames
        self.index: dict[int, int] = dict(zip(frames, range(len(frames)), strict=True))
        self.states = codes
        self.counts = [codes.count(code) for code in range(len(FRAME_STATES))]
        self.chunks: dict[int, ChunkView] = {chunk.index: chunk for chunk in detail.chunks}
        self.chunk_order: list[int] = sorted(self.chunks)
        self._chunk_of: dict[int, int] | None = None

    @property
    def held(self) -> bool:
        return held_as_a_whole(self.job)

    def chunk_of(self, frame: int) -> int | None:
        """The index of the chunk that renders ``frame``."""
        if self._chunk_of is None:
            self._chunk_of = {
                f: chunk.index for chunk in self.chunks.values() for f in chunk.frames
            }
        return self._chunk_of.get(frame)

    def frame_seconds(self) -> dict[int, float]:
        """Render seconds per frame: its chunk's render time over the chunk's frame count.

        The leader times chunks, not frames, so every frame of a chunk gets the
        same share (``chunk_render_time``); a chunk set done by hand has none.
        """
        seconds: dict[int, float] = {}
        for chunk in self.chunks.values():
            took = chunk_render_time(chunk)
            if took is not None and chunk.frames:
                per_frame = took / len(chunk.frames)
                for frame in chunk.frames:
                    seconds[frame] = per_frame
        return seconds

    def set_frames(self, frames: Iterable[int], state: FrameState) -> list[int]:
        """Set frames to ``state``; return the grid indexes that really changed."""
        code = FRAME_CODE[state]
        changed: list[int] = []
        for frame in frames:
            i = self.index.get(frame)
            if i is None:
                continue
            old = self.states[i]
            if old != code:
                self.counts[old] -= 1
                self.counts[code] += 1
                self.states[i] = code
                changed.append(i)
        return changed

    def set_chunks(self, chunks: Iterable[ChunkView]) -> tuple[set[int], bool]:
        """Replace chunk views; return the indexes touched and whether any is new."""
        touched: set[int] = set()
        new = False
        for chunk in chunks:
            old = self.chunks.get(chunk.index)
            if old is None:
                new = True
            if old is None or old.frames != chunk.frames:
                self._chunk_of = None
            self.chunks[chunk.index] = chunk
            touched.add(chunk.index)
        if new:
            self.chunk_order = sorted(self.chunks)
        return touched, new

    def state_of(self, frame: int) -> FrameState | None:
        i = self.index.get(frame)
        return None if i is None else FRAME_STATES[self.states[i]]


def _frames_of_runs(runs: Iterable[FrameRun]) -> tuple[list[int], bytearray]:
    """Every frame of ``runs`` and its state code, run after run."""
    frames: list[int] = []
    codes = bytearray()
    for run in runs:
        span = range(run.first, run.last + 1, run.step)
        frames.extend(span)
        codes.extend(bytes((FRAME_CODE[run.state],)) * len(span))
    return frames, codes


def dispatch_key(job: JobView) -> tuple[bool, int, int, float, str]:
    """Sort key of the dispatch order: priority first (lower sooner), then queue position."""
    return (job.archived, job.priority, job.position, job.created, job.id)


class ConsoleState:
    """Jobs, nodes, the watched job and the monitor log, as the leader last described them."""

    def __init__(self, clock: Callable[[], float] = time.time, max_events: int = 5000) -> None:
        self.clock = clock
        self.user = ""
        self.role: Role = "viewer"
        # The leader's retry settings for a job without its own (None: not told).
        self.retry_defaults = RetryDefaults()
        self.jobs: dict[str, JobView] = {}
        self.nodes: dict[str, NodeView] = {}
        self.watched: WatchedJob | None = None
        self.events: deque[EventView] = deque(maxlen=max_events)
        # Every failed or timed-out attempt on the farm, newest first (``FetchFailures``).
        self.failures: list[FailureView] = []
        self.synced = False
        self._order: list[str] | None = None
        # The last CPU readings of each node, oldest first, for the nodes' sparklines.
        self.cpu_history: dict[str, deque[float]] = {}

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    # -- reading -----------------------------------------------------------

    def dispatch_order(self) -> list[str]:
        """Job ids in dispatch order (archived last); cached until the order changes."""
        if self._order is None:
            self._order = [job.id for job in sorted(self.jobs.values(), key=dispatch_key)]
        return self._order

    def neighbours_after(self, job_id: str) -> str | None:
        """The job right after ``job_id`` in dispatch order, if any."""
        order = self.dispatch_order()
        try:
            i = order.index(job_id)
        except ValueError:
            return None
        return order[i + 1] if i + 1 < len(order) else None

    # -- writing -----------------------------------------------------------

    def apply(self, message: LeaderToConsole, change: Change) -> None:
        """Fold one leader message into the model, noting what changed in ``change``."""
        match message:
            case Snapshot():
                self.user, self.role = message.user, message.role
                self.retry_defaults = RetryDefaults(
                    message.default_retries, message.default_retry_delay, message.default_retry_cap
                )
                self.jobs = {job.id: job for job in message.jobs}
                self.nodes = {node.name: node for node in message.nodes}
                self._record_cpu(message.nodes)
                self._order = None
                self.synced = True
                change.resync = True
                change.order = True
                change.nodes = True
                if self.watched is not None and self.watched.job_id in self.jobs:
                    self.watched.job = self.jobs[self.watched.job_id]
                    change.watched_job = True
            case JobsChanged():
                for job in message.jobs:
                    old = self.jobs.get(job.id)
                    if old is None or dispatch_key(old) != dispatch_key(job):
                        change.order = True
                        self._order = None
                    self.jobs[job.id] = job
                    change.jobs.add(job.id)
                    if old is not None and old.state != job.state:
                        change.transitions.append((job.id, old.state, job.state))
                    if (
                        old is None
                        or old.state != job.state
                        or old.stats.chunks_failed != job.stats.chunks_failed
                    ):
                        change.failures_stale = True
                    if self.watched is not None and self.watched.job_id == job.id:
                        self.watched.job = job
                        change.watched_job = True
            case JobsRemoved():
                for job_id in message.job_ids:
                    if self.jobs.pop(job_id, None) is not None:
                        change.removed.add(job_id)
                        change.order = True
                        self._order = None
            case NodesChanged():
                for node in message.nodes:
                    self.nodes[node.name] = node
                self._record_cpu(message.nodes)
                change.nodes = True
            case JobWatched():
                # The list is the leader's (Snapshot, JobsChanged, JobsRemoved): a job
                # watched is shown, never listed on that account (an archived one
                # whose detail came after its removal stayed in the table).
                self.watched = WatchedJob(message.detail)
                change.watched = True
            case ChunksChanged():
                if self.watched is not None and self.watched.job_id == message.job_id:
                    touched, new = self.watched.set_chunks(message.chunks)
                    change.chunks |= touched
                    change.new_chunks = change.new_chunks or new
            case FramesChanged():
                if self.watched is not None and self.watched.job_id == message.job_id:
                    change.frames.extend(self.watched.set_frames(message.frames, message.state))
            case TaskOutput():
                change.task_output.append(message)
            case NodeLog():
                change.node_logs.append(message)
            case Event():
                self.events.append(message.event)
                change.events.append(message.event)
            case Failures():
                self.failures = list(message.failures)
                change.failures = True
            case EventsFetched(job_id=None):
                self.backfill(message.events)
                change.events_backfilled = True
            case EventsFetched():
                change.job_events.append(message)
            case Reply():
                change.replies.append(message)

    def _record_cpu(self, nodes: Iterable[NodeView]) -> None:
        for node in nodes:
            history = self.cpu_history.setdefault(node.name, deque(maxlen=CPU_HISTORY))
            if node.state == "offline":
                history.clear()  # readings from before it went away say nothing now
            else:
                history.append(node.cpu_percent)

    def backfill(self, events: list[EventView]) -> None:
        """Merge the leader's latest events (oldest first) into the monitor log.

        Events already shown (received live, or back-filled before a reconnect)
        are kept once; the console's own lines keep their place in time.
        """
        seen: set[tuple[int, str, str | None, str]] = set()
        merged: list[EventView] = []
        for event in sorted([*self.events, *events], key=lambda e: e.time):
            # As a restarted leader reads them back from the job's events.log: to the
            # millisecond, on one line. Compared exactly, every line seen before a
            # restart was shown twice after it.
            millis = round(event.time * 1e6) // 1000
            key = (millis, " ".join(event.text.splitlines()), event.job_id, event.level)
            if key not in seen:
                seen.add(key)
                merged.append(event)
        self.events.clear()
        self.events.extend(merged)

    def unwatch(self) -> None:
        self.watched = None

    def log(self, level: Literal["info", "warn", "error"], text: str) -> EventView:
        """Record one of the console's own events in the monitor log."""
        event = EventView(time=self.clock(), level=level, text=text, actor="console")
        self.events.append(event)
        return event


# Attempt outcomes after which a chunk is done with output: rendered, or stopped at its
# maximum render time with on_timeout = "complete".
SUCCEEDED = frozenset({"done", "timeout"})


def chunk_render_time(chunk: ChunkView) -> float | None:
    """Seconds the done chunk's render took; None when it has none.

    The renderer's own run as the agent timed it when the leader sends it (the
    chunk's ``render_time``), else the successful attempt from dispatch to finish.
    """
    if chunk.state != "done":
        return None
    if chunk.render_time is not None:
        return chunk.render_time
    for attempt in reversed(chunk.attempts):
        if attempt.number == chunk.attempt:
            if attempt.outcome in SUCCEEDED and attempt.finished is not None:
                return max(attempt.finished - attempt.started, 0.0)
            break
    return None
