"""The dispatch pass: free slots (and room ahead of them) filled in dispatch order.

``dispatch`` walks the dispatch index; each job takes its waiting chunks from
its own queue and gives them to the node ``_NodePicker`` picks; fair share
and chunks taken ahead of a slot are passes of their own before and after it.
"""

from __future__ import annotations

import heapq
import math
from collections import Counter
from collections.abc import Callable
from itertools import groupby

from server.assignments import build_assignment
from server.frame_states import tally_of
from server.frame_waits import PARK_BUDGET, blocker
from server.job_progress import PENDING, gate_open, gates
from server.model import NO_FRAMES, Assignment, Attempt, Changes, Chunk, Job
from server.prefetch import AHEAD_LOOKED_AT, ahead_a_slot, held_at_most, takes_ahead
from server.resources import Holding
from server.scheduler.dispatch_index import DispatchIndex
from server.scheduler.state import ASSIGN_BUDGET
from server.timeouts import chunk_timeouts
from server.transitions import discard_staged, holder_awaited, refresh_job, set_chunk_state

# What an attempt holds that asked for no GPU nor unit of a limit (most): one for all.
_NOTHING_HELD = Holding()


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


class DispatchPass(DispatchIndex):
    """The dispatch pass (``dispatch``) and what it does to assign a chunk (``_assign``)."""

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
        if self._spare and (self._ahead or self._short_kinds) and self._assigns_left > 0:
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

        A job none of whose chunks is done goes by its kind of work, looked up
        here (``server.prefetch``): filed in the index as its kind was when the
        job last changed, it may have turned since, either way. So while any kind
        is known short, the walk goes on past jobs that are not, to at most
        ``AHEAD_LOOKED_AT`` jobs: a job deeper in the queue gets a slot when
        its turn comes, and a pass costs the same however long the queue.
        """
        room = {name: free.get(name, 0) + spare for name, spare in self._spare.items()}
        wakeup = math.inf
        ahead, kinds = self._aheaded, self._short_kinds
        last = self._ahead[-1] if self._ahead else None
        for looked, key in enumerate(self._index):
            if not room or self._assigns_left <= 0 or looked >= AHEAD_LOOKED_AT:
                break
            job = self.jobs[key[2]]
            if key[2] in ahead:
                short = takes_ahead(job, kinds)
            else:
                short = bool(kinds) and not tally_of(job).times and takes_ahead(job, kinds)
                if not short and not kinds and (last is None or key > last):
                    break  # no short job behind it: nothing more may wait ahead
            if not self._dependencies_done(job):
                continue
            if short:
                # Not to a node that failed one of its chunks: the chunk held there
                # would start as the failed one exits, before the leader could block
                # the node (``block_after``) and take it back.
                kept = {name: room.pop(name) for name in job.node_errors if name in room}
                per_slot = ahead_a_slot(job, kinds) if self._deep else math.inf
                due, started = self._dispatch_job(job, room, changes, now, per_slot=per_slot)
                wakeup = min(wakeup, due)
                room.update(kept)
                if started and not tally_of(job).times:
                    # By its kind: none of its own is done. Its first render time says
                    # what the kind is from then on (``_judged``).
                    self._ahead_by_kind.add(job.id)
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
        self,
        job: Job,
        free: dict[str, int],
        changes: Changes,
        now: float,
        most: int = 0,
        per_slot: float = math.inf,
    ) -> tuple[float, int]:
        """Assign the job's waiting chunks, in chunk order, to ``free`` slots (``most``: at most).

        ``per_slot``: in room ahead of the slots, how many of its chunks a node may
        hold a slot (``server.prefetch.ahead_a_slot``).

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
            if chunk.staged_on is not None and (
                until := holder_awaited(chunk, self.nodes, self.config.node_timeout, now)
            ):
                if chunk.staged_on not in free:
                    aside.append(index)  # wait for the node that holds its staged output
                    wakeup = min(wakeup, until)  # offline: rendered elsewhere once lost
                    continue
                node: str | None = chunk.staged_on
            else:
                if picker is None:
                    picker = _NodePicker(free, self._fitter(job, now, per_slot))
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

    def _fitter(self, job: Job, now: float, per_slot: float = math.inf) -> Callable[[str], bool]:
        tags = set(job.spec.tags)
        if per_slot == math.inf:
            return lambda name: self._fits(job, tags, name, now)
        nodes = self.nodes

        def fits(name: str) -> bool:
            # Checked as the node comes up to take a chunk: it holds more with each.
            node = nodes[name]
            room = len(node.running) < held_at_most(node, per_slot)
            return room and self._fits(job, tags, name, now)

        return fits

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
        spec = job.spec
        holding = _NOTHING_HELD
        # A copy of staged output renders nothing: it holds no GPU nor licence.
        if not sync_from and (spec.gpus or spec.limits):
            gpus = self.resources.free_gpus(holder, spec.gpus, spec.gpu_memory) or ()
            holding = Holding(gpus if spec.gpus else (), tuple(spec.limits))
        chunk.attempts = (
            *chunk.attempts,
            Attempt(
                number=chunk.attempt,
                node=node,
                started=now,
                gpus=holding.gpus,
                limits=holding.limits,
                copy_of=sync_from,
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
