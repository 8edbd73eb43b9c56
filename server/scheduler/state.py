"""What the scheduler holds: its records, its indexes, and the lookups every part shares.

``SchedulerState`` is the base of the scheduler's parts (``server.scheduler``
names them): it declares every attribute once, so each part, a class of its
own, is checked against them. The lookups here are the ones more than one
part uses: a report's chunk, a job by id, what an attempt holds, whether a
node may take a job's chunk, the dispatch ranks.
"""

from __future__ import annotations

import math
from collections import deque

from server import dispatch_order, reasons
from server.agent_tokens import tokens_needed
from server.errors import cut
from server.estimates import SlotCensus
from server.frame_waits import PARK_BUDGET, FrameWaits
from server.model import Changes, Chunk, Job, Node
from server.prefetch import ShortKinds, Spaced
from server.resources import Holding, Resources
from server.retries import is_blocked
from server.scheduler_config import SchedulerConfig, SchedulerError

# Chunks one dispatch pass assigns at most; the leader runs the next pass at once, as a
# group of its own, so an idle farm of hundreds of nodes is filled in several turns of
# the event loop, not one long one (2,400 assignments: ~35 ms of the pass alone, the
# same again to commit and announce them). With 300 agents starting at once, passes of
# 512 made turns of 45-65 ms; in steady state a pass assigns 40-100 (scale.py c1).
ASSIGN_BUDGET = 256


class SchedulerState:
    """The records, the indexes over them, and the lookups the scheduler's parts share."""

    def __init__(self, config: SchedulerConfig) -> None:
        self.config = config
        self.jobs: dict[str, Job] = {}
        self.nodes: dict[str, Node] = {}
        # Dispatch ranks of active jobs; None when the order may have changed.
        self._positions: dict[str, int] | None = None
        # (owner, idempotency key) -> job id.
        self.submit_keys: dict[tuple[str, str], str] = {}
        # The dispatch index: dispatch keys of the jobs that may dispatch (queued or
        # rendering, not archived, a chunk waiting for a slot), sorted; and each such
        # job's key in it.
        self._index: list[tuple[int, float, str]] = []
        self._indexed: dict[str, tuple[int, float, str]] = {}
        # Free slots of the online, enabled nodes that have some.
        self._free: dict[str, int] = {}
        # Room for chunks taken ahead of a free slot (``server.prefetch``), by node; and
        # the jobs of the dispatch index whose chunks may be taken ahead, in its order.
        self._spare: dict[str, int] = {}
        # The nodes whose room ahead is deeper than a chunk a slot (``prefetch.depth``):
        # with none, no job's room there needs a closer look.
        self._deep: set[str] = set()
        # Chunks held ahead that were asked back for a job before theirs (asked once).
        self._asked_back: set[tuple[str, int, int]] = set()
        # When each job last took chunks back (job id).
        self._took_back_at: Spaced[str] = Spaced()
        # When a node last gave back what it held of a job beyond the job's depth ((job id,
        # node): ``ChunkReports._hold_fewer``).
        self._held_fewer_at: Spaced[tuple[str, str]] = Spaced()
        self._ahead: list[tuple[int, float, str]] = []
        self._aheaded: dict[str, tuple[int, float, str]] = {}
        # Kinds of work known short, for jobs none of whose chunks is done yet. Live only,
        # like the nodes' readings: a restarted leader learns them again.
        self._short_kinds = ShortKinds()
        # Jobs none of whose chunks is done yet that had chunks taken ahead by their kind:
        # their first render time (or the clock) says what their kind is from then on
        # (``chunk_finished``, ``_judge_by_clock``).
        self._ahead_by_kind: set[str] = set()
        # (when it began, job id, chunk, attempt) of each render (its ChunkStarted),
        # oldest first: one still running PREFETCH_BELOW s later is long
        # (``_judge_by_clock``).
        self._renders: deque[tuple[float, str, int, int]] = deque()
        # The same of renders an agent's hello told of, begun less than PREFETCH_BELOW s
        # before it: a heap by when they began (``RenderClock._time_render``).
        self._told_renders: list[tuple[float, str, int, int]] = []
        # The long renders each node runs, judged so (pruned of those that ended as the
        # node is counted): a node whose every slot holds one gets no chunk ahead.
        self._long_on: dict[str, set[tuple[str, int, int]]] = {}
        # Each node's (online, enabled, slots, tags) as the census last counted it.
        self._shapes: dict[str, tuple[object, ...]] = {}
        self._census = SlotCensus(self.nodes)
        self._census_forgotten = False
        self._reasons: reasons.Farm | None = None
        # Something changed since the last full dispatch pass, or time may have
        # made a chunk dispatchable (a retry due, a node block over) at ``_wakeup``.
        self._dirty = True
        self._wakeup = math.inf
        # Events leave the dispatch index to the group commit meanwhile (``defer_notes``).
        self._notes_deferred = False
        # The latest time an event or a dispatch pass was given: views read reasons at it.
        self._clock_seen = 0.0
        # The farm's limits, and the GPUs and limit units the attempts hold.
        self.resources = Resources()
        # Chunks parked until the upstream frames they need are done; how many more one
        # dispatch pass may park, and whether it stopped for that (go on next pass).
        self.frame_waits = FrameWaits()
        self._parks_left = PARK_BUDGET
        self._dirty_after = False
        # How many more chunks this pass may assign (``ASSIGN_BUDGET``); whether the
        # last pass stopped at a budget with work left (the leader runs the next soon).
        self._assigns_left = ASSIGN_BUDGET
        self.cut_short = False
        # Nodes whose agent said it is stopping: no free slot until their next hello.
        # Live only: the agent is gone by the time a restarted leader could read it.
        self.stopping: set[str] = set()
        # Nodes whose link closed since their row was last written: their last contact
        # goes to the store with the next commit that writes anything (``StoreRows.rows``),
        # or the leader's stop (``contacts``); a disconnect is not worth a commit of its own.
        self.unsaved_contacts: set[str] = set()

    def _chunk(self, job_id: str, index: int) -> Chunk | None:
        job = self.jobs.get(job_id)
        if job is None or not 0 <= index < len(job.chunks):
            return None
        return job.chunks[index]

    def _live(self, node: str, job_id: str, index: int, attempt: int) -> tuple[Job, Chunk] | None:
        """The job and chunk a report is about, or None when the report is stale."""
        chunk = self._chunk(job_id, index)
        if (
            chunk is None
            or chunk.state != "assigned"
            or chunk.node != node
            or chunk.attempt != attempt
        ):
            return None
        return self.jobs[job_id], chunk

    def _all_slots_long(self, node: Node) -> bool:
        """Whether every slot of ``node`` holds a render known long (``_judge_by_clock``):
        a chunk held ahead there would wait as long as the shortest of them."""
        long = self._long_on.get(node.name)
        if not long:
            return False
        long &= node.running
        if not long:
            del self._long_on[node.name]
        return len(long) >= node.slots

    def _job(self, job_id: str) -> Job:
        job = self.jobs.get(job_id)
        if job is None:
            raise SchedulerError(f"unknown job {cut(job_id)}")
        return job

    def _holding_of(self, key: tuple[str, int, int]) -> Holding:
        """What an attempt that holds a slot was given (from its record), after a load."""
        job = self.jobs.get(key[0])
        if job is None or not 0 <= key[1] < len(job.chunks):
            return Holding()
        for attempt in reversed(job.chunks.look(key[1]).attempts):
            if attempt.number == key[2]:
                return Holding(attempt.gpus, attempt.limits)
        return Holding()

    def _dependencies_done(self, job: Job) -> bool:
        """Whole-job ``after``: each job it waits on is done (or gone). Frame by frame,
        each chunk is checked on its own (``frame_waits``)."""
        if job.spec.after_frames:
            return True
        return all(self.jobs[dep].state == "done" for dep in job.spec.after if dep in self.jobs)

    def _fits(self, job: Job, tags: set[str], name: str, now: float) -> bool:
        """Whether the node may start a chunk of ``job`` (``tags``: the job's) on a free slot."""
        spec = job.spec
        node = self.nodes[name]
        if not tags.issubset(node.tags) or is_blocked(job, name, now):
            return False
        if (needs := tokens_needed(job)) and not needs.issubset(node.tokens):
            return False  # its agent would fail every attempt with "unknown token"
        if spec.gpus:
            if not self.resources.has_gpus(node, spec.gpus, spec.gpu_memory):
                return False
        elif node.gpu_only:
            return False
        return not spec.limits or self.resources.node_allows(name, spec.limits)

    def positions(self) -> dict[str, int]:
        """Job id -> rank in dispatch order among active jobs (archived jobs absent)."""
        if self._positions is None:
            self._positions = dispatch_order.positions(self.jobs.values())
        return self._positions

    def _order_changed(self, changes: Changes, before: dict[str, int]) -> None:
        """The order may have changed: every job whose position moved goes into ``changes``."""
        self._positions = None
        after = self.positions()
        for job_id in before.keys() | after.keys():
            if before.get(job_id) != after.get(job_id) and job_id in self.jobs:
                changes.jobs.add(job_id)
