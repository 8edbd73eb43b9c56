"""Read-only views of the scheduler's records, in the shapes of ``farmtui.protocol``."""

from __future__ import annotations

from collections.abc import Iterable

from farmtui.protocol import AttemptView, ChunkRef, ChunkView, JobDetail, JobView, NodeView
from server.estimates import SlotCensus, job_stats
from server.frame_states import job_frame_states
from server.model import Attempt, Chunk, Job, Node
from server.transitions import job_name


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
    )


def job_view(
    job: Job, position: int, nodes: Iterable[Node], census: SlotCensus | None = None
) -> JobView:
    """``position`` is the rank among active jobs; -1 for an archived job."""
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
        stats=job_stats(job, nodes, census),
        spec=job.spec,
    )


def job_detail(
    job: Job, position: int, nodes: Iterable[Node], census: SlotCensus | None = None
) -> JobDetail:
    """The whole job: every chunk and frame (a read, O(frames); never on an event's path)."""
    node_list = list(nodes)
    return JobDetail(
        job=job_view(job, position, node_list, census),
        chunks=[chunk_view(c) for c in job.chunks],
        frame_states={str(f): s for f, s in job_frame_states(job).items()},
        blocked_nodes=dict(job.blocked),
    )


def node_view(node: Node) -> NodeView:
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
        last_seen=node.last_seen,
        version=node.version,
    )
