"""Per-frame states, derived from the chunk that holds each frame, and the job's counters.

A frame has no state of its own: it is read off its chunk's state and the
chunk's ``staged``/``done`` sets. ``tracking`` wraps any change to a chunk and
records, in ``Changes.frames``, exactly the frames whose state moved, so the
consoles repaint those cells of their frame grids and nothing else. It also
keeps the job's ``Tally`` (chunks and frames per state, running chunks, render
times, the chunks that wait for a slot) in step, so no event has to look at
the job's other chunks.
"""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import TracebackType

from farmtui.protocol import FrameState
from server.model import Changes, Chunk, ChunkLayout, ChunkList, Job, Segment, Stage, Tally

# Chunk states that wait for a slot.
PENDING = frozenset({"queued", "waiting-retry", "preempted"})

# Chunk states whose frames all show the same state.
_UNIFORM: dict[str, FrameState] = {
    "done": "done",
    "failed": "failed",
    "held": "held",
    "excluded": "excluded",
    # Nobody renders these frames now: grey until a node claims them.
    "queued": "unassigned",
    "waiting-retry": "unassigned",
    "preempted": "unassigned",
    "cancelled": "unassigned",
}


def stage(chunk: Chunk) -> Stage:
    """``pre``, ``scout``, ``render`` (the other render chunks) or ``post``."""
    if chunk.kind == "render":
        return "scout" if chunk.scout else "render"
    return chunk.kind


def chunk_frame_states(chunk: Chunk) -> dict[int, FrameState]:
    """Frame number -> state for every frame of one chunk."""
    uniform = _UNIFORM.get(chunk.state)
    if uniform is not None:
        return dict.fromkeys(chunk.frames, uniform)
    # Assigned: each frame shows how far it got in the current attempt.
    states: dict[int, FrameState] = {}
    done = set(chunk.done)
    for frame in chunk.frames:
        if frame in done:
            states[frame] = "done"
        elif frame in chunk.staged:
            states[frame] = "staged"
        else:
            states[frame] = "assigned"
    return states


def job_frame_states(job: Job) -> dict[int, FrameState]:
    """Frame number -> state for every frame of a job, in chunk order (a read: O(frames))."""
    states: dict[int, FrameState] = {}
    chunks = job.chunks
    untouched = _UNIFORM[chunks.untouched]
    for segment in chunks.layout.segments:
        for index in range(segment.first, segment.first + segment.count):
            if chunks.is_made(index):
                states.update(chunk_frame_states(chunks[index]))
            else:  # untouched: all in one state (queued: nobody renders them yet)
                states.update(dict.fromkeys(segment.frames_of(index), untouched))
    return states


def frame_counts(chunk: Chunk) -> Counter[str]:
    """Frame state -> frames of one chunk (O(1) unless the chunk is assigned)."""
    uniform = _UNIFORM.get(chunk.state)
    if uniform is not None:
        return Counter({uniform: len(chunk.frames)}) if chunk.frames else Counter()
    return Counter(chunk_frame_states(chunk).values())


def _timed(chunk: Chunk) -> float | None:
    """The render time a chunk adds to the job's sample (done render chunks only)."""
    if chunk.kind == "render" and chunk.state == "done":
        return chunk.render_time
    return None


def _count(tally: Tally, chunk: Chunk, frames: Mapping[str, int], sign: int) -> None:
    """Add (``sign`` 1) or take away (-1) one chunk's share of the job's counters."""
    _count_chunk(tally, chunk, sign)
    for state, count in frames.items():
        tally.frames[state] += sign * count


def _count_chunk(tally: Tally, chunk: Chunk, sign: int) -> None:
    """``_count`` but for the frames: the chunk itself, its state, its render time.

    ``stage`` and ``_timed`` written out: this runs twice at every chunk transition.
    """
    tally.version += 1
    if tally.run_block:
        tally.dirty_blocks.add(chunk.index // tally.run_block)
    state = chunk.state
    kind = chunk.kind
    where = ("scout" if chunk.scout else "render") if kind == "render" else kind
    key = (where, state)
    left = tally.chunks[key] + sign
    if left:
        tally.chunks[key] = left
    else:
        del tally.chunks[key]
    if state == "assigned":
        if sign > 0:
            tally.running.add(chunk.index)
        else:
            tally.running.discard(chunk.index)
    elif sign > 0 and state in PENDING:
        heapq.heappush(tally.ready, chunk.index)
    elif state == "done" and kind == "render" and chunk.render_time is not None:
        timed = chunk.render_time
        if sign > 0:
            tally.last_time = timed
            tally.times.add(timed)
        else:
            tally.times.remove(timed)
        tally.time_sum += sign * timed
        tally.timed_frames += sign * len(chunk.frames)
        if not tally.times:
            tally.time_sum = 0.0  # no drift left behind by the additions


def count_from_scratch(job: Job) -> Tally:
    """The job's counters computed from its chunks (start-up, and the tests' yardstick).

    One pass over the chunks made so far, written for speed: a restart counts
    every chunk of every job. The untouched ones are counted per segment of
    the layout: they are queued, their frames unassigned.
    """
    chunks: dict[tuple[Stage, str], int] = {}
    frames: dict[str, int] = {}
    tally = Tally()
    pending: list[int] = []  # made chunks that wait for a slot
    times: list[float] = []  # render times, sorted once at the end
    made = job.chunks.made()
    for segment in job.chunks.layout.segments:
        end = segment.first + segment.count
        touched = [c.index for c in made if segment.first <= c.index < end]
        untouched = segment.count - len(touched)
        if not untouched:
            continue
        state = job.chunks.untouched
        key = (segment.stage, state)
        chunks[key] = chunks.get(key, 0) + untouched
        shown = len(segment.frames) - sum(len(segment.frames_of(i)) for i in touched)
        if shown:
            frames[_UNIFORM[state]] = frames.get(_UNIFORM[state], 0) + shown
        if state not in PENDING:
            continue
        if touched:
            tally.ready.extend(i for i in range(segment.first, end) if not job.chunks.is_made(i))
        else:
            tally.ready.extend(range(segment.first, end))
    for chunk in made:
        state = chunk.state
        key = (
            ("scout" if chunk.scout else "render") if chunk.kind == "render" else chunk.kind,
            state,
        )
        chunks[key] = chunks.get(key, 0) + 1
        uniform = _UNIFORM.get(state)
        if uniform is None:
            tally.running.add(chunk.index)
            for frame_state, n in Counter(chunk_frame_states(chunk).values()).items():
                frames[frame_state] = frames.get(frame_state, 0) + n
        elif chunk.frames:
            frames[uniform] = frames.get(uniform, 0) + len(chunk.frames)
        if state in PENDING:
            pending.append(chunk.index)
        timed = _timed(chunk)
        if timed is not None:
            times.append(timed)
            tally.time_sum += timed
            tally.timed_frames += len(chunk.frames)
    tally.chunks.update(chunks)
    tally.frames.update({state: n for state, n in frames.items() if n})
    if pending:  # the untouched chunks' indices came in order: already a heap
        tally.ready.extend(pending)
        heapq.heapify(tally.ready)
    tally.times.update(times)
    return tally


def tally_of(job: Job) -> Tally:
    """The job's live counters, built from its chunks the first time they are asked for."""
    if job.tally is None:
        job.tally = count_from_scratch(job)
    return job.tally


def _one_state(chunk: Chunk) -> FrameState | None:
    """The state all of the chunk's frames share, or None when they differ (or may)."""
    uniform = _UNIFORM.get(chunk.state)
    if uniform is None and not chunk.done and not chunk.staged:
        return "assigned"  # assigned, nothing written yet: the common case
    return uniform


def uncount_uniform(job: Job, chunk: Chunk) -> FrameState | None:
    """The state all of the chunk's frames share, the chunk's share taken out of its
    job's counters; None, changing nothing, when its frames may differ or the
    counters are not built yet (``tracking`` is then the way)."""
    uniform = _one_state(chunk)
    tally = job.tally
    if uniform is None or tally is None:
        return None
    _count_chunk(tally, chunk, -1)
    if chunk.frames:
        tally.frames[uniform] -= len(chunk.frames)
    return uniform


def count_uniform(changes: Changes, job: Job, chunk: Chunk, was: FrameState) -> None:
    """After ``uncount_uniform`` said ``was`` and the chunk changed, its frames sharing
    one state still: the chunk counted again, and recorded as ``tracking`` does.

    The pair is ``tracking`` for ``set_chunk_state``'s common case, two transitions
    of every chunk rendered: the object, its ``with`` and its three calls were half
    of each (2.4 µs).
    """
    tally = job.tally
    assert tally is not None  # ``uncount_uniform`` found it
    now = _UNIFORM.get(chunk.state, "assigned")
    _count_chunk(tally, chunk, 1)
    frames = chunk.frames
    if frames:
        tally.frames[now] += len(frames)
        if now != was:
            changes.frames.append((chunk.job_id, list(frames), now))
    changes.chunks.add((chunk.job_id, chunk.index))
    changes.jobs.add(chunk.job_id)


class tracking:  # noqa: N801 - used as ``with tracking(...)``, like a function
    """Record the chunk (and its job) as touched, plus every frame whose state changes inside.

    A context manager of its own rather than ``@contextmanager``: it wraps every
    chunk transition, and in the common case (all of a chunk's frames in one
    state before and after) it builds no per-frame dict at all.
    """

    __slots__ = ("changes", "job", "chunk", "uniform", "before")

    def __init__(self, changes: Changes, job: Job, chunk: Chunk) -> None:
        self.changes = changes
        self.job = job
        self.chunk = chunk
        self.uniform: FrameState | None = None
        self.before: dict[int, FrameState] | None = None

    def __enter__(self) -> None:
        chunk = self.chunk
        uniform = self.uniform = _one_state(chunk)
        if uniform is None:
            self.before = chunk_frame_states(chunk)
        tally = self.job.tally
        if tally is not None:
            if uniform is not None:  # no dict of counts to build: one state, its frames
                _count_chunk(tally, chunk, -1)
                if chunk.frames:
                    tally.frames[uniform] -= len(chunk.frames)
            elif self.before is not None:
                _count(tally, chunk, Counter(self.before.values()), -1)

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        if kind is not None:
            return  # as before: a failed transition records nothing more
        chunk, changes = self.chunk, self.changes
        uniform = _one_state(chunk)
        tally = self.job.tally
        if uniform is not None and self.before is None:
            if tally is not None:
                _count_chunk(tally, chunk, 1)
                if chunk.frames:
                    tally.frames[uniform] += len(chunk.frames)
            if uniform != self.uniform and chunk.frames:
                changes.frames.append((chunk.job_id, list(chunk.frames), uniform))
        else:
            before: dict[int, FrameState] | None = self.before
            if before is None and self.uniform is not None:
                before = dict.fromkeys(chunk.frames, self.uniform)
            after = chunk_frame_states(chunk)
            if tally is not None:
                _count(tally, chunk, Counter(after.values()), 1)
            moved: dict[FrameState, list[int]] = {}
            for frame, now_state in after.items():
                if before is None or before.get(frame) != now_state:
                    moved.setdefault(now_state, []).append(frame)
            for new_state, frames in moved.items():
                changes.frames.append((chunk.job_id, frames, new_state))
        changes.chunks.add((chunk.job_id, chunk.index))
        changes.jobs.add(chunk.job_id)


# A job's frame runs stop here (``frame_runs``): a frame list so ragged that it
# needs more runs is summed up only in part, and reading it costs no more.
MAX_RUNS = 10_000
# Frames looked at one by one (a stretch of chunks not evenly spaced) at most.
MAX_FRAMES_LOOKED_AT = 200_000

Run = tuple[int, int, FrameState, int]  # first, last, state, step


# Chunks per block of the frame runs kept between reads: a read recomputes the
# blocks whose chunks changed since the last one, not the whole job. A job
# rendering 5,000 chunks a second, read every 2 s, changes a dozen blocks.
RUN_BLOCK = 1024


def frame_runs(job: Job) -> tuple[list[Run], bool]:
    """The job's frame states as runs of evenly spaced frames in one state, and
    whether they are complete (see ``MAX_RUNS``).

    A read for views; events never call it. Kept until a chunk changes, and
    then only the blocks of ``RUN_BLOCK`` chunks that changed are read again
    (``RunBlocks``): walking every chunk made so far held the leader's loop
    130-270 ms for a 100,000-chunk job being rendered, ~1 s at 400,000. A
    stretch of untouched chunks whose frames are evenly spaced is one run,
    read off the layout (a fresh million-frame job is one run).
    """
    tally = tally_of(job)
    version, cached = tally.runs
    if version == tally.version and cached is not None:
        return cached  # type: ignore[return-value]
    found = _frame_runs(job, tally)
    tally.runs = (tally.version, found)
    return found


@dataclass(slots=True)
class _Run:
    first: int
    last: int
    state: FrameState
    step: int


class _Runs:
    def __init__(self) -> None:
        self.runs: list[_Run] = []
        self.looked = 0

    @property
    def full(self) -> bool:
        return len(self.runs) > MAX_RUNS or self.looked > MAX_FRAMES_LOOKED_AT

    def add(self, first: int, last: int, step: int, state: FrameState) -> None:
        """Frames ``first``..``last``, ``step`` apart (one frame when first == last)."""
        if self.runs:
            run = self.runs[-1]
            gap = first - run.last
            if (
                run.state == state
                and gap
                and (run.first == run.last or gap == run.step)
                and (first == last or step == gap)
            ):
                run.last, run.step = last, gap
                return
        self.runs.append(_Run(first, last, state, step if first != last else 1))

    def add_frames(self, frames: Iterable[int], state: FrameState) -> None:
        for frame in frames:
            self.looked += 1
            self.add(frame, frame, 1, state)
            if self.full:
                return


@dataclass(frozen=True, slots=True)
class _Piece:
    """The runs of one segment's chunks within one block, as read."""

    runs: list[Run]
    looked: int
    complete: bool


class RunBlocks:
    """A job's frame runs block by block (``RUN_BLOCK`` chunks, split at segments).

    Valid for one layout and one state of the untouched chunks; a chunk's
    change marks its block (``Tally.dirty_blocks``, from ``_count``). Pieces
    are read in order as a read needs them: one that stops at ``MAX_RUNS``
    never makes the pieces after it.
    """

    __slots__ = ("layout", "untouched", "size", "pieces")

    def __init__(self, layout: ChunkLayout, untouched: str, size: int) -> None:
        self.layout = layout
        self.untouched = untouched
        self.size = size
        self.pieces: dict[tuple[int, int], _Piece] = {}

    def fits(self, chunks: ChunkList) -> bool:
        return (
            self.layout is chunks.layout
            and self.untouched == chunks.untouched
            and self.size == RUN_BLOCK
        )


def _frame_runs(job: Job, tally: Tally) -> tuple[list[Run], bool]:
    chunks = job.chunks
    blocks = tally.run_blocks
    if not isinstance(blocks, RunBlocks) or not blocks.fits(chunks):
        blocks = tally.run_blocks = RunBlocks(chunks.layout, chunks.untouched, RUN_BLOCK)
        tally.run_block = RUN_BLOCK
    else:
        numbers = range(len(chunks.layout.segments))
        for block in tally.dirty_blocks:
            for number in numbers:
                blocks.pieces.pop((number, block), None)
    tally.dirty_blocks.clear()
    size = blocks.size
    wanted = [
        (number, block)
        for number, segment in enumerate(chunks.layout.segments)
        if segment.count
        for block in range(segment.first // size, (segment.first + segment.count - 1) // size + 1)
    ]
    missing = sum(1 for key in wanted if key not in blocks.pieces)
    # Many pieces to read (the first read, a job-wide change): sort the made chunks
    # into blocks once rather than look up every index of every block.
    by_block: dict[int, list[int]] | None = None
    if missing * size > 4 * chunks.made_count():
        by_block = {}
        for index in chunks.made_indices():
            by_block.setdefault(index // size, []).append(index)
    runs = _Runs()
    complete = True
    segments = chunks.layout.segments
    for key in wanted:
        piece = blocks.pieces.get(key)
        if piece is None:
            number, block = key
            segment = segments[number]
            low = max(block * size, segment.first)
            high = min((block + 1) * size, segment.first + segment.count)
            if by_block is not None:
                made = [i for i in by_block.get(block, ()) if low <= i < high]
            else:
                made = [i for i in range(low, high) if chunks.is_made(i)]
            piece = blocks.pieces[key] = _read_piece(chunks, segment, low, high, made)
        for first, last, state, step in piece.runs:
            runs.add(first, last, step, state)
        runs.looked += piece.looked
        if not piece.complete or runs.full:
            complete = False
            break
    found = [(r.first, r.last, r.state, r.step) for r in runs.runs[: MAX_RUNS + 1]]
    return found, complete


def _read_piece(
    chunks: ChunkList, segment: Segment, low: int, high: int, made: list[int]
) -> _Piece:
    """The runs of chunks ``low`` up to ``high`` of ``segment``; ``made``: those made."""
    runs = _Runs()
    untouched = _UNIFORM[chunks.untouched]
    cursor = low
    found = runs.runs
    for stop in [*made, high]:
        if len(found) > MAX_RUNS or runs.looked > MAX_FRAMES_LOOKED_AT:
            break
        if stop > cursor:  # untouched chunks: all in one state
            frames = segment.frames_between(cursor, stop)
            if isinstance(frames, range) and frames:
                runs.add(frames[0], frames[-1], frames.step, untouched)
            else:
                runs.add_frames(frames, untouched)
        if stop == high:
            break
        chunk = chunks.look(stop)
        uniform = _UNIFORM.get(chunk.state)
        frame_list = chunk.frames
        step = frame_list[1] - frame_list[0] if len(frame_list) > 1 else 1
        if (
            uniform is not None
            and frame_list
            and (
                len(frame_list) < 3
                or frame_list == tuple(range(frame_list[0], frame_list[-1] + 1, step or 1))
            )
        ):
            runs.add(frame_list[0], frame_list[-1], step or 1, uniform)
        else:
            for frame, state in chunk_frame_states(chunk).items():
                runs.looked += 1
                runs.add(frame, frame, 1, state)
        cursor = stop + 1
    return _Piece(
        [(r.first, r.last, r.state, r.step) for r in runs.runs], runs.looked, not runs.full
    )
