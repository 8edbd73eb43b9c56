"""Frame-by-frame dependencies: frame N of a job waits for frame N of the jobs it is after.

A job submitted with ``--after sim:frames`` (``after_frames``) does not wait for
``sim`` as a whole: each of its chunks may start once every frame it needs
upstream is done, so a comp follows its renders frame by frame. With
``after_offset = (A, B)`` frame N needs upstream frames N+A .. N+B (a
temporal denoiser that reads its neighbours says ``-1:1``).

What "done" means upstream, and what is not waited for:

- An upstream frame is done when the chunk that renders it is done (or was
  excluded by an operator): a chunk's frames are delivered together, and a
  retry renders them all again, so a frame seen early could still be replaced.
- Upstream frames that the upstream job does not have are not waited for
  (``1-100`` after a ``1-50`` job: frames 51-100 may start at once).
- An upstream job that is done (by its renders, or completed by hand) frees
  every dependant. One that failed or was cancelled frees nothing: its
  dependants wait, and say on what, until an operator retries it, resumes it
  or completes it by hand. One that is deleted holds its dependants
  (``Scheduler.job_action``) so nobody renders on input that will never come
  unless an operator says so by un-holding them.

Cost: a chunk's upstream frames are the union of its frames' windows (a
window spans at most ``MAX_FRAME_WINDOW + 1`` frames), walked once in order,
consecutive frames of one upstream chunk looked up once. A chunk that must
wait is parked on the upstream chunk it waits for, out of its job's queue,
with the frame it stopped at: it is looked at again only when that chunk is
done or its job ends, and then from that frame on, so over its whole wait a
chunk walks its upstream frames about once. A frame seen done is not checked
again while the chunk waits. The dispatch pass parks at most ``PARK_BUDGET``
chunks and leaves the rest for its next pass, so a job of a million frames
waiting on another never holds the loop.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import NamedTuple

from server.model import Changes, Chunk, Job

# (job id, chunk index)
ChunkKey = tuple[str, int]

# Upstream chunk states that satisfy a frame dependency.
SATISFIED: frozenset[str] = frozenset({"done", "excluded"})
# Chunks one dispatch pass may park; the rest wait for the next pass.
PARK_BUDGET = 256


class Blocked(NamedTuple):
    """What a chunk waits for: an upstream chunk, and where to look again from."""

    upstream: ChunkKey
    # (index in ``job.spec.after``, upstream frame): everything before it was done.
    resume: tuple[int, int]


def windows(frames: Sequence[int], start: int, end: int) -> list[range]:
    """The upstream frames a chunk needs, as sorted disjoint ranges."""
    if len(frames) == 1:
        (frame,) = frames
        return [range(frame + start, frame + end + 1)]
    merged: list[list[int]] = []
    for frame in sorted(frames):
        low, high = frame + start, frame + end + 1
        if merged and low <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], high)
        else:
            merged.append([low, high])
    return [range(low, high) for low, high in merged]


def blocker(
    job: Job, chunk: Chunk, jobs: Mapping[str, Job], resume: tuple[int, int] | None = None
) -> Blocked | None:
    """The first upstream chunk the chunk still waits for, or None when it may start.

    ``resume``: where an earlier check of this chunk stopped (frames before it were done).
    """
    start, end = job.spec.after_offset
    needed = windows(chunk.frames, start, end)
    first_dep, first_frame = resume if resume is not None else (0, -(2**63))
    for number, dep_id in enumerate(job.spec.after):
        if number < first_dep:
            continue
        dep = jobs.get(dep_id)
        if dep is None or dep.state == "done":
            continue
        layout = dep.chunks.layout
        checked = -1
        for span in needed:
            for wanted in span:
                if number == first_dep and wanted < first_frame:
                    continue
                index = layout.chunk_of(wanted)
                if index is None or index == checked:
                    continue
                if _state(dep, index) not in SATISFIED:
                    return Blocked((dep_id, index), (number, wanted))
                checked = index
    return None


def _state(job: Job, index: int) -> str:
    chunks = job.chunks
    return chunks[index].state if chunks.is_made(index) else chunks.untouched


class FrameWaits:
    """The chunks parked until an upstream chunk is done."""

    def __init__(self) -> None:
        # Where each parked chunk stopped looking (kept until it is checked again).
        self.resume: dict[ChunkKey, tuple[int, int]] = {}
        self._parked: dict[ChunkKey, list[ChunkKey]] = {}
        # Upstream job -> its chunks that have dependants parked on them.
        self._upstream: dict[str, set[int]] = {}
        # Dependant job -> its parked chunks and what each waits for (for reasons).
        self.waiting: dict[str, dict[int, ChunkKey]] = {}

    def park(self, job_id: str, index: int, blocked: Blocked) -> None:
        upstream = blocked.upstream
        self._parked.setdefault(upstream, []).append((job_id, index))
        self._upstream.setdefault(upstream[0], set()).add(upstream[1])
        self.waiting.setdefault(job_id, {})[index] = upstream
        self.resume[(job_id, index)] = blocked.resume

    def clear(self) -> None:
        self.resume.clear()
        self._parked.clear()
        self._upstream.clear()
        self.waiting.clear()

    def released(self, changes: Changes, jobs: Mapping[str, Job]) -> list[ChunkKey]:
        """The parked chunks ``changes`` frees: their upstream chunk is done, or its job ended."""
        if not self._parked:
            return []
        freed: list[ChunkKey] = []
        for job_id in changes.jobs | changes.removed:
            if job_id in self._upstream:
                job = jobs.get(job_id)
                if job is None or job.state == "done":
                    for index in self._upstream.pop(job_id):
                        freed += self._parked.pop((job_id, index), [])
            if job_id in changes.removed:
                for index in self.waiting.pop(job_id, None) or {}:
                    self.resume.pop((job_id, index), None)
        for key in changes.chunks:
            if key in self._parked:
                job = jobs.get(key[0])
                if job is None or _state(job, key[1]) in SATISFIED:
                    freed += self._parked.pop(key)
                    indices = self._upstream.get(key[0])
                    if indices is not None:
                        indices.discard(key[1])
                        if not indices:
                            del self._upstream[key[0]]
        for job_id, index in freed:
            waits = self.waiting.get(job_id)
            if waits is not None:
                waits.pop(index, None)
                if not waits:
                    del self.waiting[job_id]
        return freed
