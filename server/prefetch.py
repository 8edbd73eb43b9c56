"""Which jobs a node may take chunks of ahead of a free slot (its ``prefetch``).

An agent started with ``--prefetch N`` holds up to N chunks beyond its
slots, each waiting (its folder made, its journal entry written) for a slot
to free. A slot then starts its next renderer as soon as the last one exits,
instead of after the report's round trip through the leader: for chunks of a
fraction of a second that round trip was most of their time.

Only chunks that are short are taken ahead: a chunk waiting behind a
half-hour render would hold up its job while another node sits idle. So a
job qualifies once its render chunks have taken less than ``PREFETCH_BELOW``
seconds on average (none is known before its first chunk is done) and the
last one done did too (a job whose frames turn heavy stops at once, not when
its average catches up), and not when its chunks hold something scarce while
they wait (GPUs, units of a limit).

What waits ahead is taken back (the agent stops a chunk only if its renderer
has not started; it comes back with no retry used) when nothing new of its
job may start there (paused, held, the node disabled or blocked for it, its
chunks turned long), and for a job that comes before it in dispatch order and
waits for a slot on that node.
"""

from __future__ import annotations

from server.frame_states import PENDING, tally_of
from server.model import Changes, Job, Kill, Node

PREFETCH_BELOW = 5.0  # seconds: a render chunk's mean time, for its job's chunks to wait

# Taking back what waits for a job that comes first (``Scheduler.tick``): the jobs
# at the head of the dispatch order looked at, how many of them take back, how
# often one job may (seconds), and the attempts asked back remembered (so each is
# asked once) before the list is pruned.
FIRST_LOOKED_AT = 64
FIRST_TAKING_BACK = 4
TAKE_BACK_EVERY = 10.0
ASKED_BACK_KEPT = 4096
# The chunks of such a job that wait for nothing but a slot: not those waiting out
# a retry's backoff (one already due starts on a free slot like any other).
STARTABLE = PENDING - {"waiting-retry"}


def takes_ahead(job: Job) -> bool:
    """Whether a node may hold the job's chunks ahead of a free slot: O(1)."""
    spec = job.spec
    if spec.gpus or spec.limits:
        return False
    tally = tally_of(job)
    if tally.last_time is not None and tally.last_time >= PREFETCH_BELOW:
        return False
    return bool(tally.times) and tally.time_sum < PREFETCH_BELOW * len(tally.times)


def withdraw_waiting(
    job: Job, nodes: dict[str, Node], changes: Changes, reason: str, only: str | None = None
) -> None:
    """Take back the job's chunks that wait for a slot on a node (held ahead of it).

    Its agent stops those whose renderer has not started, and they come back
    (no retry used); a chunk already rendering runs on. ``only``: on that node.
    """
    for index in sorted(tally_of(job).running):
        chunk = job.chunks[index]
        node = nodes.get(chunk.node or "")
        if node is None or not node.prefetch or (only is not None and node.name != only):
            continue  # a node that takes nothing ahead starts every chunk it is given
        take_back(node.name, (job.id, index, chunk.attempt), reason, changes)


def take_back(node: str, attempt: tuple[str, int, int], reason: str, changes: Changes) -> None:
    """Ask ``node`` to stop the attempt (job id, chunk, attempt) if it waits for a slot."""
    job_id, chunk, number = attempt
    changes.kills.append(
        Kill(
            node=node,
            job_id=job_id,
            chunk=chunk,
            attempt=number,
            reason=reason,
            waiting_only=True,
        )
    )
