"""Per-frame states, derived from the chunk that holds each frame.

A frame has no state of its own: it is read off its chunk's state and the
chunk's ``staged``/``done`` sets. ``tracking`` wraps any change to a chunk and
records, in ``Changes.frames``, exactly the frames whose state moved, so the
consoles repaint those cells of their frame grids and nothing else.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from farmtui.protocol import FrameState
from server.model import Changes, Chunk, Job

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


def chunk_frame_states(chunk: Chunk) -> dict[int, FrameState]:
    """Frame number -> state for every frame of one chunk."""
    uniform = _UNIFORM.get(chunk.state)
    if uniform is not None:
        return dict.fromkeys(chunk.frames, uniform)
    # Assigned: each frame shows how far it got in the current attempt.
    states: dict[int, FrameState] = {}
    for frame in chunk.frames:
        if frame in chunk.done:
            states[frame] = "done"
        elif frame in chunk.staged:
            states[frame] = "staged"
        else:
            states[frame] = "assigned"
    return states


def job_frame_states(job: Job) -> dict[int, FrameState]:
    """Frame number -> state for every frame of a job, in chunk order."""
    states: dict[int, FrameState] = {}
    for chunk in job.chunks:
        states.update(chunk_frame_states(chunk))
    return states


@contextmanager
def tracking(changes: Changes, chunk: Chunk) -> Iterator[None]:
    """Record the chunk (and its job) as touched, plus every frame whose state changes inside."""
    before = chunk_frame_states(chunk)
    yield
    after = chunk_frame_states(chunk)
    moved: dict[FrameState, list[int]] = {}
    for frame, now_state in after.items():
        if before.get(frame) != now_state:
            moved.setdefault(now_state, []).append(frame)
    for new_state, frames in moved.items():
        changes.frames.append((chunk.job_id, frames, new_state))
    changes.chunks.add((chunk.job_id, chunk.index))
    changes.jobs.add(chunk.job_id)
