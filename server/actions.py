"""What operators do to jobs and chunks (pause, cancel, requeue, exclude ...).

Each function changes one job and records everything in ``Changes``; the
scheduler checks the ids first, so an action with an unknown id changes
nothing at all. Kills are emitted for in-flight chunks that must stop now
(cancel, delete, requeue, complete, and chunk actions on a running chunk);
pause is gentle and kills nothing.
"""

from __future__ import annotations

import math

from farmtui.protocol import ChunkAction, ChunkState, JobAction, is_operator_block
from server.job_progress import FINISHED, PENDING, gates
from server.model import Changes, Chunk, Job, Node
from server.prefetch import withdraw_waiting
from server.transitions import (
    discard_staged,
    holder_awaited,
    refresh_job,
    reset_for_rerun,
    set_chunk_state,
    set_job_state,
    take_off_node,
)


def _stop(
    job: Job, chunk: Chunk, nodes: dict[str, Node], changes: Changes, now: float, reason: str
) -> None:
    take_off_node(chunk, nodes, changes, now, "killed", reason, kill=True)


def stop_all(job: Job, nodes: dict[str, Node], changes: Changes, now: float, reason: str) -> int:
    """Kill every in-flight chunk of the job (leaving their states to the caller); how many."""
    stopped = 0
    for chunk in job.chunks.made():  # an untouched chunk is queued
        if chunk.state == "assigned":
            _stop(job, chunk, nodes, changes, now, reason)
            stopped += 1
    return stopped


def _rerun(
    job: Job, chunk: Chunk, nodes: dict[str, Node], changes: Changes, now: float, why: str
) -> None:
    _stop(job, chunk, nodes, changes, now, why)
    reset_for_rerun(job, chunk, changes)


def _lift_blocks(job: Job, changes: Changes, now: float, actor: str) -> None:
    """An operator asked for a rerun: nodes blocked for the job's errors may render it again.

    Otherwise a small farm whose every node failed the job would sit idle until
    the blocks expire, however often the operator retries. A block an operator
    asked for stays until it is lifted by name.
    """
    lifted = sorted(n for n, until in job.blocked.items() if not is_operator_block(until, now))
    if lifted:
        names = ", ".join(lifted)
        changes.event(now, "info", f"node block lifted for this job: {names}", job.id, actor)
    if lifted or job.node_errors:
        for name in lifted:
            del job.blocked[name]
        job.node_errors.clear()
        changes.jobs.add(job.id)


def _reopen(
    job: Job, changes: Changes, now: float, actor: str, *, cancelled_too: bool = False
) -> None:
    """Leave a sticky or final state so the job's chunks decide again.

    ``cancelled_too`` (resume): its cancelled chunks render again. Retrying failed
    chunks leaves them cancelled: a bulk "retry failed" over a selection restarted
    every cancelled job in it.
    """
    _lift_blocks(job, changes, now, actor)
    if job.state in ("cancelled", "done", "failed"):
        if cancelled_too:
            for chunk in job.chunks.made():
                if chunk.state == "cancelled":
                    reset_for_rerun(job, chunk, changes)
            if job.chunks.untouched == "cancelled":
                move_untouched(job, "queued", changes)
        set_job_state(job, "queued", changes, now, actor)  # said in the job's events
    refresh_job(job, changes, now, actor)


# What starts a job an operator stopped (``_stopped_by_operator``).
_UNDO = {"paused": "resume", "holding": "unhold"}


def _stopped_by_operator(job: Job) -> bool:
    """Paused, or held by someone (not the farm's own hold after a job's scout frames)."""
    return job.state == "paused" or (job.state == "holding" and job.state_by is not None)


def move_untouched(job: Job, state: ChunkState, changes: Changes) -> None:
    """Every chunk not made yet goes to ``state`` at once (cancel, complete, back to queued).

    A million-chunk job is cancelled without making a million chunks: the
    job's ``ChunkList`` holds the one state they share (stored in the job's
    row). The job's counters are then counted again from the chunks made, and
    a console watching the job gets it afresh.
    """
    chunks = job.chunks
    if chunks.untouched == state:
        return
    chunks.untouched = state
    job.tally = None  # counted again (O(chunks made)) when next asked for
    changes.jobs.add(job.id)
    changes.refreshed.add(job.id)


def _retry_failed(job: Job, changes: Changes) -> int:
    count = 0
    for chunk in job.chunks.made():
        if chunk.state == "failed":
            reset_for_rerun(job, chunk, changes)
            count += 1
    return count


def job_action(
    job: Job,
    action: JobAction,
    actor: str,
    now: float,
    nodes: dict[str, Node],
    changes: Changes,
    node_timeout: float,
) -> str:
    """Apply ``action`` to ``job``; the event text describing what happened.

    ``delete`` only kills the job's chunks here: the scheduler drops the record.
    """
    why = f"{action} by {actor}"
    state = job.state
    if action == "pause":
        if state in ("queued", "rendering"):
            set_job_state(job, "paused", changes, now, actor)
            withdraw_waiting(job, nodes, changes, f"not started: the job was paused by {actor}")
            return "paused: running chunks finish, nothing new starts"
        if state == "holding" and not job.paused_under_hold:
            job.paused_under_hold = True  # held, it renders nothing: the pause waits under it
            changes.jobs.add(job.id)
            return "paused under its hold: un-held, it stays paused"
        return f"pause: no effect (job is {state})"
    if action == "resume":
        if state == "paused":
            job.state = "queued"
            refresh_job(job, changes, now, actor)
            return "resumed"
        if state in ("cancelled", "failed"):
            count = _retry_failed(job, changes)
            _reopen(job, changes, now, actor, cancelled_too=True)
            return f"resumed ({count} failed chunks re-queued)"
        return f"resume: no effect (job is {state})"
    if action == "retry-failed":
        count = _retry_failed(job, changes)
        if count == 0 and state in ("cancelled", "done", "failed"):
            _lift_blocks(job, changes, now, actor)  # what it also does for a job rendering
            return f"retry failed: no failed chunk (job is {state})"
        _reopen(job, changes, now, actor)
        return f"retry failed: {count} chunks re-queued"
    if action == "retry-sync":
        # Chunks whose staged output a node kept after a failed copy go back to
        # that node to be copied again, without a render (see Scheduler.dispatch).
        count = copies = away = 0
        for chunk in job.chunks.made():
            unsynced = chunk.state == "done" and not set(chunk.frames) <= set(chunk.done)
            if chunk.state in ("failed", "waiting-retry") or unsynced:
                until = holder_awaited(chunk, nodes, node_timeout, now)
                copies += until == math.inf
                away += 0 < until < math.inf
                reset_for_rerun(job, chunk, changes)
                count += 1
        if count == 0 and state in ("cancelled", "done", "failed"):
            _lift_blocks(job, changes, now, actor)
            return f"retry sync: nothing to copy or retry (job is {state})"
        _reopen(job, changes, now, actor)
        offline = f", {away} wait for their offline node" if away else ""
        return f"retry sync: {count} chunks re-queued ({copies} copy their staged output{offline})"
    if action == "requeue":
        # An untouched chunk is already as a requeue leaves it.
        for chunk in job.chunks.made():
            if chunk.state != "excluded":
                _rerun(job, chunk, nodes, changes, now, why)
                discard_staged(chunk, changes)  # a requeue renders everything again
        move_untouched(job, "queued", changes)
        _lift_blocks(job, changes, now, actor)
        job.started = None
        if _stopped_by_operator(job):
            # A requeue resets the frames, not an operator's pause or hold: the job
            # renders again once resumed or un-held, as retry-failed leaves it.
            refresh_job(job, changes, now, actor)
            return f"re-queued the whole job; still {state} ({_UNDO[state]} starts it)"
        set_job_state(job, "queued", changes, now, actor)
        refresh_job(job, changes, now, actor)
        return "re-queued the whole job"
    if action == "cancel":
        if state in ("done", "cancelled"):
            return f"cancel: no effect (job is {state})"
        killed = stop_all(job, nodes, changes, now, why)
        for chunk in job.chunks.made():
            if chunk.state in PENDING or chunk.state in ("assigned", "held"):
                set_chunk_state(job, chunk, "cancelled", changes)
        if job.chunks.untouched in PENDING:
            move_untouched(job, "cancelled", changes)
        set_job_state(job, "cancelled", changes, now, actor)
        return f"cancelled ({killed} running chunks killed)"
    if action == "delete":
        killed = stop_all(job, nodes, changes, now, why)
        for chunk in job.chunks.made():
            discard_staged(chunk, changes)
        return f"deleted ({killed} running chunks killed)"
    if action == "hold":
        if state in ("queued", "rendering", "paused"):
            set_job_state(job, "holding", changes, now, actor)
            job.paused_under_hold = state == "paused"
            withdraw_waiting(job, nodes, changes, f"not started: the job was held by {actor}")
            return "held: nothing new starts until un-held"
        return f"hold: no effect (job is {state})"
    if action == "unhold":
        if state != "holding":
            return f"unhold: no effect (job is {state})"
        g = gates(job)
        if g.has_scouts and g.scouts_done:
            job.scout_released = True
        if job.paused_under_hold:  # held while paused: un-held, still paused
            set_job_state(job, "paused", changes, now, actor)
            return "un-held: still paused (resume starts it)"
        job.state = "queued"
        refresh_job(job, changes, now, actor)
        return "un-held"
    if action == "complete":
        killed = stop_all(job, nodes, changes, now, why)
        for chunk in job.chunks.made():
            discard_staged(chunk, changes)
            if chunk.state not in FINISHED:
                set_chunk_state(job, chunk, "done", changes)
        if job.chunks.untouched not in FINISHED:
            move_untouched(job, "done", changes)
        set_job_state(job, "done", changes, now, actor)
        return f"completed by hand ({killed} running chunks killed)"
    if action in ("archive", "unarchive"):
        job.archived = action == "archive"
        changes.jobs.add(job.id)
        return "archived" if job.archived else "unarchived"
    if action in ("review", "unreview"):
        job.reviewed = action == "review"
        changes.jobs.add(job.id)
        return "marked reviewed" if job.reviewed else "review mark removed"
    raise AssertionError(f"unhandled job action {action}")


def chunk_action(
    job: Job,
    chunks: list[Chunk],
    action: ChunkAction,
    actor: str,
    now: float,
    nodes: dict[str, Node],
    changes: Changes,
) -> str:
    """Apply ``action`` to some chunks of one job; the event text."""
    why = f"{action} by {actor}"
    ended = [chunk.index for chunk in chunks if chunk.state in FINISHED]
    for chunk in chunks:
        if action == "retry":
            _rerun(job, chunk, nodes, changes, now, why)
        elif action == "hold":
            if chunk.state in FINISHED:
                continue  # said in the event: a done chunk has nothing left to hold
            _stop(job, chunk, nodes, changes, now, why)
            set_chunk_state(job, chunk, "held", changes)
        elif action == "set-failed":
            _stop(job, chunk, nodes, changes, now, why)
            set_chunk_state(job, chunk, "failed", changes)
        elif action == "set-done":
            _stop(job, chunk, nodes, changes, now, why)
            discard_staged(chunk, changes)
            set_chunk_state(job, chunk, "done", changes, render_time=None)
        elif action == "exclude":
            _stop(job, chunk, nodes, changes, now, why)
            discard_staged(chunk, changes)
            set_chunk_state(job, chunk, "excluded", changes)
    if action == "retry":
        _lift_blocks(job, changes, now, actor)
    if action == "retry" and job.state in ("cancelled", "done", "failed"):
        job.state = "queued"
        job.finished = None
    refresh_job(job, changes, now, actor)
    text = f"{action} on chunks {', '.join(str(c.index) for c in chunks)}"
    if action == "hold" and ended:
        names = ", ".join(map(str, ended))
        text += f" (no effect on {names}: {'it has' if len(ended) == 1 else 'they have'} ended)"
    return text
