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
from server.frame_states import tally_of
from server.job_progress import count
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


class SlotCensus:
    """``eligible_slots`` without a walk over every node per view.

    Slots per set of required tags are counted once and kept until a node's
    shape (online, enabled, slots, tags) changes: the owner calls ``forget``.
    """

    def __init__(self, nodes: dict[str, Node]) -> None:
        self.nodes = nodes
        self._by_tags: dict[frozenset[str], int] = {}

    def forget(self) -> None:
        self._by_tags.clear()

    def eligible(self, job: Job) -> int:
        tags = frozenset(job.spec.tags)
        total = self._by_tags.get(tags)
        if total is None:
            total = sum(
                n.slots
                for n in self.nodes.values()
                if n.online and n.enabled and tags <= set(n.tags)
            )
            self._by_tags[tags] = total
        for name in job.blocked:
            node = self.nodes.get(name)
            if node is not None and node.online and node.enabled and tags <= set(node.tags):
                total -= node.slots
        return total


def job_stats(job: Job, nodes: Iterable[Node], census: SlotCensus | None = None) -> JobStats:
    """From the job's counters: O(1) in its chunks and frames (and its nodes, with ``census``)."""
    tally = tally_of(job)
    frames = tally.frames
    renders = ("scout", "render")
    times = tally.times
    stats = JobStats(
        frames_total=sum(n for state, n in frames.items() if state != "excluded"),
        frames_done=frames["done"],
        frames_failed=frames["failed"],
        chunks_total=count(tally, renders) - count(tally, renders, ("excluded",)),
        chunks_done=count(tally, renders, ("done",)),
        # Every kind of chunk holds a slot, so pre/post-job scripts count as running.
        chunks_running=len(tally.running),
        chunks_failed=count(tally, renders, ("failed",)),
    )
    if not times:
        return stats
    mean = tally.time_sum / len(times)
    stats.mean_render = mean
    stats.p90_render = times[max(1, math.ceil(0.9 * len(times))) - 1]
    remaining = count(tally, renders, _REMAINING)
    if remaining == 0:
        stats.etr = 0.0
        return stats
    slots = census.eligible(job) if census is not None else eligible_slots(job, nodes)
    width = min(slots, remaining)
    if job.spec.max_running:
        width = min(width, job.spec.max_running)
    stats.etr = remaining * mean / max(1, width)
    return stats
