"""What a finished attempt means for its chunk: success, an error to retry, or the farm's fault.

- Success marks the chunk done and records its render time; the first time
  the job's auto timeout becomes known, running chunks get their new limit.
- An error (a failure, or a timeout with on_timeout ``error``/``fail``) counts
  against the chunk's retries and the node's standing with the job: the chunk
  backs off exponentially, or fails when out of retries.
- A preemption (node lost, leader restart, lease lost) requeues the chunk
  without counting anything.
"""

from __future__ import annotations

from farmtui.protocol import ChunkFinished, UpdateTimeouts
from server.frame_states import tally_of
from server.model import Changes, Chunk, Job, Node
from server.prefetch import withdraw_waiting
from server.retries import note_node_error, retry_policy
from server.scheduler_config import SchedulerConfig
from server.timeouts import auto_max_render, chunk_timeouts, describe_auto
from server.transitions import (
    end_attempt,
    note_ended,
    release,
    set_chunk_state,
    take_off_node,
)


def ran_for(report: ChunkFinished) -> float | None:
    """How long the attempt's renderer ran, by the node's clock (None: the report lacks it)."""
    if report.started > 0 and report.finished >= report.started:
        return report.finished - report.started
    return None


def succeed(
    job: Job,
    chunk: Chunk,
    report: ChunkFinished,
    outcome: str,
    nodes: dict[str, Node],
    config: SchedulerConfig,
    changes: Changes,
    now: float,
) -> None:
    """The chunk is done (``outcome`` "timeout" for on_timeout=complete)."""
    auto_known = auto_max_render(job, chunk, config) is not None
    attempt = chunk.attempts[-1]
    ran = ran_for(report)
    render_time = now - attempt.started if ran is None else ran
    end_attempt(chunk, now, outcome, report.reason, report.exit_status, ran)
    release(nodes, chunk, changes)
    chunk.finished = now
    kept = render_time if chunk.kind == "render" else None
    set_chunk_state(job, chunk, "done", changes, render_time=kept)
    changes.event(
        now,
        "info",
        f"chunk {chunk.index} attempt {chunk.attempt} {outcome} in {render_time:.1f}s",
        job.id,
        None,
    )
    if not auto_known and chunk.kind == "render":
        note = describe_auto(job, chunk, config)
        if note is not None:
            changes.event(now, "info", note, job.id, None)
            push_auto_timeouts(job, config, changes)


def push_auto_timeouts(job: Job, config: SchedulerConfig, changes: Changes) -> None:
    """The auto timeout just became known: send the new limits to the job's running chunks."""
    push_timeouts(job, config, changes, auto=True)


def push_timeouts(job: Job, config: SchedulerConfig, changes: Changes, auto: bool = False) -> None:
    """Send the job's running chunks (those waiting on their nodes too) their limits as
    they are now: an operator changed them, or (``auto``) the auto timeout became known,
    which only render chunks have."""
    for index in sorted(tally_of(job).running):
        other = job.chunks[index]
        if other.state != "assigned" or other.node is None:
            continue
        if auto and (other.kind != "render" or auto_max_render(job, other, config) is None):
            continue
        message = UpdateTimeouts(
            job_id=job.id,
            chunk=other.index,
            attempt=other.attempt,
            timeouts=chunk_timeouts(job, other, config),
        )
        changes.timeout_updates.append((other.node, message))


def fail(
    job: Job,
    chunk: Chunk,
    node: str,
    report: ChunkFinished,
    outcome: str,
    fatal: bool,
    nodes: dict[str, Node],
    config: SchedulerConfig,
    changes: Changes,
    now: float,
) -> None:
    """Count an error: back off and retry, or fail the chunk (``fatal``: no retry).

    Also counts against the node: enough errors block it for this job.
    """
    reason = report.reason or f"exit status {report.exit_status}"
    if report.kept_staged:
        # Rendered, but the copy to the sync root failed: retry sync copies it from there.
        chunk.staged_on = node
        chunk.staged_attempt = chunk.attempt
    end_attempt(chunk, now, outcome, reason, report.exit_status, ran_for(report))
    take_off_node(chunk, nodes, changes, now, outcome, reason, kill=False)
    chunk.errors += 1
    blocked = note_node_error(job, node, config, now)
    if blocked:
        changes.event(
            now,
            "warn",
            f"node {node} blocked for this job for {config.block_for:.0f}s "
            f"after {config.block_after} errors",
            job.id,
            None,
        )
    policy = retry_policy(job, config)
    label = f"chunk {chunk.index} attempt {chunk.attempt} {outcome} on {node}: {reason}"
    if fatal or chunk.errors > policy.retries:
        set_chunk_state(job, chunk, "failed", changes)
        tail = "no retry" if fatal else f"out of retries ({policy.retries})"
        changes.event(now, "error", f"{label}; {tail}", job.id, None)
    else:
        delay = policy.backoff(chunk.errors)
        set_chunk_state(job, chunk, "waiting-retry", changes)
        chunk.retry_at = now + delay
        changes.event(
            now,
            "warn",
            f"{label}; retry {chunk.errors} of {policy.retries} in {delay:.0f}s",
            job.id,
            None,
        )
    if blocked:  # what waits there for a slot would fail once more
        why = f"not started: node {node} is blocked for this job"
        withdraw_waiting(job, nodes, changes, why, only=node)


def preempt(
    job: Job,
    chunk: Chunk,
    nodes: dict[str, Node],
    changes: Changes,
    now: float,
    outcome: str,
    reason: str,
    lost: bool = False,
    *,
    reported: bool = False,
) -> None:
    """The farm took the chunk away (node lost, restart): requeue it, no retry used.

    ``lost``: the node is lost and its lease expired; it is also told to stop
    the chunk, in case it is still there. ``reported``: its agent said so (its report
    ends the attempt's log), not the leader.
    """
    take_off_node(chunk, nodes, changes, now, outcome, reason, kill=False, lost=lost)
    if not reported:
        note_ended(chunk, changes)
    attempt = chunk.attempt
    set_chunk_state(job, chunk, "preempted", changes)
    changes.event(
        now, "warn", f"chunk {chunk.index} attempt {attempt} preempted: {reason}", job.id, None
    )


def requeue_after_timeout(
    job: Job,
    chunk: Chunk,
    report: ChunkFinished,
    nodes: dict[str, Node],
    changes: Changes,
    now: float,
) -> None:
    """on_timeout=requeue: run it again, no error counted."""
    end_attempt(chunk, now, "timeout", report.reason, report.exit_status, ran_for(report))
    take_off_node(chunk, nodes, changes, now, "timeout", report.reason, kill=False)
    set_chunk_state(job, chunk, "queued", changes)
