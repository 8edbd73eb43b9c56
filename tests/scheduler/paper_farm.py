"""A farm on paper: a scheduler, a clock the test moves, and agents that report."""

from __future__ import annotations

from typing import Any

from farmtui.protocol import (
    AgentHello,
    ChunkFinished,
    ChunkRef,
    GpuInfo,
    JobSpec,
    RunningRef,
    Timeouts,
)
from server.model import Changes
from server.scheduler import Scheduler, SchedulerConfig


def held(ref: ChunkRef) -> RunningRef:
    """``ref`` as a hello lists it among the attempts its node still runs (its render
    time not said, as an older agent's hello)."""
    return RunningRef(job_id=ref.job_id, chunk=ref.chunk, attempt=ref.attempt)


class Farm:
    """Drives a Scheduler the way the leader does: every event, then dispatch."""

    def __init__(self, config: SchedulerConfig | None = None) -> None:
        self.scheduler = Scheduler(config or SchedulerConfig())
        self.now = 1000.0
        self._ids = 0

    # --- set-up ---------------------------------------------------------------
    def node(
        self,
        name: str,
        slots: int = 1,
        tags: list[str] | None = None,
        *,
        gpus: list[int] | None = None,
        gpu_memory: int = 24576,
        gpu_only: bool = False,
        prefetch: int = 0,
        tokens: list[str] | None = None,
    ) -> Changes:
        """A node joins; ``gpus``: the indices of its GPUs, each of ``gpu_memory`` MiB;
        ``prefetch``: chunks of short-chunk jobs it holds ahead of its slots; ``tokens``:
        the argv tokens its agent knows (None: an old agent's hello, which says none)."""
        inventory = [GpuInfo(index=i, name="RTX", memory=gpu_memory) for i in gpus or []]
        hello = AgentHello(
            name=name,
            slots=slots,
            tags=tags or [],
            gpus=inventory,
            gpu_only=gpu_only,
            prefetch=prefetch,
            tokens=tokens or [],
        )
        changes, stale = self.scheduler.node_connected(hello, self.now)
        assert stale == []
        return changes

    def submit(self, job_id: str | None = None, **fields: Any) -> str:
        if job_id is None:
            self._ids += 1
            job_id = f"j{self._ids}"
        fields.setdefault("argv", ["render", "{start}", "{end}"])
        if "timeouts" in fields and isinstance(fields["timeouts"], dict):
            fields["timeouts"] = Timeouts(**fields["timeouts"])
        self.scheduler.submit(job_id, JobSpec(**fields), "alice", self.now)
        return job_id

    # --- time and dispatch ------------------------------------------------------
    def dispatch(self) -> Changes:
        return self.scheduler.dispatch(self.now)

    def advance(self, seconds: float, *, silent: tuple[str, ...] = ()) -> Changes:
        """Move the clock; online nodes heartbeat on the way unless named ``silent``."""
        self.now += seconds
        for node in self.scheduler.nodes.values():
            if node.online and node.name not in silent:
                self.scheduler.node_heartbeat(node.name, 1.0, 1.0, self.now)
        return self.scheduler.tick(self.now)

    # --- agents -----------------------------------------------------------------
    def finish(
        self,
        job_id: str,
        chunk: int,
        outcome: str = "done",
        *,
        took: float = 10.0,
        node: str | None = None,
        attempt: int | None = None,
        timeout_kind: str | None = None,
    ) -> Changes:
        chunks = self.scheduler.jobs[job_id].chunks
        record = chunks[chunk] if chunk < len(chunks) else None
        report = ChunkFinished(
            job_id=job_id,
            chunk=chunk,
            attempt=attempt if attempt is not None else (record.attempt if record else 1),
            outcome=outcome,  # type: ignore[arg-type]
            exit_status="0" if outcome == "done" else "1",
            reason="" if outcome == "done" else "it broke",
            timeout_kind=timeout_kind,  # type: ignore[arg-type]
            started=self.now - took,
            finished=self.now,
        )
        node = node or (record.node if record else None) or "?"
        return self.scheduler.chunk_finished(node, report, self.now)

    def running(self) -> dict[str, list[tuple[str, int]]]:
        """Node -> the (job, chunk) pairs it runs, from the scheduler's point of view."""
        return {
            name: sorted((job_id, index) for job_id, index, _ in node.running)
            for name, node in self.scheduler.nodes.items()
        }

    # --- what a user sees -------------------------------------------------------
    def state(self, job_id: str) -> str:
        return self.scheduler.job_view(job_id).state

    def chunk_states(self, job_id: str) -> list[str]:
        return [c.state for c in self.scheduler.job_detail(job_id).chunks]

    def frame_states(self, job_id: str) -> dict[int, str]:
        detail = self.scheduler.job_detail(job_id)
        return {int(f): s for f, s in detail.frame_states.items()}

    def order(self) -> list[str]:
        return [v.id for v in self.scheduler.job_views(include_archived=False)]

    def held(self, job_id: str, chunk: int) -> RunningRef:
        """The attempt as a hello lists it among those its node still runs."""
        return held(self.ref(job_id, chunk))

    def ref(self, job_id: str, chunk: int) -> ChunkRef:
        record = self.scheduler.jobs[job_id].chunks[chunk]
        return ChunkRef(job_id=job_id, chunk=chunk, attempt=record.attempt)
