"""What operators do to jobs: actions on jobs and chunks, priority, moves, settings."""

from __future__ import annotations

import msgspec

from farmtui.protocol import ChunkAction, JobAction, JobPatch, MoveWhere
from server import actions, dispatch_order
from server.errors import cut
from server.job_progress import FINISHED
from server.model import Changes, Job
from server.outcomes import push_timeouts
from server.prefetch import withdraw_waiting
from server.scheduler.dispatch_index import DispatchIndex, _noting
from server.scheduler_config import SchedulerError
from server.submission import validate_patch
from server.transitions import refresh_job, set_job_state


class OperatorActions(DispatchIndex):
    """Operators' actions on jobs and chunks (SchedulerError, and no change, on bad input)."""

    def _jobs_for(self, job_ids: list[str]) -> list[Job]:
        unknown = [job_id for job_id in job_ids if job_id not in self.jobs]
        if unknown:
            raise SchedulerError(f"unknown job {cut(', '.join(unknown))}")
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
            text = actions.job_action(
                job, action, actor, now, self.nodes, changes, self.config.node_timeout
            )
            changes.event(now, "info", text, job.id, actor)
            if action == "delete":
                del self.jobs[job.id]
                self._ahead_by_kind.discard(job.id)
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
        if action == "hold" and all(c.state in FINISHED for c in picked):
            # Nothing would change: said to whoever asked, not only in the job's events.
            names = ", ".join(str(c.index) for c in picked)
            raise SchedulerError(f"chunk {names} of job {job_id} ended already: nothing to hold")
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
        """Change settings of a submitted job; they apply to chunks dispatched from now on,
        and new timeouts to those already rendering too (a stuck frame's lowered maximum
        stops it, a raised one saves a slow one)."""
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
        if "timeouts" in fields:
            push_timeouts(job, self.config, changes)
        refresh_job(job, changes, now, actor)
        return changes
