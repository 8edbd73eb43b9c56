"""Render time limits as the agent enforces them, resolved for one chunk.

The job sets minimum and maximum render time and maximum start time, per
chunk or per frame; pre/post-job scripts get ``script_timeout`` as their
maximum. The auto timeout (per job, or farm-wide from the leader's config)
takes over once enough render chunks have completed: the mean completed
render time times a multiplier, or the job's own maximum if that is smaller.
"""

from __future__ import annotations

from farmtui.protocol import ChunkTimeouts
from server.frame_states import tally_of
from server.job_progress import count
from server.model import Chunk, Job
from server.scheduler_config import SchedulerConfig


def auto_max_render(job: Job, chunk: Chunk, config: SchedulerConfig) -> float | None:
    """The auto timeout for this chunk, or None while it is off or the sample is too small."""
    timeouts = job.spec.timeouts
    if timeouts.auto:
        min_chunks, min_percent = timeouts.auto_min_chunks, timeouts.auto_min_percent
        if min_chunks is None and min_percent is None:
            min_chunks, min_percent = config.auto_min_chunks, config.auto_min_percent
        multiplier = timeouts.auto_multiplier
    elif config.auto_timeout_all:
        min_chunks, min_percent = config.auto_min_chunks, config.auto_min_percent
        multiplier = config.auto_multiplier
    else:
        return None
    tally = tally_of(job)
    completed = len(tally.times)
    renders = ("scout", "render")
    total = count(tally, renders) - count(tally, renders, ("excluded",))
    if not completed or total == 0:
        return None
    if min_chunks is not None and completed < min_chunks:
        return None
    if min_percent is not None and 100.0 * completed / total < min_percent:
        return None
    if timeouts.per_frame:
        per_frame = tally.time_sum / max(1, tally.timed_frames)
        return per_frame * len(chunk.frames) * multiplier
    return tally.time_sum / completed * multiplier


def describe_auto(job: Job, chunk: Chunk, config: SchedulerConfig) -> str | None:
    """One line for the job's event log about the auto timeout now in force, or None."""
    limit = auto_max_render(job, chunk, config)
    if limit is None:
        return None
    multiplier = job.spec.timeouts.auto_multiplier if job.spec.timeouts.auto else None
    if multiplier is None:
        multiplier = config.auto_multiplier
    sample = len(tally_of(job).times)
    if job.spec.timeouts.per_frame:
        limit /= max(1, len(chunk.frames))
        what = f"{limit:.2f}s per frame"
    else:
        what = f"{limit:.2f}s per chunk"
    return (
        f"auto timeout: maximum render time now {what} "
        f"(mean of {sample} completed chunks x {multiplier:g})"
    )


def chunk_timeouts(job: Job, chunk: Chunk, config: SchedulerConfig) -> ChunkTimeouts:
    """What the agent must enforce for this chunk's next attempt."""
    timeouts = job.spec.timeouts
    if chunk.kind != "render":
        return ChunkTimeouts(max_render=timeouts.script_timeout, on_timeout=timeouts.on_timeout)
    scale = float(len(chunk.frames)) if timeouts.per_frame else 1.0
    min_render = None if timeouts.min_render is None else timeouts.min_render * scale
    max_render = None if timeouts.max_render is None else timeouts.max_render * scale
    auto = auto_max_render(job, chunk, config)
    if auto is not None and (max_render is None or auto < max_render):
        max_render = auto
    return ChunkTimeouts(
        min_render=min_render,
        max_render=max_render,
        max_start=timeouts.max_start,
        on_timeout=timeouts.on_timeout,
    )
