"""Which chunks of a job may run now, and the job state that follows from its chunks.

A job runs in stages: the pre-job script, then the scout chunks, then (once
an operator has un-held the job past its scouts) the other render chunks, then
the post-job script. ``Gates`` summarises a job from its counters (``Tally``),
so neither dispatch nor a report ever walks the job's chunks.

Job states are partly chosen by operators and partly derived. ``paused``,
``holding`` and ``cancelled`` are sticky: they stay until an action lifts
them (a paused or holding job whose chunks have all finished still becomes
``done``). The rest is derived by ``derive_state``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from farmtui.protocol import JobState
from server.frame_states import PENDING, stage, tally_of
from server.model import Chunk, Job, Stage, Tally

__all__ = ["FINISHED", "PENDING", "STUCK", "Gates", "gate_open", "gates", "derive_state"]

# Chunk states that count as finished for the job.
FINISHED = frozenset({"done", "excluded"})
# Chunk states that cannot run until an operator acts.
STUCK = frozenset({"failed", "cancelled", "held"})

STAGES: tuple[Stage, ...] = ("pre", "scout", "render", "post")
_NO_STAGES: frozenset[Stage] = frozenset()


def count(tally: Tally, stages: Iterable[Stage], states: Iterable[str] | None = None) -> int:
    """Chunks of these stages in these states (all states when None)."""
    wanted = tuple(stages)
    picked = states if states is None or isinstance(states, frozenset) else frozenset(states)
    return sum(
        n
        for (where, state), n in tally.chunks.items()
        if where in wanted and (picked is None or state in picked)
    )


@dataclass(slots=True)
class Gates:
    """Which stages are finished and which are stuck, and the counts the job's state needs."""

    pre_done: bool = True
    pre_stuck: bool = False
    has_scouts: bool = False
    scouts_done: bool = True
    scouts_stuck: bool = False
    renders_done: bool = True
    renders_stuck: bool = False
    # Unfinished chunks: of every stage, and of the render stage after the scouts.
    left: int = 0
    renders_left: int = 0
    # Stages with chunks waiting for a slot.
    pending: frozenset[Stage] = frozenset()
    failed: int = 0
    cancelled: int = 0


def gates(job: Job) -> Gates:
    """The job's ``Gates``, from one pass over its counters, kept until they change.

    One pass, not a ``count`` per field: a job's state is derived again at
    every change to one of its chunks, twice or more for each chunk rendered.
    """
    tally = tally_of(job)
    version, cached = tally.derived
    if version == tally.version and isinstance(cached, Gates):
        return cached
    # Counts and flags in locals, not sets and dicts: derived again at every chunk
    # transition, twice for each chunk rendered.
    has_scouts = pre_stuck = scouts_stuck = renders_stuck = False
    pre_left = scouts_left = renders_left = left = failed = cancelled = 0
    pending: set[Stage] | frozenset[Stage] = _NO_STAGES
    for (where, state), n in tally.chunks.items():
        if not n:
            continue
        if where == "scout":
            has_scouts = True
        if state in FINISHED:
            continue
        left += n
        if where == "render":
            renders_left += n
        elif where == "scout":
            scouts_left += n
        elif where == "pre":
            pre_left += n
        if state in STUCK:
            if where == "pre":
                pre_stuck = True
            elif where == "scout":
                scouts_stuck = True
            elif where == "render":
                renders_stuck = True
            if state == "failed":
                failed += n
            elif state == "cancelled":
                cancelled += n
        elif state in PENDING and where not in pending:
            pending = pending | {where}
    g = Gates(
        pre_done=not pre_left,
        pre_stuck=pre_stuck,
        has_scouts=has_scouts,
        scouts_done=not scouts_left,
        scouts_stuck=scouts_stuck,
        renders_done=not scouts_left and not renders_left,
        renders_stuck=scouts_stuck or renders_stuck,
        left=left,
        renders_left=renders_left,
        pending=frozenset(pending),
        failed=failed,
        cancelled=cancelled,
    )
    tally.derived = (tally.version, g)
    return g


def stage_open(job: Job, g: Gates, where: Stage) -> bool:
    """May chunks of this stage be dispatched now, as far as the job's stages go?"""
    if where == "pre":
        return True
    if not g.pre_done:
        return False
    if where == "post":
        return g.renders_done
    if where == "scout" or not g.has_scouts:
        return True
    return g.scouts_done and job.scout_released


def gate_open(job: Job, g: Gates, chunk: Chunk) -> bool:
    """May this chunk be dispatched now, as far as the job's stages go?"""
    return stage_open(job, g, stage(chunk))


def stage_dead(g: Gates, where: Stage) -> bool:
    """Can chunks of this stage never run without an operator (a stage before failed or is held)?"""
    if where == "pre":
        return False
    if g.pre_stuck:
        return True
    if where == "post":
        return g.renders_stuck
    return where == "render" and g.scouts_stuck


def waiting_at_scouts(job: Job, g: Gates) -> bool:
    """Scouts are done, the rest waits for an operator to un-hold the job."""
    if not g.has_scouts or not g.scouts_done or job.scout_released:
        return False
    return g.renders_left > 0


def can_progress(job: Job, g: Gates) -> bool:
    """Is a chunk running, or could one still run without an operator?"""
    if tally_of(job).running:
        return True
    return any(not stage_dead(g, where) for where in g.pending)


def derive_state(job: Job) -> JobState:
    """The state a job's chunks call for, honouring the sticky operator states."""
    g = gates(job)
    if not g.left:
        return "done"
    if job.state in ("cancelled", "paused", "holding"):
        return job.state
    if waiting_at_scouts(job, g):
        return "holding"
    if can_progress(job, g):
        running = job.started is not None or bool(tally_of(job).running)
        return "rendering" if running else "queued"
    if g.failed:
        return "failed"
    if g.cancelled:
        return "cancelled"
    # Only operator-held chunks are left: the job waits for them.
    return "rendering" if job.started is not None else "queued"
