"""The leader's in-memory picture of the farm: jobs, chunks, attempts, nodes.

These are plain mutable records owned by the scheduler. The store persists
them; the links never change them directly, only through the scheduler.
"""

from __future__ import annotations

from array import array
from bisect import bisect_right
from collections import Counter, deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import NamedTuple

import msgspec
from sortedcontainers import SortedList

from farmtui.frames import chunk_bounds
from farmtui.protocol import (
    AssignChunk,
    ChunkKind,
    ChunkState,
    EventView,
    GpuInfo,
    JobSpec,
    JobState,
    Level,
    UpdateTimeouts,
)
from farmtui.renderers import FIRST_TOKENS

# The one empty frame set every chunk shares: ``frozenset()`` makes a new object
# each time, and each one is another object for the garbage collector to walk.
NO_FRAMES: frozenset[int] = frozenset()


# Attempts and chunks are msgspec Structs without garbage-collector tracking
# (``gc=False``): a leader keeps every chunk it has touched, and a full
# collection walked each of them and its attempts again and again (pauses of
# 100-300 ms with 100,000 done chunks). Neither ever refers back to anything
# that refers to it, so reference counting alone frees them. Their frames and
# attempts are tuples, which the collector stops tracking once it has seen
# them hold only numbers and attempts: a done chunk leaves one tracked object
# (its ``done`` set) where it left six.
class Attempt(msgspec.Struct, gc=False, omit_defaults=True):
    number: int
    node: str
    started: float
    finished: float | None = None
    # "running", "done", "failed", "timeout", "killed", "lost".
    outcome: str = "running"
    exit_status: str | None = None
    reason: str | None = None
    # The renderer showed a first sign of life (output, progress or a frame).
    alive: bool = False
    # The node's GPUs it had to itself, and the limits it held a unit of.
    gpus: tuple[int, ...] = ()
    limits: tuple[str, ...] = ()
    # The attempt whose kept output it copies (a retry sync: no render); 0: a render.
    copy_of: int = 0


class Chunk(msgspec.Struct, gc=False):
    job_id: str
    index: int
    frames: tuple[int, ...]
    kind: ChunkKind = "render"
    state: ChunkState = "queued"
    scout: bool = False
    node: str | None = None
    # Number of the latest attempt (0: never dispatched). Attempt numbers only grow.
    attempt: int = 0
    # Attempts that counted as errors; farm-caused failures do not count.
    errors: int = 0
    retry_at: float | None = None
    started: float | None = None
    finished: float | None = None
    # Duration of the successful attempt, for estimates and the auto timeout.
    render_time: float | None = None
    # Frames of the current attempt that exist in staging / in the sync root.
    # Frozen (replaced, never changed in place): a chunk without any costs no set of
    # its own (the collector does track a non-empty one: a done chunk's ``done``).
    staged: frozenset[int] = NO_FRAMES
    # In frame order. A done chunk's is its ``frames`` itself: no object of its own,
    # where a frozenset per done chunk was one more object for every full collection
    # to walk, for as long as the job is kept (the collector never untracks a set).
    done: tuple[int, ...] = ()
    # Replaced, never changed in place (see above).
    attempts: tuple[Attempt, ...] = ()
    # An earlier attempt told to stop whose tree is not yet known to be dead: it
    # keeps its slot on ``stopping_node``, and no new attempt starts anywhere
    # until its agent confirms the tree is gone or the node is lost.
    stopping_node: str | None = None
    stopping_attempt: int = 0
    # A node that holds this chunk's complete staged output from attempt
    # ``staged_attempt`` whose copy to the sync root failed: retry sync copies
    # it again from there instead of rendering.
    staged_on: str | None = None
    staged_attempt: int = 0


# A chunk's stage: "pre", "scout", "render" (the non-scout render chunks) or "post".
Stage = str


# --- a job's chunks, made when first needed ---------------------------------------
# A job's chunks, each made the first time it is needed.
#
# A job of a million one-frame chunks used to be a million ``Chunk`` records
# (with their lists and sets) from the moment it was submitted: seconds of
# work on the event loop, most of a gigabyte, and garbage-collector passes
# that walked all of it. Yet until a chunk is dispatched it is exactly what
# the job's spec says: queued, its frames cut from the frame list. So a job
# keeps its ``ChunkLayout`` (the frames as one compact array, cut into
# segments: pre-job, scouts, renders, post-job) and a ``ChunkList`` makes a
# chunk from it on first access and keeps it from then on. The store does the
# same on load: only chunks that changed have rows.
#
# Every ``Chunk`` handed out is kept, so a change made to it is never lost.
# Readers that only look (frame grids, views) use ``ChunkList.look``, which
# makes nothing for an untouched chunk.


@dataclass(frozen=True, slots=True)
class Segment:
    """Consecutive chunks of one kind, cut from one list of frames."""

    first: int  # index of its first chunk
    count: int
    kind: ChunkKind
    scout: bool
    # Every frame of its chunks, in order (empty for pre/post): a range when they
    # are evenly spaced (1-1000000, 1-1000000x2, 1000-1: no memory at all), else a
    # compact array.
    frames: range | array[int]
    size: int  # frames per chunk (the last may have fewer)
    # Where each chunk starts in ``frames``, then where the last ends: chunks of
    # an unevenly spaced list end where an evenly spaced run ends, so each one is
    # ``{start}-{end}x{step}``. None: every chunk has ``size`` frames.
    bounds: array[int] | None = None

    @property
    def stage(self) -> Stage:
        if self.kind == "render":
            return "scout" if self.scout else "render"
        return self.kind

    def offset(self, index: int) -> int:
        """Where chunk ``index`` starts in ``frames`` (``first + count``: the end)."""
        if self.bounds is None:
            return min((index - self.first) * self.size, len(self.frames))
        return self.bounds[index - self.first]

    def frames_of(self, index: int) -> tuple[int, ...]:
        return tuple(self.frames[self.offset(index) : self.offset(index + 1)])

    def frames_between(self, first: int, end: int) -> range | array[int]:
        """The frames of chunks ``first`` up to (not including) ``end``."""
        return self.frames[self.offset(first) : self.offset(end)]

    def chunk_at(self, position: int) -> int:
        """The index of the chunk holding ``frames[position]``."""
        if self.bounds is None:
            return self.first + position // self.size
        return self.first + bisect_right(self.bounds, position) - 1


# How a job's frames were cut, stored with the job so a job keeps the indices
# of the chunks it was cut into even when a later leader cuts differently.
#   1: ``chunk`` frames each, in list order, whatever their spacing (so 1,5,10-12
#      was one chunk: ``{start}-{end}`` rendered 2-4 and 6-9 too).
#   2: as 1, but a chunk never spans two evenly spaced runs of the list.
CUTS = (1, 2)
CUT = 2


class ChunkLayout:
    """How a job's frames are cut into chunks: pre-job, scouts, renders, post-job."""

    __slots__ = ("segments", "count", "cut_version", "_starts", "_positions")

    def __init__(self, segments: list[Segment], cut_version: int = CUT) -> None:
        self.segments = segments
        self.count = sum(segment.count for segment in segments)
        self.cut_version = cut_version
        self._starts = [segment.first for segment in segments]
        # Frame -> position, for segments whose frames are an array (made when
        # first asked: only frame-by-frame dependencies look frames up).
        self._positions: dict[int, dict[int, int]] = {}

    def chunk_of(self, frame: int) -> int | None:
        """The render chunk (scout or not) that renders ``frame``; None if none does."""
        for number, segment in enumerate(self.segments):
            if segment.kind != "render":
                continue
            frames = segment.frames
            if isinstance(frames, range):
                if frame in frames:
                    return segment.chunk_at(frames.index(frame))
                continue
            positions = self._positions.get(number)
            if positions is None:
                positions = self._positions[number] = {f: i for i, f in enumerate(frames)}
            position = positions.get(frame)
            if position is not None:
                return segment.chunk_at(position)
        return None

    @classmethod
    def cut(
        cls, spec: JobSpec, frames: list[int], scouts: set[int], version: int = CUT
    ) -> ChunkLayout:
        """Pre-job, scout chunks, render chunks, post-job, indexed in that order."""
        if version not in CUTS:
            raise ValueError(f"no chunk cut {version} (this leader knows {CUTS})")
        scout_frames = [f for f in frames if f in scouts] if scouts else []
        rest = [f for f in frames if f not in scouts] if scouts else frames
        segments: list[Segment] = []
        first = 0

        def add(run: list[int], kind: ChunkKind, scout: bool, size: int) -> None:
            nonlocal first
            compact = _compact(run)
            bounds = None
            if run and isinstance(compact, array) and version >= 2:
                bounds = chunk_bounds(run, size)
                count = len(bounds) - 1
            else:
                count = -(-len(run) // size) if run else 1
            segments.append(Segment(first, count, kind, scout, compact, size, bounds))
            first += count

        if spec.pre_job is not None:
            add([], "pre", False, 1)
        if scout_frames:
            add(scout_frames, "render", True, spec.chunk)
        if rest:
            add(rest, "render", False, spec.chunk)
        if spec.post_job is not None:
            add([], "post", False, 1)
        return cls(segments, version)

    def segment(self, index: int) -> Segment:
        if not 0 <= index < self.count:
            raise IndexError(index)
        return self.segments[bisect_right(self._starts, index) - 1]

    def make(self, job_id: str, index: int, state: ChunkState = "queued") -> Chunk:
        """The chunk at ``index`` as submitted (never run), in ``state``."""
        segment = self.segment(index)
        frames = segment.frames_of(index)
        return Chunk(
            job_id=job_id,
            index=index,
            frames=frames,
            kind=segment.kind,
            scout=segment.scout,
            state=state,
            done=frames if state == "done" else (),
        )


def _compact(frames: list[int]) -> range | array[int]:
    if len(frames) > 1 and (step := frames[1] - frames[0]):
        if frames[-1] == frames[0] + step * (len(frames) - 1):
            even = range(frames[0], frames[-1] + (1 if step > 0 else -1), step)
            if frames == list(even):
                return even
    elif len(frames) == 1:
        return range(frames[0], frames[0] + 1)
    return array("q", frames)


class ChunkList:
    """A job's chunks by index; one is made from the layout when first asked for."""

    __slots__ = ("job_id", "layout", "_made", "untouched")

    def __init__(
        self,
        job_id: str = "",
        layout: ChunkLayout | None = None,
        untouched: ChunkState = "queued",
    ) -> None:
        self.job_id = job_id
        self.layout = ChunkLayout([]) if layout is None else layout
        self._made: dict[int, Chunk] = {}
        # The state of every chunk not made yet: queued, unless a job-wide action
        # (cancel, complete) moved them all at once (``actions.move_untouched``).
        self.untouched: ChunkState = untouched

    def __len__(self) -> int:
        return self.layout.count

    def __getitem__(self, index: int) -> Chunk:
        chunk = self._made.get(index)
        if chunk is not None:
            return chunk
        if index < 0:
            index += self.layout.count
        if not 0 <= index < self.layout.count:
            raise IndexError(f"job {self.job_id} has no chunk {index}")
        chunk = self._made.get(index)
        if chunk is None:
            chunk = self._made[index] = self.layout.make(self.job_id, index, self.untouched)
        return chunk

    def __setitem__(self, index: int, chunk: Chunk) -> None:
        if not 0 <= index < self.layout.count:
            raise IndexError(f"job {self.job_id} has no chunk {index}")
        self._made[index] = chunk

    def __iter__(self) -> Iterator[Chunk]:
        """Every chunk, in index order; this makes them all (job-wide actions)."""
        for index in range(self.layout.count):
            yield self[index]

    def look(self, index: int) -> Chunk:
        """The chunk to read, not change: an untouched one is made and not kept."""
        chunk = self._made.get(index)
        if chunk is None:
            return self.layout.make(self.job_id, index, self.untouched)
        return chunk

    def looks(self) -> Iterator[Chunk]:
        """Every chunk to read, in index order, keeping none of the untouched ones."""
        for index in range(self.layout.count):
            yield self.look(index)

    def made(self) -> list[Chunk]:
        """The chunks made so far (all that may differ from the layout), by index."""
        return [self._made[index] for index in sorted(self._made)]

    def made_count(self) -> int:
        return len(self._made)

    def made_indices(self) -> list[int]:
        """The indices of the chunks made so far, in order."""
        return sorted(self._made)

    def is_made(self, index: int) -> bool:
        return index in self._made


# msgspec's hooks for a job's ``chunks``: not in the job's row (each chunk that
# differs from the layout has a row of its own). The row keeps the untouched
# chunks' state when they are not queued, and the cut the job was made with:
# ``[]`` is queued, cut 1 (rows of leaders before cut 2).
def chunks_decoded(kind: type, value: object) -> object:
    if kind is ChunkList:
        fields = value if isinstance(value, dict) else {}
        untouched = fields.get("untouched", "queued")
        version = fields.get("cut", 1)
        if version not in CUTS:
            raise ValueError(f"chunks cut {version!r}: this leader knows {CUTS}")
        for state in _UNTOUCHED_STATES:
            if untouched == state:
                return ChunkList(layout=ChunkLayout([], version), untouched=state)
        raise ValueError(f"untouched chunks cannot be {untouched!r}")
    raise NotImplementedError(f"{kind.__name__} is not stored")


def chunks_encoded(value: object) -> object:
    if isinstance(value, ChunkList):
        fields: dict[str, object] = {}
        if value.untouched != "queued":
            fields["untouched"] = value.untouched
        if value.layout.cut_version != 1:
            fields["cut"] = value.layout.cut_version
        return fields or []
    raise NotImplementedError(f"{type(value).__name__} is not stored")


# What a job-wide action may leave every untouched chunk in.
_UNTOUCHED_STATES: tuple[ChunkState, ...] = ("queued", "cancelled", "done")


@dataclass(slots=True)
class Tally:
    """Counters of one job, kept up to date on every chunk change (``frame_states.tracking``).

    Never persisted: built from the chunks once (``frame_states.tally_of``) and
    then adjusted by each change, so no event costs more than the chunk it touches.
    """

    # (stage, chunk state) -> chunks.
    chunks: Counter[tuple[Stage, str]] = field(default_factory=Counter)
    # Frame state -> frames.
    frames: Counter[str] = field(default_factory=Counter)
    # Indices of the assigned chunks.
    running: set[int] = field(default_factory=set)
    # Render times of the done render chunks that have one, sorted (O(log n) to add or
    # take one away, and to read the p90: a list's insort moved half a million-chunk
    # job's times on every chunk's end); their sum and frames.
    times: SortedList = field(default_factory=SortedList)
    time_sum: float = 0.0
    timed_frames: int = 0
    # The render time of the chunk done last since the counters were built (None: none).
    last_time: float | None = None
    # (chunk index, attempt) of its renders seen still running PREFETCH_BELOW s after
    # they began (``Scheduler.tick``): while one runs, its chunks are long (``prefetch``).
    # Oldest first; one that ended goes once it is at the front (``prefetch.renders_long``).
    long_renders: deque[tuple[int, int]] = field(default_factory=deque)
    # Heap of chunk indices that may wait for a slot (checked when popped).
    ready: list[int] = field(default_factory=list)
    # Heap of (retry_at, index) of waiting-retry chunks that were not due yet.
    retry: list[tuple[float, int]] = field(default_factory=list)
    # Bumped by every change to ``chunks``: what was derived from them (gates, the
    # frame runs) stays valid while it is the same.
    version: int = 0
    derived: tuple[int, object] = (-1, None)
    runs: tuple[int, object] = (-1, None)
    # The frame runs of each block of chunks (``frame_states.RunBlocks``), and the
    # blocks changed since: a read recomputes only those.
    run_blocks: object = None
    run_block: int = 0  # chunks per block of ``run_blocks``; 0: none kept
    dirty_blocks: set[int] = field(default_factory=set)
    # The job's kind of work (``prefetch.work_kind``), worked out on first use.
    kind: object = None
    # (spec, {chunk kind: AssignChunk}): what every assignment of the job's chunks of a
    # kind says alike, while the job has that spec (``assignments.build_assignment``).
    alike: object = None
    # (spec, the argv tokens its commands use beyond FIRST_TOKENS), while the job has
    # that spec (``agent_tokens.tokens_needed``).
    needs: tuple[JobSpec, frozenset[str]] | None = None


@dataclass(slots=True)
class Job:
    id: str
    spec: JobSpec
    owner: str
    state: JobState
    priority: int
    # Sort key within the priority group: lower dispatches sooner.
    queue_key: float
    created: float
    archived: bool = False
    reviewed: bool = False
    started: float | None = None
    finished: float | None = None
    chunks: ChunkList = field(default_factory=ChunkList)
    # node name -> time the block ends.
    blocked: dict[str, float] = field(default_factory=dict)
    # node name -> errors of this job on that node since its last block.
    node_errors: dict[str, int] = field(default_factory=dict)
    # Scout frames rendered and the job has been un-held past them.
    scout_released: bool = False
    # Held while paused: un-held, it is paused again (a hold never resumes a job).
    paused_under_hold: bool = False
    # The submitter's idempotency key: a retried submit with it finds this job.
    submit_key: str | None = None
    # What that submit asked for (``submission.request_digest``): the same key with another
    # request is refused rather than answered with this job.
    submit_digest: str | None = None
    # Who put the job in its current state (None: the leader itself), for "paused by alice".
    state_by: str | None = None
    # Live counters (never stored; ``frame_states.tally_of`` builds them on first use).
    tally: Tally | None = field(default=None, compare=False, repr=False)


@dataclass(slots=True)
class Node:
    name: str
    slots: int
    tags: list[str] = field(default_factory=list)
    enabled: bool = True
    online: bool = False
    cpu_count: int = 0
    memory_total: int = 0
    cpu_percent: float = 0.0
    memory_percent: float = 0.0
    # When it was last heard (wall clock); after a restart, ``unheard`` seconds before the
    # start: the silence clock that declares a node lost, which counts only leader time.
    last_seen: float = 0.0
    # When a node not heard since this leader started was last heard, as its row says (0:
    # heard since, or never): what ``farm nodes`` shows, rather than the silence clock.
    seen_before_start: float = 0.0
    # Seconds of silence as last stored, in steps (``Scheduler.tick``): a restarted
    # leader goes on counting them rather than start again from nothing, or a leader
    # restarting more often than ``node_timeout`` never moved a dead node's chunks.
    unheard: float = 0.0
    # The node_timeout of the leader whose Welcome granted its lease (0: this one's). A
    # leader restarted with a shorter one, or a standby configured so, judges the node
    # by the longer until its next hello: its lease (a share of that timeout) may run.
    lease_timeout: float = 0.0
    version: str = ""
    # The OS its hello named ("linux", "windows", "darwin"; "" from an old agent).
    os: str = ""
    # The agent (its stable id) that holds this node name and its slots.
    agent_id: str = ""
    # Its GPUs (from its hello), and whether only jobs that ask for GPUs run here.
    gpus: list[GpuInfo] = field(default_factory=list)
    gpu_only: bool = False
    # The argv tokens its agent expands (its hello's, FIRST_TOKENS from an old agent),
    # sorted: its row is written the same each time.
    tokens: tuple[str, ...] = tuple(sorted(FIRST_TOKENS))
    # Chunks it holds ahead of its slots, each waiting for one to free (``server.prefetch``).
    prefetch: int = 0
    # (job_id, chunk index, attempt) of every attempt that holds a slot here:
    # the chunks it runs now and those told to stop that it has not yet
    # confirmed dead. Persisted, so a restarted leader still fences them.
    running: set[tuple[str, int, int]] = field(default_factory=set)


class Assignment(msgspec.Struct, kw_only=True, frozen=True):
    """Send ``message`` to ``node``: the chunk is already marked assigned."""

    node: str
    message: AssignChunk


class Kill(msgspec.Struct, kw_only=True, frozen=True):
    node: str
    job_id: str
    chunk: int
    attempt: int
    reason: str
    # Only if it waits for a slot there (``KillChunk.waiting_only``).
    waiting_only: bool = False


class Discard(msgspec.Struct, kw_only=True, frozen=True):
    """Tell ``node`` to delete the staged output it kept for a chunk attempt."""

    node: str
    job_id: str
    chunk: int
    attempt: int


class Notification(msgspec.Struct, kw_only=True, frozen=True):
    """Something the owner should hear about (webhook + event log)."""

    job_id: str
    # "timeout", "done", "failed", "scout-ready" ...
    kind: str
    text: str


class EndedAttempt(NamedTuple):
    """An attempt the leader ended (``Changes.ended``), for its chunk log's footer."""

    job_id: str
    chunk: int
    attempt: int
    node: str
    started: float
    outcome: str
    reason: str


@dataclass(slots=True)
class Changes:
    """What one scheduler call changed, for the I/O layer to persist and announce.

    The leader commits ``jobs``/``chunks``/``nodes``/``removed`` to the store in
    one transaction, and only then sends ``assignments``, ``kills`` and
    ``timeout_updates``, writes ``events`` and fans everything out to consoles.
    A submitted job is named in ``jobs`` alone: its chunks are all new and untouched.
    """

    jobs: set[str] = field(default_factory=set)
    chunks: set[tuple[str, int]] = field(default_factory=set)
    nodes: set[str] = field(default_factory=set)
    # Nodes whose live readings changed (heartbeat, online): for consoles, not the store.
    readings: set[str] = field(default_factory=set)
    # Nodes whose last contact is written (``Leader._tick``): for the store, not consoles
    # (what they show of a node did not change).
    contacts: set[str] = field(default_factory=set)
    removed: set[str] = field(default_factory=set)
    # Jobs whose untouched chunks all changed at once: a console watching one is
    # sent it afresh rather than frame by frame.
    refreshed: set[str] = field(default_factory=set)
    assignments: list[Assignment] = field(default_factory=list)
    kills: list[Kill] = field(default_factory=list)
    discards: list[Discard] = field(default_factory=list)
    events: list[EventView] = field(default_factory=list)
    notifications: list[Notification] = field(default_factory=list)
    # (job_id, frames, new frame state) for the consoles' frame grids.
    frames: list[tuple[str, list[int], str]] = field(default_factory=list)
    # (node, message): new limits for chunks already running there (the auto
    # timeout became known while they ran).
    timeout_updates: list[tuple[str, UpdateTimeouts]] = field(default_factory=list)
    # Attempts the leader ended itself (stopped, their node lost), whose agent reports
    # nothing more that a log takes: their chunk log's footer is the leader's.
    ended: list[EndedAttempt] = field(default_factory=list)

    def merge(self, other: Changes) -> Changes:
        self.jobs |= other.jobs
        self.chunks |= other.chunks
        self.nodes |= other.nodes
        self.readings |= other.readings
        self.contacts |= other.contacts
        self.removed |= other.removed
        self.refreshed |= other.refreshed
        self.assignments += other.assignments
        self.kills += other.kills
        self.discards += other.discards
        self.events += other.events
        self.notifications += other.notifications
        self.frames += other.frames
        self.timeout_updates += other.timeout_updates
        self.ended += other.ended
        return self

    def event(
        self, now: float, level: Level, text: str, job_id: str | None, actor: str | None
    ) -> None:
        self.events.append(EventView(time=now, level=level, text=text, job_id=job_id, actor=actor))

    def __bool__(self) -> bool:
        return bool(
            self.jobs
            or self.chunks
            or self.nodes
            or self.readings
            or self.contacts
            or self.removed
            or self.assignments
            or self.kills
            or self.discards
            or self.events
            or self.notifications
            or self.frames
            or self.timeout_updates
        )
