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

The class is put together from parts, one module of this package each, every
part a class deriving from ``SchedulerState`` (so each is type-checked against
the attributes it uses); this module keeps loading, submission, ``tick`` and
limits, and re-exports every name callers import from ``server.scheduler``:

- ``state``: the records, the indexes' attributes, the lookups parts share
- ``dispatch_index``: the dispatch index and free slots, kept after each
  event (``_noting``)
- ``dispatch_pass``: ``dispatch``, ``_NodePicker``, assigning a chunk
- ``node_events``: hellos, heartbeats, disconnects, lost nodes, enable, block
- ``chunk_reports``: what agents report about their chunks
- ``operator_actions``: job and chunk actions, priority, moves, settings
- ``taking_back``: chunks held ahead taken back for a job that comes first
- ``reads``: job, chunk and node views

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

import math
from collections import Counter
from collections.abc import Iterable

from farmtui.protocol import JobSpec, LimitView
from farmtui.protocol.limits import DEFAULT_PRIORITY
from server import dispatch_order, outcomes
from server.model import Changes, Job, Node
from server.resources import Limit
from server.retries import expire_blocks
from server.scheduler.chunk_reports import ChunkReports
from server.scheduler.dispatch_index import _noting
from server.scheduler.dispatch_pass import DispatchPass
from server.scheduler.node_events import NodeEvents, NodeHeld
from server.scheduler.operator_actions import OperatorActions
from server.scheduler.reads import FarmReads
from server.scheduler.state import ASSIGN_BUDGET as ASSIGN_BUDGET
from server.scheduler.taking_back import TakingBack
from server.scheduler_config import SchedulerConfig, SchedulerError
from server.submission import Prepared, prepare, validate
from server.transitions import refresh_job

# A node's silence is stored in this many steps up to its timeout (``_note_silence``).
SILENCE_STEPS = 20

__all__ = ["NodeHeld", "Scheduler", "SchedulerConfig", "SchedulerError"]


class Scheduler(NodeEvents, ChunkReports, OperatorActions, DispatchPass, TakingBack, FarmReads):
    """Loading, submission, time and limits; every other event is one of its parts'."""

    # --- loading (leader start-up) -------------------------------------------
    def load(self, jobs: list[Job], nodes: list[Node], now: float) -> Changes:
        """Adopt the store's picture after a restart.

        All nodes start offline, silent for as long as the store last noted
        (``Node.unheard``: leader time only, never the time the farm had no
        leader, when no node could reach one). Each keeps the slots
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
            if not 0.0 <= node.unheard <= _most_noted(self._timeout_of(node)):
                node.unheard = 0.0  # not what ``_note_silence`` writes: no credit, the safe side
            node.seen_before_start = node.last_seen  # as last written: not the silence clock
            node.last_seen = now - node.unheard
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
                node.seen_before_start = before.seen_before_start
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
        priority = DEFAULT_PRIORITY if spec.priority is None else spec.priority
        before = self.positions()
        job = Job(
            id=job_id,
            spec=spec,
            owner=owner,
            state="queued",
            priority=priority,
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
            f"submitted: {prepared.frames} frames in {renders} chunks, priority {priority}",
            job_id,
            owner,
        )
        self._order_changed(changes, before)
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
            silent = now - node.last_seen > self._timeout_of(node)
            if silent and (node.online or node.running):
                changes.merge(self.node_lost(node.name, now))
            self._note_silence(node, now, changes)
        for job in self.jobs.values():
            for name in expire_blocks(job, now):
                changes.jobs.add(job.id)
                changes.event(now, "info", f"node {name} may render this job again", job.id, None)
        self._judge_by_clock(changes, now)
        self._take_back_for_first(changes, now)
        return changes

    def _timeout_of(self, node: Node) -> float:
        """The silence after which ``node`` is lost: ours, or the longer one of the leader
        that granted its lease (``Node.lease_timeout``), until its next hello here."""
        return max(self.config.node_timeout, node.lease_timeout)

    def _note_silence(self, node: Node, now: float, changes: Changes) -> None:
        """Store how long a node holding chunks has been silent (``Node.unheard``), a
        step at a time: a restarted leader goes on counting it.

        Only while its link is closed. No lease is granted to it then (a renewal
        goes only to a node online), and its next link's hello stores 0 before
        its Welcome grants one (``node_connected``). So a restart never credits
        silence from before a lease the node still holds: a node heard again
        once its silence was stored, then the leader killed, had its chunk
        moved within seconds while its lease still ran. A node frozen with its
        link open is counted from the first restart, which closes its link.

        A step is a twentieth of the node's timeout: a silent node is written
        about twenty times until it is judged lost, and none past that (a node
        gone for good is not written again and again). A restart credits at
        most a step too little, and a leader that dies within a step of its
        start credits nothing. A node holding no chunk is not written: after a
        start a farm comes back with hundreds of them offline for a moment.
        """
        if not node.running:
            return
        timeout = self._timeout_of(node)
        silence = 0.0 if node.online else max(0.0, now - node.last_seen)
        noted = _noted(
            min(math.floor(silence / (timeout / SILENCE_STEPS)), SILENCE_STEPS + 1), timeout
        )
        if noted != node.unheard:
            node.unheard = noted
            changes.nodes.add(node.name)

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


def _noted(steps: int, timeout: float) -> float:
    """``steps`` steps of silence for a node of ``timeout``, as stored (rounded: no
    0.8999999999999999 in the rows)."""
    return round(steps * timeout / SILENCE_STEPS, 6)


def _most_noted(timeout: float) -> float:
    return _noted(SILENCE_STEPS + 1, timeout)
