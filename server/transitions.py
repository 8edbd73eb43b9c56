"""The few ways a chunk or a job changes state, each recording what it touched.

The scheduler's event handlers and the operators' actions both go through
these, so a kill always frees the node's slot, a state change always reaches
``Changes`` with its frame-grid updates, and a job entering ``done`` or
``failed`` always tells its owner.
"""

from __future__ import annotations

import math

from farmtui.protocol import ChunkState, JobState, Level
from server.frame_states import count_uniform, tracking, uncount_uniform
from server.job_progress import derive_state
from server.model import (
    NO_FRAMES,
    Changes,
    Chunk,
    Discard,
    EndedAttempt,
    Job,
    Kill,
    Node,
    Notification,
)

# Job states an operator sets and only an operator lifts.
STICKY: frozenset[str] = frozenset({"paused", "holding", "cancelled"})

_LEVELS: dict[str, Level] = {"failed": "error", "cancelled": "warn"}


def job_name(job: Job) -> str:
    return job.spec.name or job.id


def end_attempt(
    chunk: Chunk,
    now: float,
    outcome: str,
    reason: str | None = None,
    exit_status: str | None = None,
    ran: float | None = None,
) -> None:
    """Close the chunk's current attempt record (if it is still open).

    ``ran``: how long its renderer ran, by the node's clock (``ran_for``). The
    attempt then began that long before ``now``, not at its hand-out: a chunk
    held ahead of a slot (``server.prefetch``) waited there before it started,
    and two handed out in one pass showed one start. Never before the hand-out.
    """
    if chunk.attempts and chunk.attempts[-1].number == chunk.attempt:
        attempt = chunk.attempts[-1]
        if attempt.finished is None:
            if ran is not None:
                attempt.started = min(now, max(attempt.started, now - ran))
            attempt.finished = now
            attempt.outcome = outcome
            attempt.reason = reason or None
            attempt.exit_status = exit_status


def release(nodes: dict[str, Node], chunk: Chunk, changes: Changes) -> None:
    """Free the slot the chunk's current attempt holds on its node."""
    if chunk.node is None:
        return
    node = nodes.get(chunk.node)
    if node is not None:
        node.running.discard((chunk.job_id, chunk.index, chunk.attempt))
        changes.nodes.add(node.name)


def note_ended(chunk: Chunk, changes: Changes) -> None:
    """The leader ended ``chunk``'s attempt, not a report: its log's footer says so."""
    record = chunk.attempts[-1] if chunk.attempts else None
    if record is None or record.number != chunk.attempt or chunk.node is None:
        return
    changes.ended.append(
        EndedAttempt(
            chunk.job_id,
            chunk.index,
            chunk.attempt,
            chunk.node,
            record.started,
            record.outcome,
            record.reason or "",
        )
    )


def take_off_node(
    chunk: Chunk,
    nodes: dict[str, Node],
    changes: Changes,
    now: float,
    outcome: str,
    reason: str,
    kill: bool,
    *,
    lost: bool = False,
) -> None:
    """End an assigned chunk's attempt; the caller sets the chunk's next state.

    - ``kill``: tell the node to stop the tree. The attempt keeps its slot and
      fences the chunk (``stopping_node``) until the node confirms the tree is
      gone (``settle_stopped``) or the node is lost.
    - ``lost``: the node is lost and its lease has certainly expired, so its
      supervisor has killed the tree: the slot is free (a kill still goes out,
      in case its link is half alive).
    - neither: the node reported the attempt over, so the slot is free.
    """
    if chunk.state != "assigned":
        return
    if (kill or lost) and chunk.node is not None:
        changes.kills.append(
            Kill(
                node=chunk.node,
                job_id=chunk.job_id,
                chunk=chunk.index,
                attempt=chunk.attempt,
                reason=reason,
            )
        )
    end_attempt(chunk, now, outcome, reason)
    if kill and chunk.node is not None:  # its agent's report of the kill is stale then
        note_ended(chunk, changes)
    if kill and not lost and chunk.node is not None:
        chunk.stopping_node = chunk.node
        chunk.stopping_attempt = chunk.attempt
        changes.chunks.add((chunk.job_id, chunk.index))
    else:
        release(nodes, chunk, changes)
    chunk.finished = now


def settle_stopped(
    node: Node, key: tuple[str, int, int], chunk: Chunk | None, changes: Changes
) -> bool:
    """An attempt that held a slot on ``node`` is gone: free the slot and lift the fence.

    True when the key held a slot there.
    """
    held = key in node.running
    node.running.discard(key)
    if held:
        changes.nodes.add(node.name)
    if chunk is not None and chunk.stopping_node == node.name and chunk.stopping_attempt == key[2]:
        chunk.stopping_node = None
        chunk.stopping_attempt = 0
        changes.chunks.add((chunk.job_id, chunk.index))
    return held


def holder_awaited(chunk: Chunk, nodes: dict[str, Node], node_timeout: float, now: float) -> float:
    """Until when the chunk waits for the node holding its staged output to copy it
    again (infinity: online); 0: not at all, it is rendered again elsewhere.

    An offline holder is waited for until it would be judged lost (``node_timeout``
    of silence): a link that dropped for a moment, and every node right after a
    leader restart (offline until its hello), still holds the output. Before, the
    first dispatch pass after a restart rendered such chunks again elsewhere and
    had the holder delete what it kept.
    """
    holder = nodes.get(chunk.staged_on or "")
    if holder is None or not holder.enabled:
        return 0.0
    if holder.online:
        return math.inf
    until = holder.last_seen + node_timeout
    return until if until > now else 0.0


def discard_staged(chunk: Chunk, changes: Changes) -> None:
    """Nobody will copy the staged output a node kept for the chunk: tell it to delete it."""
    if chunk.staged_on is None:
        return
    changes.discards.append(
        Discard(
            node=chunk.staged_on,
            job_id=chunk.job_id,
            chunk=chunk.index,
            attempt=chunk.staged_attempt,
        )
    )
    chunk.staged_on = None
    chunk.staged_attempt = 0
    changes.chunks.add((chunk.job_id, chunk.index))


class _Keep:
    """``set_chunk_state`` leaves the render time as it is."""


KEEP = _Keep()


def set_chunk_state(
    job: Job,
    chunk: Chunk,
    state: ChunkState,
    changes: Changes,
    render_time: float | None | _Keep = KEEP,
) -> None:
    # Its frames in one state after as before (an assigned chunk with nothing written:
    # all but a rare case) are counted without a ``tracking``.
    mixed_after = state == "assigned" and bool(chunk.done or chunk.staged)
    was = None if mixed_after else uncount_uniform(job, chunk)
    if was is None:
        with tracking(changes, job, chunk):
            _enter_state(chunk, state, render_time)
    else:
        _enter_state(chunk, state, render_time)
        count_uniform(changes, job, chunk, was)


def _enter_state(chunk: Chunk, state: ChunkState, render_time: float | None | _Keep) -> None:
    chunk.state = state
    if not isinstance(render_time, _Keep):
        chunk.render_time = render_time
    if state != "assigned":
        chunk.node = None
    if state != "waiting-retry":
        chunk.retry_at = None
    if state == "done":
        chunk.done = chunk.frames


def reset_for_rerun(job: Job, chunk: Chunk, changes: Changes) -> None:
    """Queue a chunk afresh: a full set of retries, no partial output, no render time.

    The attempt history and the attempt number stay: numbers only grow.
    """
    with tracking(changes, job, chunk):
        chunk.state = "queued"
        chunk.node = None
        chunk.errors = 0
        chunk.retry_at = None
        chunk.render_time = None
        chunk.started = None
        chunk.finished = None
        chunk.staged = NO_FRAMES
        chunk.done = ()


def set_job_state(
    job: Job, state: JobState, changes: Changes, now: float, actor: str | None
) -> None:
    """Enter a job state, logging it and telling the owner when it matters."""
    changes.jobs.add(job.id)
    old = job.state
    if state == old:
        return
    job.state = state
    job.state_by = actor
    if state != "holding":
        job.paused_under_hold = False  # only a hold of a paused job keeps the pause
    if state in ("done", "failed", "cancelled"):
        job.finished = now
    else:
        job.finished = None
    changes.event(now, _LEVELS.get(state, "info"), f"job {old} -> {state}", job.id, actor)
    name = job_name(job)
    if state == "done":
        changes.notifications.append(
            Notification(job_id=job.id, kind="done", text=f"job {name} is done")
        )
    elif state == "failed":
        failed = [c.index for c in job.chunks.made() if c.state == "failed"]
        changes.notifications.append(
            Notification(
                job_id=job.id,
                kind="failed",
                text=f"job {name} failed (chunks {', '.join(map(str, failed))})",
            )
        )


def refresh_job(job: Job, changes: Changes, now: float, actor: str | None = None) -> None:
    """Move the job to the state its chunks call for (scout-ready included)."""
    state = derive_state(job)
    if state == job.state:
        changes.jobs.add(job.id)
        return
    scouts_ready = state == "holding"
    set_job_state(job, state, changes, now, actor)
    if scouts_ready:
        changes.notifications.append(
            Notification(
                job_id=job.id,
                kind="scout-ready",
                text=f"scout frames of job {job_name(job)} are done; un-hold it to render the rest",
            )
        )
