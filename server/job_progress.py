"""Which chunks of a job may run now, and the job state that follows from its chunks.

A job runs in stages: the pre-job script, then the scout chunks, then (once
an operator has un-held the job past its scouts) the other render chunks, then
the post-job script. ``Gates`` summarises a job in one pass so dispatch can
ask about every chunk cheaply.

Job states are partly chosen by operators and partly derived. ``paused``,
``holding`` and ``cancelled`` are sticky: they stay until an action lifts
them (a paused or holding job whose chunks have all finished still becomes
``done``). The rest is derived by ``derive_state``.
"""

from __future__ import annotations

from dataclasses import dataclass

from farmtui.protocol import JobState
from server.model import Chunk, Job

# Chunk states that wait for a slot.
PENDING = frozenset({"queued", "waiting-retry", "preempted"})
# Chunk states that count as finished for the job.
FINISHED = frozenset({"done", "excluded"})
# Chunk states that cannot run until an operator acts.
STUCK = frozenset({"failed", "cancelled", "held"})


@dataclass(slots=True)
class Gates:
    """One pass over a job's chunks: which stages are finished and which are stuck."""

    pre_done: bool = True
    pre_stuck: bool = False
    has_scouts: bool = False
    scouts_done: bool = True
    scouts_stuck: bool = False
    renders_done: bool = True
    renders_stuck: bool = False


def gates(job: Job) -> Gates:
    g = Gates()
    for chunk in job.chunks:
        finished = chunk.state in FINISHED
        stuck = chunk.state in STUCK
        if chunk.kind == "pre":
            g.pre_done &= finished
            g.pre_stuck |= stuck
        elif chunk.kind == "render":
            g.renders_done &= finished
            g.renders_stuck |= stuck
            if chunk.scout:
                g.has_scouts = True
                g.scouts_done &= finished
                g.scouts_stuck |= stuck
    return g


def gate_open(job: Job, g: Gates, chunk: Chunk) -> bool:
    """May this chunk be dispatched now, as far as the job's stages go?"""
    if chunk.kind == "pre":
        return True
    if not g.pre_done:
        return False
    if chunk.kind == "post":
        return g.renders_done
    if chunk.scout or not g.has_scouts:
        return True
    return g.scouts_done and job.scout_released


def gate_dead(g: Gates, chunk: Chunk) -> bool:
    """Can this chunk never run without an operator (a stage before it failed or is held)?"""
    if chunk.kind == "pre":
        return False
    if g.pre_stuck:
        return True
    if chunk.kind == "post":
        return g.renders_stuck
    return not chunk.scout and g.scouts_stuck


def waiting_at_scouts(job: Job, g: Gates) -> bool:
    """Scouts are done, the rest waits for an operator to un-hold the job."""
    if not g.has_scouts or not g.scouts_done or job.scout_released:
        return False
    return any(c.kind == "render" and not c.scout and c.state not in FINISHED for c in job.chunks)


def can_progress(job: Job, g: Gates) -> bool:
    """Is a chunk running, or could one still run without an operator?"""
    for chunk in job.chunks:
        if chunk.state == "assigned":
            return True
        if chunk.state in PENDING and not gate_dead(g, chunk):
            return True
    return False


def derive_state(job: Job) -> JobState:
    """The state a job's chunks call for, honouring the sticky operator states."""
    if all(c.state in FINISHED for c in job.chunks):
        return "done"
    if job.state in ("cancelled", "paused", "holding"):
        return job.state
    g = gates(job)
    if waiting_at_scouts(job, g):
        return "holding"
    if can_progress(job, g):
        running = job.started is not None or any(c.state == "assigned" for c in job.chunks)
        return "rendering" if running else "queued"
    if any(c.state == "failed" for c in job.chunks):
        return "failed"
    if any(c.state == "cancelled" for c in job.chunks):
        return "cancelled"
    # Only operator-held chunks are left: the job waits for them.
    return "rendering" if job.started is not None else "queued"
