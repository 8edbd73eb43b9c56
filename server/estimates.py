"""Progress and the estimated time remaining of a job (``JobStats``).

Render-chunk times come from completed render chunks only (pre/post-job
scripts and chunks set done by hand have no render time). The ETR assumes the
remaining chunks take the mean time and run as wide as the job can: its
machine limit, the slots of the online nodes it may use, and the number of
chunks left, whichever is smallest.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from farmtui.protocol import JobStats
from server.frame_states import job_frame_states
from server.model import Job, Node

# Render chunks that may still run (or run now).
_REMAINING = frozenset({"queued", "assigned", "waiting-retry", "preempted", "held"})


def p90(values: list[float]) -> float:
    """Nearest-rank 90th percentile: the value 90% of the sample is at or below."""
    ordered = sorted(values)
    rank = max(1, math.ceil(0.9 * len(ordered)))
    return ordered[rank - 1]


def eligible_slots(job: Job, nodes: Iterable[Node]) -> int:
    """Slots (free and busy) of the online, enabled nodes this job may use."""
    tags = set(job.spec.tags)
    return sum(
        n.slots
        for n in nodes
        if n.online and n.enabled and tags.issubset(n.tags) and n.name not in job.blocked
    )


def job_stats(job: Job, nodes: Iterable[Node]) -> JobStats:
    frame_states = job_frame_states(job)
    render = [c for c in job.chunks if c.kind == "render" and c.state != "excluded"]
    times = [c.render_time for c in render if c.state == "done" and c.render_time is not None]
    stats = JobStats(
        frames_total=sum(1 for s in frame_states.values() if s != "excluded"),
        frames_done=sum(1 for s in frame_states.values() if s == "done"),
        frames_failed=sum(1 for s in frame_states.values() if s == "failed"),
        chunks_total=len(render),
        chunks_done=sum(1 for c in render if c.state == "done"),
        # Every kind of chunk holds a slot, so pre/post-job scripts count as running.
        chunks_running=sum(1 for c in job.chunks if c.state == "assigned"),
        chunks_failed=sum(1 for c in render if c.state == "failed"),
    )
    if not times:
        return stats
    mean = sum(times) / len(times)
    stats.mean_render = mean
    stats.p90_render = p90(times)
    remaining = sum(1 for c in render if c.state in _REMAINING)
    if remaining == 0:
        stats.etr = 0.0
        return stats
    width = min(eligible_slots(job, nodes), remaining)
    if job.spec.max_running:
        width = min(width, job.spec.max_running)
    stats.etr = remaining * mean / max(1, width)
    return stats
