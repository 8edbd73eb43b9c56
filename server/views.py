"""Read-only views of the scheduler's records, in the shapes of ``farmtui.protocol``."""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

import msgspec

from farmtui.protocol import (
    AttemptView,
    ChunkRef,
    ChunkView,
    FrameRun,
    JobDetail,
    JobSpec,
    JobView,
    NodeView,
)
from server.estimates import SlotCensus, job_stats
from server.frame_states import chunk_frame_states, frame_runs, job_frame_states
from server.model import Attempt, Chunk, Job, Node
from server.reasons import Farm, why_waiting
from server.retries import retry_policy
from server.scheduler_config import SchedulerConfig
from server.transitions import job_name
from server.url_origin import origin_only

# Reasons that hold the job until an operator or the farm changes something:
# no estimate of the time remaining is given then.
STALLED = frozenset({"paused", "held", "after", "tags", "offline", "blocked", "failed"})


def attempt_view(attempt: Attempt) -> AttemptView:
    return AttemptView(
        number=attempt.number,
        node=attempt.node,
        started=attempt.started,
        finished=attempt.finished,
        outcome=attempt.outcome,
        exit_status=attempt.exit_status,
        reason=attempt.reason,
    )


def chunk_view(chunk: Chunk) -> ChunkView:
    """``node`` is where it runs now, or for a done or failed chunk where it last ran."""
    node = chunk.node
    if node is None and chunk.state in ("done", "failed") and chunk.attempts:
        last = chunk.attempts[-1]
        if last.number == chunk.attempt and last.outcome != "killed":
            node = last.node
    return ChunkView(
        index=chunk.index,
        kind=chunk.kind,
        frames=list(chunk.frames),
        state=chunk.state,
        node=node,
        attempt=chunk.attempt,
        errors=chunk.errors,
        retry_at=chunk.retry_at,
        started=chunk.started,
        finished=chunk.finished,
        attempts=[attempt_view(a) for a in chunk.attempts],
        stopping_on=chunk.stopping_node,
        render_time=chunk.render_time,
    )


class Waiting(NamedTuple):
    """What a job view reads to say why the job waits (``server.reasons``)."""

    farm: Farm
    config: SchedulerConfig
    now: float


def spec_shown(spec: JobSpec) -> JobSpec:
    """The spec as every reader sees it: its webhook by origin only (``url_origin``).

    Any token that reads sees every job; a webhook's path is often its secret, so
    not even the owner reads it back (they wrote it; the leader keeps it whole).
    """
    if spec.webhook is None:
        return spec
    return msgspec.structs.replace(spec, webhook=origin_only(spec.webhook))


def job_view(
    job: Job,
    position: int,
    nodes: Iterable[Node],
    census: SlotCensus | None = None,
    waiting: Waiting | None = None,
) -> JobView:
    """``position`` is the rank among active jobs; -1 for an archived job.

    The estimate of time remaining is left out while nothing can run.
    """
    reason = None
    if waiting is not None:
        reason = why_waiting(job, waiting.farm, retry_policy(job, waiting.config), waiting.now)
    stats = job_stats(job, nodes, census)
    if reason is not None and reason.kind in STALLED:
        stats.etr = None
    return JobView(
        id=job.id,
        name=job_name(job),
        owner=job.owner,
        state=job.state,
        priority=job.priority,
        position=position,
        frames=job.spec.frames,
        chunk=job.spec.chunk,
        renderer=job.spec.renderer,
        archived=job.archived,
        reviewed=job.reviewed,
        created=job.created,
        started=job.started,
        finished=job.finished,
        stats=stats,
        spec=spec_shown(job.spec),
        reason=reason,
        blocked_nodes=dict(job.blocked),
    )


def job_detail(
    job: Job,
    position: int,
    nodes: Iterable[Node],
    census: SlotCensus | None = None,
    page: ChunkPage | None = None,
    waiting: Waiting | None = None,
) -> JobDetail:
    """The job with every chunk and frame, or one ``page`` of its chunks.

    A read, never on an event's path: the whole job costs O(frames); a page
    costs its chunks plus the frame runs (see ``frame_states.frame_runs``).
    """
    node_list = list(nodes)
    chunks = job.chunks
    if page is None:
        shown = list(chunks.looks())
        frame_states = {str(f): s for f, s in job_frame_states(job).items()}
        more = False
    else:
        first = max(0, page.after + 1)
        shown, frames = [], 0
        # At most ``limit`` chunks and, past the first, MAX_PAGE_FRAMES frames.
        for index in range(first, min(len(chunks), first + page.limit)):
            chunk = chunks.look(index)
            frames += len(chunk.frames)
            if frames > MAX_PAGE_FRAMES and shown:
                break
            shown.append(chunk)
        frame_states = {str(f): s for chunk in shown for f, s in chunk_frame_states(chunk).items()}
        more = first + len(shown) < len(chunks)
    runs, complete = frame_runs(job)
    return JobDetail(
        job=job_view(job, position, node_list, census, waiting),
        chunks=[chunk_view(chunk) for chunk in shown],
        frame_states=frame_states,
        blocked_nodes=dict(job.blocked),
        frame_runs=[FrameRun(first, last, state, step) for first, last, state, step in runs],
        frame_runs_complete=complete,
        chunk_count=len(chunks),
        next_after=shown[-1].index if more and shown else None,
    )


# A page of a job's chunks holds at most this many chunks and frames, so no
# request for a job makes the leader build (or a client read) more at once.
MAX_PAGE_CHUNKS = 10_000
MAX_PAGE_FRAMES = 100_000
# A page of the job list: the biggest farms keep tens of thousands of jobs.
MAX_PAGE_JOBS = 1000


class JobPage(NamedTuple):
    """At most ``limit`` jobs, those after the job ``after`` in dispatch order."""

    limit: int
    after: str | None = None


class ChunkPage(NamedTuple):
    """Chunks with an index above ``after``, at most ``limit`` of them."""

    limit: int
    after: int = -1


def node_view(node: Node, gpus_busy: list[int] | None = None) -> NodeView:
    return NodeView(
        name=node.name,
        state="disabled" if not node.enabled else ("online" if node.online else "offline"),
        slots=node.slots,
        running=[
            ChunkRef(job_id=job_id, chunk=index, attempt=attempt)
            for job_id, index, attempt in sorted(node.running)
        ],
        cpu_count=node.cpu_count,
        memory_total=node.memory_total,
        cpu_percent=node.cpu_percent,
        memory_percent=node.memory_percent,
        tags=list(node.tags),
        last_seen=node.seen_before_start or node.last_seen,
        version=node.version,
        gpus=list(node.gpus),
        gpus_busy=gpus_busy or [],
        gpu_only=node.gpu_only,
    )
