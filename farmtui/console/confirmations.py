"""Which actions ask first, and what each costs, said before it is sent.

Requeue renders done frames again; Complete and a chunk's Set done call frames
done that were never rendered; Set failed and Exclude throw away frames done
or rendering; Cancel and Delete kill what runs; quitting a ``farm up`` console
stops the whole local farm. Each asks first (``screens/confirm.py``) with a
line in the operator's terms: frames, chunks and farm time, as in "Requeue
re-renders 412 done frames ≈ 1 h 20 of farm time". Farm time is frames × the
job's mean render time per frame (the leader's mean chunk time over the chunk
size); while the job has no measured render time it is "unknown time".

Actions missing from ``JOB_ACTION_COSTS`` and ``CHUNK_ACTION_COSTS`` are cheap
and undoable (pause, resume, retry failed, hold ...): one key, no question. A
chunk's Retry and Hold ask only when they touch work: done frames rendered
again, running chunks killed.
Pure: no textual.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from farmtui.console.actions import CHUNK_ACTION_BY_NAME, JOB_ACTION_BY_NAME
from farmtui.frames import format_frames
from farmtui.protocol import ChunkAction, ChunkView, JobAction, JobView, NodeView


@dataclass(frozen=True)
class Confirmation:
    """What the confirmation dialog shows."""

    question: str
    # What the action touches, one line each (job names: someone else's text).
    items: list[str]
    cost: str
    # The confirming button's label.
    verb: str


# -- wording -------------------------------------------------------------------------


def about(seconds: float) -> str:
    """``4800`` -> ``1 h 20``: an amount of time as said aloud, to the minute."""
    if seconds < 60:
        return f"{max(round(seconds), 1)} s"
    minutes = round(seconds / 60)
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours} h {minutes:02d}" if minutes else f"{hours} h"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h" if hours else f"{days} d"


def count(n: int, thing: str) -> str:
    """``count(1, "frame")`` -> ``1 frame``; ``count(3, "frame")`` -> ``3 frames``."""
    return f"{n} {thing}{'' if n == 1 else 's'}"


def frame_time(job: JobView) -> float | None:
    """Mean render seconds per frame of ``job``; None before any chunk has finished."""
    mean = job.stats.mean_render
    return None if mean is None else mean / max(job.chunk, 1)


def farm_time(frames_by_job: Iterable[tuple[JobView, int]]) -> str:
    """``≈ 1 h 20 of farm time`` for rendering these frames again, or ``unknown time``."""
    known = 0.0
    unknown = 0
    for job, frames in frames_by_job:
        if not frames:
            continue
        per_frame = frame_time(job)
        if per_frame is None:
            unknown += 1
        else:
            known += frames * per_frame
    if not unknown:
        return f"≈ {about(known)} of farm time"
    if not known:
        return "(unknown time: no render time measured yet)"
    return f"≈ {about(known)} of farm time, plus unknown time for {count(unknown, 'job')}"


def _marked_done(frames: int) -> str:
    """What marking unrendered frames done means for the output."""
    one = frames == 1
    return (
        f"{count(frames, 'frame')} done that {'was' if one else 'were'} never rendered: "
        f"{'it' if one else 'they'} will be missing from the output"
    )


# -- jobs ------------------------------------------------------------------------------


def _on_nodes(n: int) -> str:
    """``3 chunks on nodes``: running, or held ahead of a slot (a job's stats count both)."""
    return f"{count(n, 'chunk')} on {'a node' if n == 1 else 'nodes'}"


def _kills(running: int) -> str:
    return f"; {_on_nodes(running)} killed now" if running else ""


def requeue_cost(jobs: Sequence[JobView]) -> str:
    done = sum(job.stats.frames_done for job in jobs)
    running = sum(job.stats.chunks_running for job in jobs)
    if done:
        text = f"Requeue re-renders {count(done, 'done frame')} " + farm_time(
            (job, job.stats.frames_done) for job in jobs
        )
    else:
        text = "Requeue renders everything again; no frame is done yet, so no finished work is lost"
    if running:
        text += f", and restarts {_on_nodes(running)} from scratch"
    return text + "."


def complete_cost(jobs: Sequence[JobView]) -> str:
    missing = sum(max(job.stats.frames_total - job.stats.frames_done, 0) for job in jobs)
    running = sum(job.stats.chunks_running for job in jobs)
    if missing:
        text = f"Complete marks {_marked_done(missing)}"
    else:
        text = "Every frame is done already; Complete only marks the job done"
    return text + _kills(running) + "."


def cancel_cost(jobs: Sequence[JobView]) -> str:
    running = sum(job.stats.chunks_running for job in jobs)
    kills = (
        f"kills {_on_nodes(running)} now (the whole renderer process tree on every node) "
        "and starts nothing more"
        if running
        else "starts nothing more"
    )
    return f"Cancel {kills}. Records are kept; the jobs can be requeued."


def delete_cost(jobs: Sequence[JobView]) -> str:
    running = sum(job.stats.chunks_running for job in jobs)
    return (
        "Delete removes the jobs, their records and their logs in the sync root"
        + _kills(running)
        + ". This cannot be undone."
    )


JobCost = Callable[[Sequence[JobView]], str]
JOB_ACTION_COSTS: Mapping[JobAction, JobCost] = {
    "requeue": requeue_cost,
    "complete": complete_cost,
    "cancel": cancel_cost,
    "delete": delete_cost,
}


def job_action_confirmation(action: JobAction, jobs: Sequence[JobView]) -> Confirmation | None:
    """The question to ask before ``action`` on ``jobs``; None for a cheap action."""
    cost = JOB_ACTION_COSTS.get(action)
    if cost is None:
        return None
    label = JOB_ACTION_BY_NAME[action].label
    return Confirmation(
        question=f"{label} {count(len(jobs), 'job')}?",
        items=[f"{job.name}  ({job.id})" for job in jobs],
        cost=cost(jobs),
        verb=label,
    )


# -- chunks ----------------------------------------------------------------------------


def _running(chunks: Sequence[ChunkView]) -> list[ChunkView]:
    return [chunk for chunk in chunks if chunk.state == "assigned"]


def _frames(chunks: Iterable[ChunkView]) -> int:
    return sum(len(chunk.frames) for chunk in chunks)


def _stops(chunks: Sequence[ChunkView], now: float) -> str:
    """``; kills chunk 4 after 10 min of rendering on node-a``, or nothing."""
    running = _running(chunks)
    if not running:
        return ""
    spent = sum(now - chunk.started for chunk in running if chunk.started is not None)
    if len(running) == 1:
        chunk = running[0]
        where = f" on {chunk.node}" if chunk.node else ""
        if chunk.started is None:  # held ahead of a slot there
            return f"; takes chunk {chunk.index} back{where} before it starts"
        return f"; kills chunk {chunk.index} after {about(spent)} of rendering{where}"
    return f"; kills {_on_nodes(len(running))} ({about(spent)} of rendering lost)"


def set_done_cost(job: JobView, chunks: Sequence[ChunkView], now: float) -> str:
    missing = _frames(chunk for chunk in chunks if chunk.state != "done")
    if not missing:
        return "These chunks are done already; nothing changes."
    return f"Set done marks {_marked_done(missing)}{_stops(chunks, now)}."


def set_failed_cost(job: JobView, chunks: Sequence[ChunkView], now: float) -> str:
    done = _frames(chunk for chunk in chunks if chunk.state == "done")
    text = f"Set failed marks {count(_frames(chunks), 'frame')} failed"
    if done:
        text += f", throwing away {count(done, 'done frame')} {farm_time([(job, done)])}"
    return text + _stops(chunks, now) + ". Retry renders them again."


def exclude_cost(job: JobView, chunks: Sequence[ChunkView], now: float) -> str:
    done = _frames(chunk for chunk in chunks if chunk.state == "done")
    text = (
        f"Exclude takes {count(_frames(chunks), 'frame')} out of the job: never rendered, "
        "kept for audit"
    )
    if done:
        text += f"; {count(done, 'done frame')} no longer count as output"
    return text + _stops(chunks, now) + "."


def retry_cost(job: JobView, chunks: Sequence[ChunkView], now: float) -> str | None:
    """Retrying failed or waiting chunks is cheap; done ones render again, running
    ones start over."""
    done = _frames(chunk for chunk in chunks if chunk.state == "done")
    running = _running(chunks)
    if not done and not running:
        return None
    if done:
        text = f"Retry re-renders {count(done, 'done frame')} {farm_time([(job, done)])}"
    else:
        text = f"Retry starts {_on_nodes(len(running))} again from scratch"
    return text + _stops(chunks, now) + "."


def hold_cost(job: JobView, chunks: Sequence[ChunkView], now: float) -> str | None:
    """Holding chunks that wait is cheap; running ones are killed."""
    if not _running(chunks):
        return None
    waiting = _frames(chunk for chunk in chunks if chunk.state not in ("done", "excluded"))
    return (
        f"Hold keeps {count(waiting, 'frame')} from rendering until retried"
        + _stops(chunks, now)
        + "."
    )


# None from a cost: cheap this time (nothing done or running is touched).
ChunkCost = Callable[[JobView, Sequence[ChunkView], float], str | None]
CHUNK_ACTION_COSTS: Mapping[ChunkAction, ChunkCost] = {
    "retry": retry_cost,
    "hold": hold_cost,
    "set-done": set_done_cost,
    "set-failed": set_failed_cost,
    "exclude": exclude_cost,
}


def chunk_action_confirmation(
    action: ChunkAction, job: JobView, chunks: Sequence[ChunkView], now: float
) -> Confirmation | None:
    """The question to ask before ``action`` on some chunks of ``job``; None when cheap."""
    costs = CHUNK_ACTION_COSTS.get(action)
    cost = None if costs is None else costs(job, chunks, now)
    if cost is None:
        return None
    label = CHUNK_ACTION_BY_NAME[action].label
    return Confirmation(
        question=f"{label} {count(len(chunks), 'chunk')} of {job.name}?",
        items=[
            f"chunk {chunk.index}  frames {format_frames(chunk.frames) or chunk.kind}"
            f"  {chunk.state}" + (f" on {chunk.node}" if chunk.node else "")
            for chunk in chunks
        ],
        cost=cost,
        verb=label,
    )


# -- nodes kept off a job -------------------------------------------------------------


def block_confirmation(job: JobView, node: str, blocked: bool) -> Confirmation:
    """What blocking (or unblocking) ``node`` for ``job`` does, said before it is sent."""
    if blocked:
        return Confirmation(
            question=f"Block {node} for {job.name}?",
            items=[],
            cost=(
                f"{node} takes no more chunks of {job.name} until unblocked "
                "(b again, or b in the job's detail view); what runs there now finishes. "
                "Other jobs still run on it."
            ),
            verb="Block",
        )
    return Confirmation(
        question=f"Unblock {node} for {job.name}?",
        items=[],
        cost=(f"{node} may take chunks of {job.name} again; its errors on this job are forgotten."),
        verb="Unblock",
    )


# -- quitting a local farm -------------------------------------------------------------


def quit_farm_confirmation(nodes: Iterable[NodeView]) -> Confirmation | None:
    """Quitting a ``farm up`` console stops its farm: ask while something renders."""
    rendering = sum(len(node.running) for node in nodes if node.state != "offline")
    if not rendering:
        return None
    return Confirmation(
        question=(
            f"Stop the local farm? {count(rendering, 'chunk')} "
            f"{'is' if rendering == 1 else 'are'} rendering"
        ),
        items=[],
        cost=(
            "This console was started by `farm up`: quitting stops its leader and agents, "
            "and the renders in progress are killed (they start over when the farm is up again)."
        ),
        verb="Stop the farm",
    )
