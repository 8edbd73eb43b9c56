"""The farm's rules as a pure state machine (sans-I/O).

Every method takes an event and the current time and returns ``Changes``:
what changed, what to dispatch, what to kill, what to log. It never touches
a socket, a file or the clock, so it is tested without any of them.

INTERFACE CONTRACT (the leader's I/O layer codes against exactly this).

The rules live in small modules; this class holds the records and routes
events to them:

- ``submission``: checking a spec, cutting it into chunks (pre, scouts, render, post)
- ``dispatch_order``: priority then queue order, moves within a group
- ``job_progress``: which chunks may run, and the job state they imply
- ``transitions``: state changes that record what they touched
- ``retries``: backoff and node blocks; ``timeouts``: limits per chunk, auto timeout
- ``actions``: operator actions; ``estimates`` and ``views``: what consoles show

Choices worth knowing:

- Archived jobs dispatch nothing (chunks already running finish).
- A failed or cancelled ``after`` dependency keeps its dependants waiting
  (state ``queued``, and their reason says on what); deleting it holds them,
  and un-holding one drops the dependency (``frame_waits`` says the same for
  dependencies frame by frame).
- GPUs and limit units are held for as long as the attempt holds its slot
  (``resources``).
- A job is not failed merely because every node is blocked for it: the blocks
  expire (``tick``) and it renders again.
- ``node_lost`` also emits kills for the lost node's chunks, in case its link
  is still half alive: the chunk will run elsewhere, never on two nodes.

Cost per event: O(the chunk it touches), O(log jobs) to keep the dispatch
index. Each job keeps counters (``model.Tally``) that every chunk change
adjusts; views, gates and job states read those. After each event the jobs
and nodes its ``Changes`` names are re-filed in the dispatch index and the
free-slot table (``_noting``), so ``dispatch`` without a free slot, or with
nothing new since its last pass, costs nothing. Reads of a whole job
(``job_detail``: every chunk and frame) stay O(frames).
"""

from __future__ import annotations

import heapq
import math
from bisect import bisect_left, bisect_right, insort
from collections import Counter
from collections.abc import Callable, Iterable
from itertools import groupby
from typing import Concatenate, ParamSpec, TypeVar

import msgspec

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
    LimitView,
    MoveWhere,
    NodeView,
)
from server import actions, dispatch_order, outcomes, reasons, views
from server.assignments import build_assignment
from server.estimates import SlotCensus
from server.frame_states import tally_of, tracking
from server.frame_waits import PARK_BUDGET, FrameWaits, blocker
from server.job_progress import PENDING, STAGES, count, gate_open, gates
from server.model import NO_FRAMES, Assignment, Attempt, Changes, Chunk, Job, Node, Notification
from server.prefetch import (
    ASKED_BACK_KEPT,
    FIRST_LOOKED_AT,
    FIRST_TAKING_BACK,
    PREFETCH_BELOW,
    STARTABLE,
    TAKE_BACK_EVERY,
    take_back,
    takes_ahead,
    withdraw_waiting,
)
from server.resources import Holding, Limit, Resources
from server.retries import OPERATOR_BLOCK, expire_blocks, is_blocked
from server.scheduler_config import SchedulerConfig, SchedulerError
from server.submission import Prepared, prepare, validate, validate_patch
from server.timeouts import chunk_timeouts
from server.transitions import (
    discard_staged,
    refresh_job,
    set_chunk_state,
    set_job_state,
    settle_stopped,
)

__all__ = ["NodeHeld", "Scheduler", "SchedulerConfig", "SchedulerError"]


def _shape(node: Node) -> tuple[object, ...]:
    """What a waiting job's reason and the slot census read of a node."""
    return (
        node.online,
        node.enabled,
        node.slots,
        tuple(node.tags),
        tuple((gpu.index, gpu.memory) for gpu in node.gpus),
        node.gpu_only,
    )


class NodeHeld(SchedulerError):
    """A hello for a node name another agent still holds: try again later."""


_P = ParamSpec("_P")
_R = TypeVar("_R")


def _place(
    index: list[tuple[int, float, str]],
    placed: dict[str, tuple[int, float, str]],
    job_id: str,
    key: tuple[int, float, str] | None,
) -> None:
    """Move ``job_id`` to ``key`` in a sorted dispatch index (None: out of it): O(log jobs)."""
    old = placed.get(job_id)
    if old == key:
        return
    if old is not None:
        del index[bisect_left(index, old)]
        del placed[job_id]
    if key is not None:
        insort(index, key)
        placed[job_id] = key


def _noting(
    method: Callable[Concatenate[Scheduler, _P], _R],
) -> Callable[Concatenate[Scheduler, _P], _R]:
    """After an event, bring the dispatch index and the free slots up to date with its Changes.

    Every change to a job, chunk or node is named in ``Changes`` (the store
    relies on it too), so this touches only what the event touched.
    """

    def noted(self: Scheduler, /, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        result = method(self, *args, **kwargs)
        changes = result[0] if isinstance(result, tuple) else result
        if isinstance(changes, Changes):
            self._note(changes)
        return result

    noted.__name__ = method.__name__
    noted.__qualname__ = method.__qualname__
    noted.__doc__ = method.__doc__
    return noted


# Chunks one dispatch pass assigns at most; the leader runs the next pass at once, as a
# group of its own, so an idle farm of hundreds of nodes is filled in several turns of
# the event loop, not one long one (2,400 assignments: ~35 ms of the pass alone, the
# same again to commit and announce them). With 300 agents starting at once, passes of
# 512 made turns of 45-65 ms; in steady state a pass assigns 40-100 (scale.py c1).
ASSIGN_BUDGET = 256


class _NodePicker:
    """For one job in one dispatch pass: the eligible node with the most free slots
    (ties: by name), in O(log n) a pick.

    Eligible: ``fits(name)`` (``Scheduler._fits``: its tags, blocks, GPUs, limits).
    A scan of every free node for each chunk made a pass O(chunks × nodes): 121 ms
    for 2,400 assignments to an idle farm of 600 nodes. Within a pass slots are only
    taken (``free`` only decreases) and a node that does not fit the job never comes
    to fit it, so a heap whose entries may overstate a node's room is put right
    lazily, and a node that did not fit is dropped.
    """

    __slots__ = ("_fits", "_free", "_heap")

    def __init__(self, free: dict[str, int], fits: Callable[[str], bool]) -> None:
        self._free = free
        self._fits = fits
        self._heap = [(-room, name) for name, room in free.items()]
        heapq.heapify(self._heap)

    def pick(self) -> str | None:
        heap, free = self._heap, self._free
        while heap:
            stated, name = heap[0]
            room = free.get(name, 0)
            if room <= 0:
                heapq.heappop(heap)
            elif -stated != room:
                heapq.heapreplace(heap, (-room, name))  # it has less room now: down the heap
            elif not self._fits(name):
                heapq.heappop(heap)
            else:
                return name
        return None


class Scheduler:
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
        # Chunks held ahead that were asked back for a job before theirs (asked once).
        self._asked_back: set[tuple[str, int, int]] = set()
        # When each job last took chunks back (job id -> time), for TAKE_BACK_EVERY.
        self._took_back_at: dict[str, float] = {}
        self._ahead: list[tuple[int, float, str]] = []
        self._aheaded: dict[str, tuple[int, float, str]] = {}
        # Each node's (online, enabled, slots, tags) as the census last counted it.
        self._shapes: dict[str, tuple[object, ...]] = {}
        self._census = SlotCensus(self.nodes)
        self._census_forgotten = False
        self._reasons: reasons.Farm | None = None
        # Something changed since the last full dispatch pass, or time may have
        # made a chunk dispatchable (a retry due, a node block over) at ``_wakeup``.
        self._dirty = True
        self._wakeup = math.inf
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

    # --- loading (leader start-up) -------------------------------------------
    def load(self, jobs: list[Job], nodes: list[Node], now: float) -> Changes:
        """Adopt the store's picture after a restart.

        All nodes start offline with ``last_seen=now``. Each keeps the slots
        its attempts held (running, or told to stop and not yet confirmed
        dead): a node that reconnects settles them (``node_connected``), one
        that does not is declared lost after ``node_timeout`` (``tick``), by
        which time its lease has expired and its supervisors killed the trees.
        """
        changes = Changes()
        self.jobs = {}
        self.nodes = {}
        self._positions = None
        self.submit_keys = {}
        for node in nodes:
            node.online = False
            node.last_seen = now
            self.nodes[node.name] = node
        for job in jobs:
            self._adopt(job)
        for job in jobs:
            orphaned = False
            for chunk in job.chunks.made():  # an untouched chunk holds no slot
                if chunk.stopping_node is not None:
                    holder = self.nodes.get(chunk.stopping_node)
                    if holder is None:  # a node the store no longer knows: nothing to fence
                        chunk.stopping_node = None
                        chunk.stopping_attempt = 0
                        changes.chunks.add((job.id, chunk.index))
                    else:
                        holder.running.add((job.id, chunk.index, chunk.stopping_attempt))
                if chunk.state != "assigned":
                    continue
                owner = self.nodes.get(chunk.node) if chunk.node is not None else None
                if owner is None:
                    outcomes.preempt(
                        job, chunk, self.nodes, changes, now, "lost", "its node is unknown"
                    )
                    orphaned = True
                else:
                    owner.running.add((job.id, chunk.index, chunk.attempt))
            if orphaned:
                refresh_job(job, changes, now)
        self._rebuild_indexes()
        return changes

    def reload(self, jobs: list[Job], nodes: list[Node], now: float) -> None:
        """Go back to what the store holds after a commit failed (nothing else changed).

        Jobs and the nodes' durable fields come from the store; whether a node
        is connected, when it was last heard from and its readings are the
        live links' business and stay as they are.
        """
        live = self.nodes
        self.load(jobs, nodes, now)
        for name, node in self.nodes.items():
            before = live.get(name)
            if before is not None:
                node.online = before.online
                node.last_seen = before.last_seen
                node.cpu_percent = before.cpu_percent
                node.memory_percent = before.memory_percent
        self._rebuild_indexes()

    def _adopt(self, job: Job) -> None:
        self.jobs[job.id] = job
        if job.submit_key is not None:
            self.submit_keys[(job.owner, job.submit_key)] = job.id

    def id_in_use(self, job_id: str) -> bool:
        """Whether a new job may not take this id: a job has it, or a deleted job's
        attempt still holds a slot (its report must not be taken for the new job's)."""
        if job_id in self.jobs:
            return True
        return any(key[0] == job_id for node in self.nodes.values() for key in node.running)

    def job_for_key(self, owner: str, key: str) -> str | None:
        """The job ``owner`` submitted with idempotency key ``key``, if it still exists."""
        job_id = self.submit_keys.get((owner, key))
        return job_id if job_id is not None and job_id in self.jobs else None

    # --- submission ------------------------------------------------------------
    @_noting
    def submit(
        self,
        job_id: str,
        spec: JobSpec,
        owner: str,
        now: float,
        key: str | None = None,
        prepared: Prepared | None = None,
        digest: str | None = None,
    ) -> Changes:
        """Validate and add a job (chunks, scout chunks, pre/post chunks).

        SchedulerError (and no change) on bad input. ``key`` is the submitter's
        idempotency key (see ``job_for_key``), ``digest`` what the request
        asked for. ``prepared``: what ``prepare`` made of ``spec`` for this job
        id beforehand (in a thread).
        """
        if prepared is None:
            prepared = prepare(job_id, spec)
        validate(job_id, prepared.spec, self.jobs)
        spec = prepared.spec
        before = self.positions()
        job = Job(
            id=job_id,
            spec=spec,
            owner=owner,
            state="queued",
            priority=spec.priority,
            queue_key=dispatch_order.next_key(self.jobs.values()),
            created=now,
            submit_key=key,
            submit_digest=digest,
        )
        job.chunks = prepared.chunks
        self._adopt(job)
        changes = Changes()
        # The job names its chunks: all new, untouched (the store rebuilds them from the
        # spec, no console watches them yet), so a million of them cost no million names.
        changes.jobs.add(job_id)
        renders = sum(s.count for s in job.chunks.layout.segments if s.kind == "render")
        changes.event(
            now,
            "info",
            f"submitted: {prepared.frames} frames in {renders} chunks, priority {spec.priority}",
            job_id,
            owner,
        )
        self._order_changed(changes, before)
        return changes

    # --- nodes -----------------------------------------------------------------
    @_noting
    def node_connected(self, hello: AgentHello, now: float) -> tuple[Changes, list[ChunkRef]]:
        """A node (re)registered. Returns the attempts it runs that it must kill.

        Every attempt that holds a slot here is settled against what the agent
        says it still runs and what it finished without an acknowledgement yet:

        - running, and still the chunk's current attempt here: it goes on;
        - running, but not wanted any more (told to stop, or unknown): it keeps
          its slot and is killed again (a kill sent while the link was down is lost);
        - finished but not acknowledged: it keeps its slot; the report follows
          from the agent's outbox and is credited then, never rendered again;
        - neither: the agent no longer has it (restarted without its state).
          A current attempt is preempted (no retry used); a stopping one is over.
        """
        changes = Changes()
        node = self.nodes.get(hello.name)
        if node is None:
            node = Node(name=hello.name, slots=hello.slots)
            self.nodes[hello.name] = node
        if node.agent_id != hello.agent_id and (node.online or node.running):
            # Another agent holds the name: its link is open, or trees it ran may
            # still be alive (it died a moment ago). Only the agent that ran them
            # can say they are gone, else the node must be lost first.
            raise NodeHeld(
                f"node name {node.name} is held by another agent (id {node.agent_id or '?'}) "
                f"until it is lost ({self.config.node_timeout:g} s of silence); "
                "is another machine using the same name?"
            )
        node.agent_id = hello.agent_id
        node.slots = hello.slots
        node.tags = list(hello.tags)
        node.cpu_count = hello.cpu_count
        node.memory_total = hello.memory_total
        node.version = hello.version
        node.os = hello.os
        node.gpus = list(hello.gpus)
        node.gpu_only = hello.gpu_only
        # Ahead of slots it has: a node of none (a hand-made hello) would sit on them.
        node.prefetch = hello.prefetch if hello.slots > 0 else 0
        node.online = True
        node.last_seen = now
        changes.nodes.add(node.name)
        stale: list[ChunkRef] = []
        running = {(ref.job_id, ref.chunk, ref.attempt) for ref in hello.running}
        reported = running | {(ref.job_id, ref.chunk, ref.attempt) for ref in hello.finished}
        for ref in hello.running:
            key = (ref.job_id, ref.chunk, ref.attempt)
            if not self._is_current(node.name, key):
                # Unwanted: it holds a slot (and its GPUs and licences, as its record
                # says) until the agent confirms it is dead.
                if key not in node.running:
                    node.running.add(key)
                    self.resources.hold(node.name, key, self._holding_of(key))
                stale.append(ref)
        for key in sorted(node.running - reported):
            job_id, index, attempt = key
            chunk = self._chunk(job_id, index)
            if chunk is not None and self._is_current(node.name, key):
                job = self.jobs[job_id]
                outcomes.preempt(
                    job, chunk, self.nodes, changes, now, "lost", "node came back without it"
                )
                refresh_job(job, changes, now)
            else:
                settle_stopped(node, key, chunk, changes)
        changes.event(now, "info", f"node {node.name} connected ({node.slots} slots)", None, None)
        return changes, stale

    def _is_current(self, node: str, key: tuple[str, int, int]) -> bool:
        """Whether ``key`` is its chunk's current attempt, assigned to ``node``."""
        return self._live(node, *key) is not None

    @_noting
    def node_heartbeat(self, name: str, cpu: float, memory: float, now: float) -> Changes:
        """Live readings of an online node. A lost one is not brought back by its
        heartbeat (its link stayed open while it was frozen): only a hello, which
        settles what its agent still runs against the chunks that moved."""
        changes = Changes()
        node = self.nodes.get(name)
        if node is None or not node.online:
            return changes
        node.cpu_percent = cpu
        node.memory_percent = memory
        node.last_seen = now
        # Live readings only: a heartbeat commits nothing.
        changes.readings.add(name)
        return changes

    def node_heard(self, name: str, now: float) -> None:
        """A frame of an online node's agent arrived: it is alive, whatever the frame says
        and however long it waits to be read. Like a heartbeat, it brings no lost node
        back and commits nothing."""
        node = self.nodes.get(name)
        if node is not None and node.online and now > node.last_seen:
            node.last_seen = now

    @_noting
    def node_disconnected(self, name: str, now: float) -> Changes:
        """Its link closed: dispatch nothing more to it.

        Its chunks keep their lease: the agent may reconnect and report them
        running. ``tick`` declares the node lost after ``node_timeout`` of
        silence, and only then are its chunks requeued.
        """
        changes = Changes()
        node = self.nodes.get(name)
        if node is None or not node.online:
            return changes
        node.online = False
        changes.readings.add(name)  # online is the link's business: nothing to commit
        changes.event(now, "warn", f"node {name} disconnected", None, None)
        return changes

    @_noting
    def node_lost(self, name: str, now: float) -> Changes:
        """Heartbeats stopped for ``node_timeout``: its chunks become preempted and requeue.

        By now the node's lease has expired, so its supervisors have killed
        every tree it ran: each slot is free and each chunk may run elsewhere.
        No retry is used: the farm lost them, the job did nothing wrong.
        """
        changes = Changes()
        node = self.nodes.get(name)
        if node is None:
            return changes
        node.online = False
        changes.nodes.add(name)
        lost = 0
        for key in sorted(node.running):
            job_id, index, _attempt = key
            chunk = self._chunk(job_id, index)
            if chunk is not None and self._is_current(name, key):
                job = self.jobs[job_id]
                outcomes.preempt(
                    job, chunk, self.nodes, changes, now, "lost", f"node {name} lost", lost=True
                )
                refresh_job(job, changes, now)
                lost += 1
            else:
                settle_stopped(node, key, chunk, changes)
        node.running = set()
        changes.event(now, "warn", f"node {name} lost ({lost} chunks requeued)", None, None)
        return changes

    @_noting
    def set_node_enabled(self, name: str, enabled: bool, actor: str, now: float) -> Changes:
        """Disabled nodes get no new chunks; what runs there finishes."""
        node = self.nodes.get(name)
        if node is None:
            raise SchedulerError(f"unknown node {name}")
        changes = Changes()
        if node.enabled != enabled:
            node.enabled = enabled
            changes.nodes.add(name)
            word = "enabled" if enabled else "disabled"
            changes.event(now, "info", f"node {name} {word}", None, actor)
            if not enabled:
                why = f"not started: node {name} was disabled by {actor}"
                for job_id in sorted({job_id for job_id, _, _ in node.running}):
                    job = self.jobs.get(job_id)
                    if job is not None:
                        withdraw_waiting(job, self.nodes, changes, why, only=name)
        return changes

    @_noting
    def block_node(self, job_id: str, name: str, blocked: bool, actor: str, now: float) -> Changes:
        """An operator keeps a node off one job (until unblocked), or lets it back.

        What runs there now finishes; letting a node back also forgets the
        errors that counted towards an automatic block.
        """
        job = self._job(job_id)
        if name not in self.nodes:
            raise SchedulerError(f"unknown node {name}")
        changes = Changes()
        was = is_blocked(job, name, now)
        if blocked:
            job.blocked[name] = now + OPERATOR_BLOCK
            withdraw_waiting(job, self.nodes, changes, f"not started: {actor} blocked {name}", name)
        else:
            job.blocked.pop(name, None)
            job.node_errors.pop(name, None)
        changes.jobs.add(job_id)
        if was != blocked:
            word = "blocked for this job" if blocked else "may render this job again"
            changes.event(now, "info", f"node {name} {word}", job_id, actor)
        return changes

    # --- dispatch --------------------------------------------------------------
    def _rebuild_indexes(self) -> None:
        """The dispatch index and the free slots from scratch (start-up, reload)."""
        self._index = []
        self._indexed = {}
        self._free = {}
        self._spare = {}
        self._ahead = []
        self._aheaded = {}
        self._shapes = {}
        self._census = SlotCensus(self.nodes)
        self.frame_waits.clear()
        self.resources.clear()
        for node in self.nodes.values():
            for key in node.running:
                self.resources.hold(node.name, key, self._holding_of(key))
        for name in self.nodes:
            self._renode(name)
        for job_id in self.jobs:
            self._reindex(job_id)
        self._dirty = True
        self._wakeup = math.inf

    def _note(self, changes: Changes, *, dirty: bool = True) -> None:
        """Update the index and free slots for what ``changes`` names (see ``_noting``)."""
        for job_id in changes.jobs | changes.removed:
            self._reindex(job_id)
        for job_id, index in self.frame_waits.released(changes, self.jobs):
            job = self.jobs.get(job_id)
            if job is not None:
                heapq.heappush(tally_of(job).ready, index)
                self._dirty = True
        more_room = False
        reshaped = False
        for name in changes.nodes | changes.readings:
            more_room |= self._renode(name)
            reshaped |= self._census_forgotten
        if reshaped:
            # What a waiting job's reason says may depend on that node ("no node
            # has tag gpu", "every node it may use is offline").
            changes.jobs.update(self._indexed)
        if dirty and (
            more_room or changes.jobs or changes.chunks or changes.removed or changes.nodes
        ):
            self._dirty = True

    def _reindex(self, job_id: str) -> None:
        """Put the job where it belongs in the dispatch index (or take it out): O(log jobs)."""
        job = self.jobs.get(job_id)
        key: tuple[int, float, str] | None = None
        if (
            job is not None
            and not job.archived
            and job.state in ("queued", "rendering")
            and count(tally_of(job), STAGES, PENDING) > 0
        ):
            key = dispatch_order.dispatch_key(job)
        _place(self._index, self._indexed, job_id, key)
        ahead = key if key is not None and job is not None and takes_ahead(job) else None
        _place(self._ahead, self._aheaded, job_id, ahead)

    def _renode(self, name: str) -> bool:
        """Recount the node's free slots; True when it has more than before."""
        node = self.nodes.get(name)
        free = spare = 0
        if node is not None and node.online and node.enabled:
            free = max(0, node.slots - len(node.running))
            spare = min(node.prefetch, max(0, node.slots + node.prefetch - len(node.running)))
        shape = None if node is None else _shape(node)
        self._census_forgotten = self._shapes.get(name) != shape
        if self._census_forgotten:
            self._census.forget()
            self._reasons = None
            if shape is None:
                self._shapes.pop(name, None)
            else:
                self._shapes[name] = shape
        if node is None:
            self.resources.forget_node(name)
        else:
            self.resources.recount(node)
        before = self._free.get(name, 0) + self._spare.get(name, 0)
        if free:
            self._free[name] = free
        else:
            self._free.pop(name, None)
        if spare:
            self._spare[name] = spare
        else:
            self._spare.pop(name, None)
        return free + spare > before

    def dispatch_index(self) -> list[tuple[int, float, str]]:
        """(priority, queue key, job id) of the jobs that may dispatch, in dispatch order."""
        return list(self._index)

    def dispatch(self, now: float) -> Changes:
        """Fill every free slot on every online enabled node, in dispatch order.

        Order: priority ascending, then queue_key. Honours pause/hold, scout
        frames, ``after`` dependencies, max_running, tags, node blocks,
        waiting-retry times and pre/post-job chunks. Each assignment bumps the
        chunk's attempt number and records an Attempt.

        Cost: nothing at all without a free slot, or when nothing changed since
        the last pass and no retry or node block is due; otherwise the jobs of
        the dispatch index in order until the slots are full, each taking its
        chunks from its own queue of waiting chunks.
        """
        changes = Changes()
        self._clock_seen = now
        if not (self._free or self._spare) or (not self._dirty and now < self._wakeup):
            return changes
        free = dict(self._free)
        wakeup = math.inf
        self._parks_left = PARK_BUDGET
        self._assigns_left = ASSIGN_BUDGET
        self._dirty_after = False
        if self.config.fair_share:
            wakeup = self._dispatch_shared(free, changes, now)
        for key in self._index:
            if not free or self._assigns_left <= 0:
                break
            job = self.jobs[key[2]]
            if not self._dependencies_done(job):
                continue
            wakeup = min(wakeup, self._dispatch_job(job, free, changes, now)[0])
        if self._spare and self._ahead and self._assigns_left > 0:
            wakeup = min(wakeup, self._dispatch_ahead(free, changes, now))
        if self._assigns_left <= 0:
            self._dirty_after = True  # the next pass goes on from here
        self._dirty = self.cut_short = self._dirty_after
        self._wakeup = wakeup
        self._note(changes, dirty=False)
        return changes

    def _dispatch_ahead(self, free: dict[str, int], changes: Changes, now: float) -> float:
        """Chunks of short-chunk jobs, in dispatch order, to the nodes' room ahead of a slot.

        After the pass over free slots (``free``: what it left), so a chunk is
        taken ahead only where no free slot could start it now. A job that
        comes first in dispatch order but may not wait ahead (its chunks are
        long, or none has ended yet: a job just submitted) keeps the room of
        every node it could run on empty: that node's next free slot is its.
        Filled from the short jobs behind it, the room was refilled at every
        chunk's end and a new job of a higher priority never got a slot there
        until the short job was over.
        """
        room = {name: free.get(name, 0) + spare for name, spare in self._spare.items()}
        wakeup = math.inf
        ahead = self._aheaded
        for key in self._index:
            if not room or self._assigns_left <= 0:
                break
            if key[2] not in ahead and key > self._ahead[-1]:
                break  # no short job behind it: nothing more may wait ahead
            job = self.jobs[key[2]]
            if not self._dependencies_done(job):
                continue
            if key[2] in ahead:
                # Not to a node that failed one of its chunks: the chunk held there
                # would start as the failed one exits, before the leader could block
                # the node (``block_after``) and take it back.
                kept = {name: room.pop(name) for name in job.node_errors if name in room}
                wakeup = min(wakeup, self._dispatch_job(job, room, changes, now)[0])
                room.update(kept)
            else:
                self._keep_room_for(job, room, now)
        return wakeup

    def _keep_room_for(self, job: Job, room: dict[str, int], now: float) -> None:
        """Take out of ``room`` the nodes where ``job`` could start a chunk once a slot frees."""
        tally = tally_of(job)
        if not tally.ready:
            return  # its waiting chunks are retries not due yet
        if job.spec.max_running and len(tally.running) >= job.spec.max_running:
            return  # it can start nothing more anywhere now
        tags = set(job.spec.tags)
        for name in [name for name in room if self._fits(job, tags, name, now)]:
            del room[name]

    def _dispatch_shared(self, free: dict[str, int], changes: Changes, now: float) -> float:
        """Fair share: within each priority group, the owner running fewest chunks goes next.

        One chunk at a time: the owner with the fewest chunks running at that
        priority (ties: whose job comes first in queue order) starts the next
        chunk of its first job that can start one. Costs a count of the running
        attempts per pass; the strict pass that follows fills whatever is left.
        """
        running: Counter[tuple[int, str]] = Counter()
        for node in self.nodes.values():
            for job_id, _, _ in node.running:
                job = self.jobs.get(job_id)
                if job is not None:
                    running[(job.priority, job.owner)] += 1
        wakeup = math.inf
        for priority, keys in groupby(self._index, key=lambda key: key[0]):
            if not free:
                break
            queues: dict[str, list[Job]] = {}
            for key in keys:
                job = self.jobs[key[2]]
                if self._dependencies_done(job):
                    queues.setdefault(job.owner, []).append(job)
            turns = [(running[(priority, owner)], n, owner) for n, owner in enumerate(queues)]
            heapq.heapify(turns)
            while turns and free and self._assigns_left > 0:
                count, n, owner = heapq.heappop(turns)
                queue = queues[owner]
                while queue:
                    due, started = self._dispatch_job(queue[0], free, changes, now, most=1)
                    wakeup = min(wakeup, due)
                    if started:
                        heapq.heappush(turns, (count + 1, n, owner))
                        break
                    queue.pop(0)  # it can start nothing more now: the owner's next job
        return wakeup

    def _dispatch_job(
        self, job: Job, free: dict[str, int], changes: Changes, now: float, most: int = 0
    ) -> tuple[float, int]:
        """Assign the job's waiting chunks, in chunk order, to ``free`` slots (``most``: at most).

        Returns when one of the chunks it could not start may become startable by
        the clock alone (a retry due, a node block over), or infinity; and how
        many it started.
        """
        tally = tally_of(job)
        while tally.retry and tally.retry[0][0] <= now:
            heapq.heappush(tally.ready, heapq.heappop(tally.retry)[1])
        limit = job.spec.max_running
        wanted = job.spec.limits
        by_frame = job.spec.after_frames
        g = gates(job)
        aside: list[int] = []
        last = -1
        started = 0
        wakeup = math.inf
        ready = tally.ready
        picker: _NodePicker | None = None
        while ready:
            if limit and len(tally.running) >= limit:
                break
            if self._assigns_left <= 0:
                break  # the pass's budget: the next pass goes on (``dispatch``)
            if wanted and self.resources.exhausted(wanted) is not None:
                break  # no unit of a limit is free: a chunk's end frees one
            index = ready[0]
            chunk = job.chunks[index]
            if index == last or chunk.state not in PENDING:
                heapq.heappop(ready)  # a duplicate, or it left the queue since
                continue
            if not gate_open(job, g, chunk):
                break  # stages run in chunk order: every later chunk waits too
            heapq.heappop(ready)
            last = index
            if chunk.stopping_node is not None:
                aside.append(index)  # its previous attempt may still be alive
                continue
            if chunk.state == "waiting-retry" and (chunk.retry_at or 0.0) > now:
                heapq.heappush(tally.retry, (chunk.retry_at or 0.0, index))
                continue
            if by_frame:
                if self._parks_left <= 0:
                    heapq.heappush(ready, index)
                    self._dirty_after = True  # the next pass goes on from here
                    break
                resume = self.frame_waits.resume.pop((job.id, index), None)
                if (blocked := blocker(job, chunk, self.jobs, resume)) is not None:
                    self.frame_waits.park(job.id, index, blocked)
                    self._parks_left -= 1
                    continue
            if chunk.staged_on is not None and self._syncable(chunk):
                if chunk.staged_on not in free:
                    aside.append(index)  # wait for the node that holds its staged output
                    continue
                node: str | None = chunk.staged_on
            else:
                if picker is None:
                    picker = _NodePicker(free, self._fitter(job, now))
                node = picker.pick()
            if node is None:
                aside.append(index)
                ends = [until for until in job.blocked.values() if until > now]
                wakeup = min(ends, default=wakeup)
                break
            self._assign(job, chunk, node, changes, now)
            free[node] -= 1
            if free[node] == 0:
                del free[node]
            started += 1
            if started == most:
                break
        for index in aside:
            heapq.heappush(ready, index)
        if tally.retry:
            wakeup = min(wakeup, tally.retry[0][0])
        if started:
            refresh_job(job, changes, now)
        return wakeup, started

    def _fitter(self, job: Job, now: float) -> Callable[[str], bool]:
        tags = set(job.spec.tags)
        return lambda name: self._fits(job, tags, name, now)

    def _fits(self, job: Job, tags: set[str], name: str, now: float) -> bool:
        """Whether the node may start a chunk of ``job`` (``tags``: the job's) on a free slot."""
        spec = job.spec
        node = self.nodes[name]
        if not tags.issubset(node.tags) or is_blocked(job, name, now):
            return False
        if spec.gpus:
            if not self.resources.has_gpus(node, spec.gpus, spec.gpu_memory):
                return False
        elif node.gpu_only:
            return False
        return not spec.limits or self.resources.node_allows(name, spec.limits)

    def _syncable(self, chunk: Chunk) -> bool:
        """Whether the node holding the chunk's staged output can copy it again now."""
        holder = self.nodes.get(chunk.staged_on or "")
        return holder is not None and holder.online and holder.enabled

    def _assign(self, job: Job, chunk: Chunk, node: str, changes: Changes, now: float) -> None:
        self._assigns_left -= 1
        sync_from = 0
        if chunk.staged_on == node:
            sync_from = chunk.staged_attempt
        elif chunk.staged_on is not None:
            discard_staged(chunk, changes)
        chunk.staged_on = None
        chunk.staged_attempt = 0
        chunk.attempt += 1
        chunk.staged = NO_FRAMES
        chunk.done = ()
        set_chunk_state(job, chunk, "assigned", changes)
        chunk.node = node
        chunk.started = now
        chunk.finished = None
        chunk.render_time = None
        holder = self.nodes[node]
        holding = Holding()
        if not sync_from:  # a copy of staged output renders nothing: it holds no GPU nor licence
            gpus = self.resources.free_gpus(holder, job.spec.gpus, job.spec.gpu_memory) or ()
            holding = Holding(gpus if job.spec.gpus else (), tuple(job.spec.limits))
        chunk.attempts = (
            *chunk.attempts,
            Attempt(
                number=chunk.attempt,
                node=node,
                started=now,
                gpus=holding.gpus,
                limits=holding.limits,
            ),
        )
        key = (job.id, chunk.index, chunk.attempt)
        holder.running.add(key)
        self.resources.hold(node, key, holding)
        changes.nodes.add(node)
        if job.started is None:
            job.started = now
        message = build_assignment(
            job,
            chunk,
            chunk_timeouts(job, chunk, self.config),
            path_map=self.config.path_map,
            node_os=holder.os,
            # A chunk that asked for no GPU on a GPU node sees none: none is shared.
            gpus=list(holding.gpus) if holder.gpus and not sync_from else None,
            sync_from=sync_from,
        )
        changes.assignments.append(Assignment(node=node, message=message))
        text = f"chunk {chunk.index} attempt {chunk.attempt} -> {node}"
        if holding.gpus:
            text += f" (GPU {','.join(map(str, holding.gpus))})"
        if sync_from:
            text += f" (copies the output staged by attempt {sync_from}, no render)"
        changes.event(now, "info", text, job.id, None)

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

    # --- reports from agents (stale attempts are ignored: return empty Changes) --
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

    @_noting
    def chunk_started(
        self, node: str, job_id: str, chunk: int, attempt: int, now: float
    ) -> Changes:
        changes = Changes()
        if self._live(node, job_id, chunk, attempt) is None:
            return changes
        # Only an event: nothing the store keeps or a console shows changes (the chunk
        # was "assigned" since its dispatch), so its row is not written again.
        changes.event(
            now, "info", f"chunk {chunk} attempt {attempt} started on {node}", job_id, None
        )
        return changes

    @_noting
    def chunk_alive(self, node: str, job_id: str, chunk: int, attempt: int, now: float) -> Changes:
        """First sign of life (output line, progress or a frame)."""
        changes = Changes()
        live = self._live(node, job_id, chunk, attempt)
        if live is None:
            return changes
        record = live[1].attempts[-1]
        if not record.alive:
            record.alive = True
            changes.chunks.add((job_id, chunk))
        return changes

    @_noting
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
        changes = Changes()
        live = self._live(node, job_id, chunk, attempt)
        if live is None:
            return changes
        job, record = live
        mine = set(frames).intersection(record.frames)
        with tracking(changes, job, record):
            if staged:
                record.staged |= mine
            else:
                written = mine.union(record.done)
                record.done = tuple(frame for frame in record.frames if frame in written)
        record.attempts[-1].alive = True
        return changes

    @_noting
    def chunk_timed_out(
        self,
        node: str,
        job_id: str,
        chunk: int,
        attempt: int,
        kind: str,
        elapsed: float,
        now: float,
    ) -> Changes:
        """on_timeout=notify: the chunk runs on; the owner is told."""
        changes = Changes()
        if self._live(node, job_id, chunk, attempt) is None:
            return changes
        text = (
            f"chunk {chunk} attempt {attempt} on {node} passed its {kind.replace('_', ' ')} "
            f"limit ({elapsed:.0f}s); it keeps running"
        )
        changes.event(now, "warn", text, job_id, None)
        changes.notifications.append(Notification(job_id=job_id, kind="timeout", text=text))
        return changes

    @_noting
    def chunk_finished(self, node: str, report: ChunkFinished, now: float) -> Changes:
        """Success, failure with retry/backoff/blocklist, or the job's on_timeout response.

        A report about an attempt that is no longer current still says its tree
        is gone: the slot it held is freed, and its chunk may start again.
        """
        changes = Changes()
        live = self._live(node, report.job_id, report.chunk, report.attempt)
        if live is None:
            holder = self.nodes.get(node)
            key = (report.job_id, report.chunk, report.attempt)
            chunk = self._chunk(report.job_id, report.chunk)
            if holder is not None and settle_stopped(holder, key, chunk, changes):
                changes.event(
                    now,
                    "info",
                    f"chunk {report.chunk} attempt {report.attempt} stopped on {node}",
                    report.job_id if report.job_id in self.jobs else None,
                    None,
                )
            return changes
        job, chunk = live
        label = f"chunk {chunk.index} attempt {chunk.attempt} on {node}"
        nodes, config = self.nodes, self.config
        if report.outcome == "done":
            short = takes_ahead(job)
            outcomes.succeed(job, chunk, report, "done", nodes, config, changes, now)
            if short and not takes_ahead(job):
                # Its chunks turned long: those waiting behind a long render on a busy
                # node come back, for a free slot anywhere.
                why = f"not started: its chunks now take {PREFETCH_BELOW:g} s or more"
                withdraw_waiting(job, nodes, changes, why)
        elif report.outcome == "killed":
            # Not asked for by the leader (that attempt would be stale): the agent
            # lost its lease or was stopped. The farm's fault: no retry used.
            reason = report.reason or "killed on the node"
            outcomes.preempt(job, chunk, nodes, changes, now, "killed", reason)
        elif report.outcome == "failed":
            outcomes.fail(job, chunk, node, report, "failed", False, nodes, config, changes, now)
        else:
            response = job.spec.timeouts.on_timeout
            kind = (report.timeout_kind or "timeout").replace("_", " ")
            changes.event(
                now, "warn", f"{label}: {kind} timeout, on timeout: {response}", job.id, None
            )
            if response == "requeue":
                outcomes.requeue_after_timeout(job, chunk, report, nodes, changes, now)
            elif response == "complete":
                outcomes.succeed(job, chunk, report, "timeout", nodes, config, changes, now)
            else:
                # "error", and "notify" (the agent should not have stopped it: count an error).
                fatal = response == "fail"
                outcomes.fail(
                    job, chunk, node, report, "timeout", fatal, nodes, config, changes, now
                )
        refresh_job(job, changes, now)
        return changes

    # --- operators -------------------------------------------------------------
    def _jobs_for(self, job_ids: list[str]) -> list[Job]:
        unknown = [job_id for job_id in job_ids if job_id not in self.jobs]
        if unknown:
            raise SchedulerError(f"unknown job {', '.join(unknown)}")
        return [self.jobs[job_id] for job_id in dict.fromkeys(job_ids)]

    @_noting
    def job_action(self, job_ids: list[str], action: JobAction, actor: str, now: float) -> Changes:
        """Apply one action to every job.

        SchedulerError (and no change at all) if any id is unknown.
        """
        jobs = self._jobs_for(job_ids)
        changes = Changes()
        before = self.positions()
        for job in jobs:
            text = actions.job_action(job, action, actor, now, self.nodes, changes)
            changes.event(now, "info", text, job.id, actor)
            if action == "delete":
                del self.jobs[job.id]
                changes.removed.add(job.id)
        if action == "delete":
            self._hold_orphans([job.id for job in jobs], actor, changes, now)
        changes.jobs -= changes.removed
        changes.chunks = {c for c in changes.chunks if c[0] not in changes.removed}
        changes.frames = [f for f in changes.frames if f[0] not in changes.removed]
        if action in ("archive", "unarchive", "delete"):
            self._order_changed(changes, before)
        return changes

    def _hold_orphans(self, deleted: list[str], actor: str, changes: Changes, now: float) -> None:
        """Jobs that waited on a deleted job are held: nobody renders on input that
        will never come unless an operator says so (un-holding drops the dependency)."""
        gone = set(deleted)
        for job in self.jobs.values():
            lost = [dep for dep in job.spec.after if dep in gone]
            if not lost or job.state not in ("queued", "rendering"):
                continue
            set_job_state(job, "holding", changes, now, actor)
            names = ", ".join(lost)
            changes.event(
                now,
                "warn",
                f"held: it waits on {names}, deleted; un-hold it to go on without",
                job.id,
                actor,
            )

    @_noting
    def chunk_action(
        self, job_id: str, chunks: list[int], action: ChunkAction, actor: str, now: float
    ) -> Changes:
        job = self._jobs_for([job_id])[0]
        bad = [i for i in chunks if not 0 <= i < len(job.chunks)]
        if bad:
            raise SchedulerError(f"job {job_id} has no chunk {', '.join(map(str, bad))}")
        changes = Changes()
        picked = [job.chunks[i] for i in dict.fromkeys(chunks)]
        text = actions.chunk_action(job, picked, action, actor, now, self.nodes, changes)
        changes.event(now, "info", text, job_id, actor)
        return changes

    @_noting
    def set_priority(self, job_id: str, priority: int, actor: str, now: float) -> Changes:
        """Join the end of the new group; no requeue."""
        job = self._jobs_for([job_id])[0]
        if not 0 <= priority <= 100:
            raise SchedulerError(f"priority must be 0-100 (lower renders sooner), not {priority}")
        changes = Changes()
        if priority == job.priority:
            return changes
        before = self.positions()
        old = job.priority
        job.priority = priority
        job.spec = msgspec.structs.replace(job.spec, priority=priority)
        job.queue_key = dispatch_order.next_key(self.jobs.values())
        changes.jobs.add(job_id)
        changes.event(now, "info", f"priority {old} -> {priority}", job_id, actor)
        self._order_changed(changes, before)
        return changes

    @_noting
    def move(
        self,
        job_id: str,
        where: MoveWhere | None,
        before: str | None,
        actor: str,
        now: float,
    ) -> Changes:
        """Move within the priority group; SchedulerError when it would cross groups."""
        job = self._jobs_for([job_id])[0]
        target = self._jobs_for([before])[0] if before is not None else None
        positions = self.positions()
        moved = dispatch_order.move(list(self.jobs.values()), job, where, target)
        changes = Changes()
        if moved:
            place = f"before {before}" if before is not None else (where or "bottom")
            changes.event(
                now, "info", f"moved {place} in priority group {job.priority}", job_id, actor
            )
            changes.jobs.update(j.id for j in moved)
            self._order_changed(changes, positions)
        return changes

    @_noting
    def patch(self, job_id: str, patch: JobPatch, actor: str, now: float) -> Changes:
        """Change settings of a submitted job; they apply to chunks dispatched from now on."""
        job = self._jobs_for([job_id])[0]
        fields = validate_patch(patch, job.spec)
        # The console's editor sends every setting it shows: the event names only
        # those that change (it listed all of them, as if each had been edited).
        fields = {name: value for name, value in fields.items() if getattr(job.spec, name) != value}
        changes = Changes()
        if not fields:
            return changes
        job.spec = msgspec.structs.replace(job.spec, **fields)
        changes.jobs.add(job_id)
        changes.event(now, "info", f"settings changed: {', '.join(sorted(fields))}", job_id, actor)
        if fields.keys() & {"max_running", "tags"}:
            # Where and how many may run changed: what waits for a slot is dispatched again.
            why = f"not started: {actor} changed its settings"
            withdraw_waiting(job, self.nodes, changes, why)
        refresh_job(job, changes, now, actor)
        return changes

    # --- time ------------------------------------------------------------------
    @_noting
    def tick(
        self,
        now: float,
        stalled: float = 0.0,
        heard: Iterable[tuple[str, str]] = (),
        unreached: Iterable[str] = (),
        busy: float = 0.0,
        arriving: float | None = None,
    ) -> Changes:
        """Periodic: lost nodes and expired blocks.

        ``stalled``: seconds the leader itself could not run (its event loop
        was blocked) since the last tick. Heartbeats that arrived meanwhile are
        still unread, so that time is not held against any node.

        ``heard``: (node, agent id) of hellos read but not yet applied. Such a
        node is alive now, and the hello will settle its attempts (finished
        ones are credited, not rendered again): it is not lost meanwhile. Only
        its own agent counts, so another machine using its name cannot keep a
        dead node's chunks from moving.

        ``unreached``: nodes the leader could not hear yet (not back since its
        start-up), whose silence also does not count for ``busy`` more seconds,
        nor before ``arriving`` (when the last of them came back: the farm is
        still reconnecting, and theirs may be among the connections waiting).

        (Auto timeouts reach running chunks from ``chunk_finished``, the moment
        the sample is big enough; see ``Changes.timeout_updates``.)
        """
        changes = Changes()
        self._clock_seen = now
        if stalled > 0:
            for node in self.nodes.values():
                node.last_seen = min(now, node.last_seen + stalled)
        if busy > 0 or arriving is not None:
            for name in unreached:
                if (absent := self.nodes.get(name)) is not None:
                    absent.last_seen = min(now, absent.last_seen + busy)
                    if arriving is not None:
                        absent.last_seen = max(absent.last_seen, min(now, arriving))
        for name, agent_id in heard:
            waiting = self.nodes.get(name)
            if waiting is not None and waiting.agent_id == agent_id:
                waiting.last_seen = max(waiting.last_seen, now)
        for node in list(self.nodes.values()):
            silent = now - node.last_seen > self.config.node_timeout
            if silent and (node.online or node.running):
                changes.merge(self.node_lost(node.name, now))
        for job in self.jobs.values():
            for name in expire_blocks(job, now):
                changes.jobs.add(job.id)
                changes.event(now, "info", f"node {name} may render this job again", job.id, None)
        self._take_back_for_first(changes, now)
        return changes

    def _take_back_for_first(self, changes: Changes, now: float) -> None:
        """Chunks held ahead on a node for a job behind one that waits for it go back.

        A node holds up to ``prefetch`` short chunks beyond its slots. A job that
        comes before theirs in dispatch order (a higher priority, or submitted
        or moved up since) would otherwise wait until they had all rendered
        there. Each of the first jobs in order that could start a chunk now
        takes back what waits on as many of its nodes as it has chunks to
        start; the agent stops only those not started, and they come back with
        no retry used. Their room is then the first job's (``_dispatch_ahead``).
        A job takes back at most once every ``TAKE_BACK_EVERY`` seconds, so a
        rule this pass does not see cannot make chunks bounce every tick. Only
        jobs ahead of the last short job in the dispatch index look (a job whose
        last chunks are all out ends soon anyway). Cost, once a tick: nothing
        when the first job waiting is that short job; else the nodes that hold
        chunks ahead, times a few jobs.
        """
        holding = [
            node
            for node in self.nodes.values()
            if node.online and node.enabled and node.prefetch and len(node.running) > node.slots
        ]
        if not holding:
            return
        if len(self._asked_back) > ASKED_BACK_KEPT:
            held = {ref for node in self.nodes.values() for ref in node.running}
            self._asked_back &= held
        if len(self._took_back_at) > ASKED_BACK_KEPT:
            recent = {j: t for j, t in self._took_back_at.items() if now - t < TAKE_BACK_EVERY}
            self._took_back_at = recent
        ranks: dict[str, tuple[int, float, str]] = {}
        asked = self._asked_back

        def rank(job_id: str) -> tuple[int, float, str]:
            """The job's dispatch key (a job gone meanwhile: never behind)."""
            if (known := ranks.get(job_id)) is None:
                other = self.jobs.get(job_id)
                known = ranks[job_id] = (
                    (-1, 0.0, "") if other is None else dispatch_order.dispatch_key(other)
                )
            return known

        for key, job, wanted in self._first_waiting(now):
            if not self._ahead or key >= self._ahead[-1]:
                continue  # no job behind it has chunks to take ahead (or waiting there)
            tags = set(job.spec.tags)
            # A short job gets no room ahead on a node that failed one of its chunks.
            skipped = job.node_errors if key[2] in self._aheaded else {}
            took = False
            for node in holding:
                if wanted <= 0:
                    break
                if node.name in skipped or not self._fits(job, tags, node.name, now):
                    continue
                behind = sorted(
                    ref for ref in node.running if rank(ref[0]) > key and ref not in asked
                )
                if not behind:
                    continue
                wanted -= 1
                took = True
                why = f"not started: job {job.spec.name} ({job.id}) comes first in the queue"
                for attempt in behind:
                    asked.add(attempt)
                    take_back(node.name, attempt, why, changes)
            if took:
                self._took_back_at[job.id] = now

    def _first_waiting(self, now: float) -> list[tuple[tuple[int, float, str], Job, int]]:
        """The first jobs in dispatch order that could start a chunk now: (key, job, how many)."""
        found: list[tuple[tuple[int, float, str], Job, int]] = []
        for key in self._index[:FIRST_LOOKED_AT]:
            job = self.jobs[key[2]]
            if now - self._took_back_at.get(job.id, -math.inf) < TAKE_BACK_EVERY:
                continue
            tally = tally_of(job)
            if not tally.ready or job.spec.after_frames or not self._dependencies_done(job):
                continue
            if job.spec.limits and self.resources.exhausted(job.spec.limits) is not None:
                continue
            first = job.chunks[tally.ready[0]]  # stages open in chunk order
            if not gate_open(job, gates(job), first) or first.stopping_node is not None:
                continue  # its stage is shut, or its last attempt's tree may be alive
            wanted = count(tally, STAGES, STARTABLE)
            if job.spec.max_running:
                wanted = min(wanted, job.spec.max_running - len(tally.running))
            if wanted > 0:
                found.append((key, job, wanted))
                if len(found) == FIRST_TAKING_BACK:
                    break
        return found

    # --- views -----------------------------------------------------------------
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

    def _job(self, job_id: str) -> Job:
        job = self.jobs.get(job_id)
        if job is None:
            raise SchedulerError(f"unknown job {job_id}")
        return job

    def _waiting(self, now: float | None) -> views.Waiting:
        """What a view needs to say why a job waits (``server.reasons``)."""
        farm = self._reasons
        if (
            farm is None
            or farm.jobs is not self.jobs
            or farm.nodes is not self.nodes
            or farm.free is not self._free
        ):
            # Kept until a node changes shape: which nodes carry which tags is then
            # counted once for every view, not once per job.
            farm = self._reasons = reasons.Farm(
                self.jobs, self.nodes, self._free, self.resources, self.frame_waits
            )
        return views.Waiting(farm, self.config, self._clock_seen if now is None else now)

    def job_view(self, job_id: str, now: float | None = None) -> JobView:
        """``now``: the time its reason is read at (default: the latest event's)."""
        job = self._job(job_id)
        return views.job_view(
            job,
            self.positions().get(job_id, -1),
            self.nodes.values(),
            self._census,
            self._waiting(now),
        )

    def job_views(
        self,
        include_archived: bool,
        now: float | None = None,
        page: views.JobPage | None = None,
    ) -> list[JobView]:
        """In dispatch order; one ``page`` of them (the jobs after ``page.after``) if asked."""
        positions = self.positions()
        waiting = self._waiting(now)
        ordered = dispatch_order.in_dispatch_order(self.jobs.values(), include_archived)
        if page is not None:
            first = 0
            if page.after is not None:
                key = dispatch_order.dispatch_key(self._job(page.after))
                first = bisect_right(ordered, key, key=dispatch_order.dispatch_key)
            ordered = ordered[first : first + page.limit]
        return [
            views.job_view(
                job, positions.get(job.id, -1), self.nodes.values(), self._census, waiting
            )
            for job in ordered
        ]

    def chunk_view(self, job_id: str, chunk: int) -> ChunkView:
        record = self._chunk(job_id, chunk)
        if record is None:
            raise SchedulerError(f"job {job_id} has no chunk {chunk}")
        return views.chunk_view(record)

    def job_detail(
        self, job_id: str, page: views.ChunkPage | None = None, now: float | None = None
    ) -> JobDetail:
        job = self._job(job_id)
        return views.job_detail(
            job,
            self.positions().get(job_id, -1),
            self.nodes.values(),
            self._census,
            page,
            self._waiting(now),
        )

    def node_views(self) -> list[NodeView]:
        return [self.node_view(node) for _, node in sorted(self.nodes.items())]

    def node_view(self, node: Node) -> NodeView:
        return views.node_view(node, self.resources.busy_gpus(node.name))

    # --- limits (licences) ------------------------------------------------------
    def set_limits(self, limits: list[Limit]) -> None:
        """The limits the store holds (start-up, and after a commit failed)."""
        self.resources.limits = {limit.name: limit for limit in limits}
        self._limits_changed(Changes())

    @_noting
    def set_limit(self, limit: Limit | None, name: str, actor: str, now: float) -> Changes:
        """Define or change a limit (``limit``), or remove the one called ``name`` (None).

        Units already held stay held: lowering a limit below its use stops new
        chunks until enough end, it kills nothing.
        """
        changes = Changes()
        before = self.resources.limits.get(name)
        if limit is None:
            if before is None:
                raise SchedulerError(f"unknown limit {name}")
            del self.resources.limits[name]
            changes.event(now, "info", f"limit {name} removed", None, actor)
        else:
            self.resources.limits[name] = limit
            cap = f", at most {limit.per_node} per node" if limit.per_node else ""
            units = f"{limit.units} unit" + ("" if limit.units == 1 else "s")
            changes.event(now, "info", f"limit {name} set to {units}{cap}", None, actor)
        self._limits_changed(changes, name)
        return changes

    def _limits_changed(self, changes: Changes, name: str | None = None) -> None:
        """Re-announce the waiting jobs that ask for the limit: their reason may change."""
        for job_id in self._indexed:
            wanted = self.jobs[job_id].spec.limits
            if wanted and (name is None or name in wanted):
                changes.jobs.add(job_id)
        self._dirty = True
        self._reasons = None

    def limit_views(self) -> list[LimitView]:
        waiting = Counter(
            name for job_id in self._indexed for name in self.jobs[job_id].spec.limits
        )
        return [
            LimitView(
                name=name,
                units=limit.units,
                in_use=self.resources.in_use[name],
                per_node=limit.per_node,
                waiting_jobs=waiting[name],
            )
            for name, limit in sorted(self.resources.limits.items())
        ]
