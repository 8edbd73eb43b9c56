"""The yardstick for the scheduler's incremental bookkeeping: recompute it from scratch."""

from __future__ import annotations

import math

from server import dispatch_order
from server.estimates import eligible_slots
from server.frame_states import (
    PENDING,
    count_from_scratch,
    frame_runs,
    job_frame_states,
    tally_of,
)
from server.job_progress import FINISHED, STAGES, STUCK, Gates, count, gates
from server.model import Stage, Tally
from server.prefetch import takes_ahead
from server.scheduler import Scheduler


def check_counters(scheduler: Scheduler) -> None:
    """Every job's live counters, frame runs and the dispatch index equal a recomputation."""
    for job in scheduler.jobs.values():
        if job.tally is None:
            continue
        live, fresh = job.tally, count_from_scratch(job)
        assert +live.chunks == +fresh.chunks, (
            f"{job.id}: chunk counts {live.chunks} != {fresh.chunks}"
        )
        assert +live.frames == +fresh.frames, (
            f"{job.id}: frame counts {live.frames} != {fresh.frames}"
        )
        assert live.running == fresh.running, f"{job.id}: running {live.running} != {fresh.running}"
        assert live.times == fresh.times, f"{job.id}: render times"
        assert live.timed_frames == fresh.timed_frames
        assert math.isclose(live.time_sum, fresh.time_sum, rel_tol=1e-9, abs_tol=1e-6)
        # Every chunk that waits for a slot can be found by dispatch.
        queued = set(live.ready) | {index for _, index in live.retry}
        # ``looks``: the yardstick must not make the chunks the job has not touched.
        waiting = {c.index for c in job.chunks.looks() if c.state in PENDING}
        assert waiting <= queued, f"{job.id}: chunks {waiting - queued} lost from the ready queue"
        # Frame runs, expanded, are the per-frame states.
        runs, complete = frame_runs(job)
        assert complete
        expanded = {
            frame: state
            for first, last, state, step in runs
            for frame in range(first, last + (1 if step > 0 else -1), step)
        }
        assert expanded == job_frame_states(job)
        # The gates, read in one pass over the live counters, say what counting each says.
        assert gates(job) == gates_by_counting(fresh), f"{job.id}: gates"
    # The slot census says what a walk over the nodes says.
    for job in scheduler.jobs.values():
        census = scheduler._census.eligible(job)
        assert census == eligible_slots(job, scheduler.nodes.values()), f"{job.id}: slots"
    # The dispatch index holds exactly the jobs that may dispatch, in dispatch order.
    expected = [
        dispatch_order.dispatch_key(job)
        for job in dispatch_order.in_dispatch_order(scheduler.jobs.values())
        if job.state in ("queued", "rendering")
        and any(c.state in PENDING for c in job.chunks.looks())
    ]
    assert scheduler.dispatch_index() == expected
    # Those whose chunks may wait ahead of a slot are the short-chunk ones among them. A
    # job none of whose chunks is done goes by its kind, looked up when the dispatch pass
    # comes to it: filed ahead as its kind was when the job last changed.
    timed = [key for key in scheduler._ahead if tally_of(scheduler.jobs[key[2]]).times]
    assert timed == [
        key
        for key in expected
        if tally_of(scheduler.jobs[key[2]]).times and takes_ahead(scheduler.jobs[key[2]])
    ]
    assert set(scheduler._ahead) <= set(expected)


def gates_by_counting(tally: Tally) -> Gates:
    """A job's ``Gates`` with one ``count`` per field, the way they were first written."""

    def left(stages: tuple[Stage, ...]) -> int:
        return count(tally, stages) - count(tally, stages, FINISHED)

    return Gates(
        pre_done=left(("pre",)) == 0,
        pre_stuck=count(tally, ("pre",), STUCK) > 0,
        has_scouts=count(tally, ("scout",)) > 0,
        scouts_done=left(("scout",)) == 0,
        scouts_stuck=count(tally, ("scout",), STUCK) > 0,
        renders_done=left(("scout", "render")) == 0,
        renders_stuck=count(tally, ("scout", "render"), STUCK) > 0,
        left=left(STAGES),
        renders_left=left(("render",)),
        pending=frozenset(s for s in STAGES if count(tally, (s,), PENDING) > 0),
        failed=count(tally, STAGES, ("failed",)),
        cancelled=count(tally, STAGES, ("cancelled",)),
    )
