"""Chunks held ahead on a node go back when a job before theirs waits for that node.

Once a tick (``Scheduler.tick``); what is held ahead and why is ``server.prefetch``'s.
"""

from __future__ import annotations

from server import dispatch_order
from server.frame_states import tally_of
from server.job_progress import STAGES, count, gate_open, gates
from server.model import Changes, Job
from server.prefetch import (
    ASKED_BACK_KEPT,
    FIRST_LOOKED_AT,
    FIRST_TAKING_BACK,
    STARTABLE,
    take_back,
)
from server.scheduler.state import SchedulerState


class TakingBack(SchedulerState):
    """Chunks held ahead taken back for a job that comes first (``_take_back_for_first``)."""

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
                self._took_back_at.took(job.id, now)

    def _first_waiting(self, now: float) -> list[tuple[tuple[int, float, str], Job, int]]:
        """The first jobs in dispatch order that could start a chunk now: (key, job, how many)."""
        found: list[tuple[tuple[int, float, str], Job, int]] = []
        for key in self._index[:FIRST_LOOKED_AT]:
            job = self.jobs[key[2]]
            if self._took_back_at.recent(job.id, now):
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
