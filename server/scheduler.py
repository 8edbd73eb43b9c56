"""The farm's rules as a pure state machine (sans-I/O).

Every method takes an event and the current time and returns ``Changes``:
what changed, what to dispatch, what to kill, what to log. It never touches
a socket, a file or the clock, so it is tested without any of them.

INTERFACE CONTRACT (the leader's I/O layer codes against exactly this).
"""

from __future__ import annotations

from dataclasses import dataclass

from farmtui.protocol import (
    AgentHello,
    ChunkAction,
    ChunkFinished,
    ChunkRef,
    ChunkView,
    JobAction,
    JobDetail,
    JobPatch,
    JobSpec,
    JobView,
    MoveWhere,
    NodeView,
)
from server.model import Changes, Job, Node


class SchedulerError(ValueError):
    """A request the farm refuses (unknown job, move across groups ...): one-line message."""


@dataclass(slots=True)
class SchedulerConfig:
    retries: int = 3
    retry_delay: float = 5.0
    retry_cap: float = 300.0
    # A node that fails one job this many times is blocked for it for block_for seconds.
    block_after: int = 3
    block_for: float = 600.0
    # Farm-wide auto timeout (Deadline's "enforce for all jobs").
    auto_timeout_all: bool = False
    auto_min_chunks: int | None = 3
    auto_min_percent: float | None = None
    auto_multiplier: float = 2.0
    # Seconds without a heartbeat after which a node is lost.
    node_timeout: float = 15.0


class Scheduler:
    def __init__(self, config: SchedulerConfig) -> None:
        self.config = config
        self.jobs: dict[str, Job] = {}
        self.nodes: dict[str, Node] = {}

    # --- loading (leader start-up) -------------------------------------------
    def load(self, jobs: list[Job], nodes: list[Node], now: float) -> Changes:
        """Adopt the store's picture after a restart.

        Chunks that were assigned are requeued without using a retry (the leader
        restarted, the farm's fault) unless their node reconnects reporting them
        running (see ``node_connected``). All nodes start offline.
        """
        raise NotImplementedError

    # --- submission ------------------------------------------------------------
    def submit(self, job_id: str, spec: JobSpec, owner: str, now: float) -> Changes:
        """Validate and add a job (chunks, scout chunks, pre/post chunks). SchedulerError on bad input."""
        raise NotImplementedError

    # --- nodes -----------------------------------------------------------------
    def node_connected(self, hello: AgentHello, now: float) -> tuple[Changes, list[ChunkRef]]:
        """A node (re)registered. Returns the chunks it reports running that it must kill."""
        raise NotImplementedError

    def node_heartbeat(self, name: str, cpu: float, memory: float, now: float) -> Changes:
        raise NotImplementedError

    def node_lost(self, name: str, now: float) -> Changes:
        """Link gone or heartbeats stopped: its chunks become preempted and requeue, no retry used."""
        raise NotImplementedError

    def set_node_enabled(self, name: str, enabled: bool, actor: str, now: float) -> Changes:
        raise NotImplementedError

    # --- dispatch --------------------------------------------------------------
    def dispatch(self, now: float) -> Changes:
        """Fill every free slot on every online enabled node, in dispatch order.

        Order: priority ascending, then queue_key. Honours pause/hold, scout
        frames, ``after`` dependencies, max_running, tags, node blocks,
        waiting-retry times and pre/post-job chunks. Each assignment bumps the
        chunk's attempt number and records an Attempt.
        """
        raise NotImplementedError

    # --- reports from agents (stale attempts are ignored: return empty Changes) --
    def chunk_started(self, node: str, job_id: str, chunk: int, attempt: int, now: float) -> Changes:
        raise NotImplementedError

    def chunk_alive(self, node: str, job_id: str, chunk: int, attempt: int, now: float) -> Changes:
        """First sign of life (output line, progress or a frame)."""
        raise NotImplementedError

    def frames_written(
        self,
        node: str,
        job_id: str,
        chunk: int,
        attempt: int,
        frames: list[int],
        staged: bool,
        now: float,
    ) -> Changes:
        raise NotImplementedError

    def chunk_timed_out(
        self, node: str, job_id: str, chunk: int, attempt: int, kind: str, elapsed: float, now: float
    ) -> Changes:
        """on_timeout=notify: the chunk runs on; the owner is told."""
        raise NotImplementedError

    def chunk_finished(self, node: str, report: ChunkFinished, now: float) -> Changes:
        """Success, failure with retry/backoff/blocklist, or the job's on_timeout response."""
        raise NotImplementedError

    # --- operators -------------------------------------------------------------
    def job_action(self, job_ids: list[str], action: JobAction, actor: str, now: float) -> Changes:
        """Apply one action to every job; SchedulerError (and no change at all) if any id is unknown."""
        raise NotImplementedError

    def chunk_action(
        self, job_id: str, chunks: list[int], action: ChunkAction, actor: str, now: float
    ) -> Changes:
        raise NotImplementedError

    def set_priority(self, job_id: str, priority: int, actor: str, now: float) -> Changes:
        """Join the end of the new group; no requeue."""
        raise NotImplementedError

    def move(
        self,
        job_id: str,
        where: MoveWhere | None,
        before: str | None,
        actor: str,
        now: float,
    ) -> Changes:
        """Move within the priority group; SchedulerError when it would cross groups."""
        raise NotImplementedError

    def patch(self, job_id: str, patch: JobPatch, actor: str, now: float) -> Changes:
        raise NotImplementedError

    # --- time ------------------------------------------------------------------
    def tick(self, now: float) -> Changes:
        """Periodic: lost nodes, expired blocks, auto timeouts of running chunks."""
        raise NotImplementedError

    # --- views -----------------------------------------------------------------
    def job_view(self, job_id: str) -> JobView:
        raise NotImplementedError

    def job_views(self, include_archived: bool) -> list[JobView]:
        """In dispatch order."""
        raise NotImplementedError

    def chunk_view(self, job_id: str, chunk: int) -> ChunkView:
        raise NotImplementedError

    def job_detail(self, job_id: str) -> JobDetail:
        raise NotImplementedError

    def node_views(self) -> list[NodeView]:
        raise NotImplementedError
