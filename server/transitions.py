"""The few ways a chunk or a job changes state, each recording what it touched.

The scheduler's event handlers and the operators' actions both go through
these, so a kill always frees the node's slot, a state change always reaches
``Changes`` with its frame-grid updates, and a job entering ``done`` or
``failed`` always tells its owner.
"""

from __future__ import annotations

from farmtui.protocol import ChunkState, JobState, Level
from server.frame_states import tracking
from server.job_progress import derive_state
from server.model import Changes, Chunk, Job, Kill, Node, Notification

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
) -> None:
    """Close the chunk's current attempt record (if it is still open)."""
    if chunk.attempts and chunk.attempts[-1].number == chunk.attempt:
        attempt = chunk.attempts[-1]
        if attempt.finished is None:
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


def take_off_node(
    chunk: Chunk,
    nodes: dict[str, Node],
    changes: Changes,
    now: float,
    outcome: str,
    reason: str,
    kill: bool,
) -> None:
    """End an assigned chunk's attempt and free its slot; with ``kill`` tell the node to stop it.

    The caller sets the chunk's next state.
    """
    if chunk.state != "assigned":
        return
    if kill and chunk.node is not None:
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
    release(nodes, chunk, changes)
    chunk.finished = now


def set_chunk_state(chunk: Chunk, state: ChunkState, changes: Changes) -> None:
    with tracking(changes, chunk):
        chunk.state = state
        if state != "assigned":
            chunk.node = None
        if state != "waiting-retry":
            chunk.retry_at = None
        if state == "done":
            chunk.done = set(chunk.frames)


def reset_for_rerun(chunk: Chunk, changes: Changes) -> None:
    """Queue a chunk afresh: a full set of retries, no partial output, no render time.

    The attempt history and the attempt number stay: numbers only grow.
    """
    with tracking(changes, chunk):
        chunk.state = "queued"
        chunk.node = None
        chunk.errors = 0
        chunk.retry_at = None
        chunk.render_time = None
        chunk.started = None
        chunk.finished = None
        chunk.staged = set()
        chunk.done = set()


def set_job_state(
    job: Job, state: JobState, changes: Changes, now: float, actor: str | None
) -> None:
    """Enter a job state, logging it and telling the owner when it matters."""
    changes.jobs.add(job.id)
    old = job.state
    if state == old:
        return
    job.state = state
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
        failed = [c.index for c in job.chunks if c.state == "failed"]
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
