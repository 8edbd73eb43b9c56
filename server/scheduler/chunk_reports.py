"""What agents report about the chunks they run.

Started, alive, frames written, timed out, finished; a report about an attempt
that is no longer current changes nothing (but a stale end frees its slot).
"""

from __future__ import annotations

from farmtui.protocol import ChunkFinished
from server import outcomes
from server.frame_states import tally_of, tracking
from server.model import Changes, Notification
from server.prefetch import PREFETCH_BELOW, Kind, takes_ahead, withdraw_waiting, work_kind
from server.scheduler.dispatch_index import DispatchIndex, _noting
from server.transitions import refresh_job, settle_stopped


class ChunkReports(DispatchIndex):
    """Reports from agents (stale attempts are ignored: return empty Changes)."""

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

    def _refile_kind(self, kind: Kind) -> None:
        """The jobs of the dispatch index none of whose chunks is done go by their kind of
        work, which turned short or long: file them again (whether they may wait ahead).

        O(jobs in the index), only when a kind turns: at most twice for each job that
        has its first chunk done, and for a queue of jobs of one kind once in all. Not
        through ``Changes.jobs``: nothing of theirs that is stored or shown changed.
        """
        fresh = [
            job_id
            for job_id in self._indexed
            if not tally_of(self.jobs[job_id]).times and work_kind(self.jobs[job_id]) == kind
        ]
        for job_id in fresh:
            self._reindex(job_id)

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
        nodes, config = self.nodes, self.config
        if report.outcome == "done":
            kinds = self._short_kinds
            first = not tally_of(job).times  # none of its own done yet: it went by its kind
            short = takes_ahead(job, kinds)
            outcomes.succeed(job, chunk, report, "done", nodes, config, changes, now)
            still = takes_ahead(job, kinds)
            if (first and tally_of(job).times) or still != short:
                work = work_kind(job)
                if kinds.learn(work, still):
                    self._refile_kind(work)
            went_ahead = first and job.id in self._ahead_by_kind
            if first:
                self._ahead_by_kind.discard(job.id)
            if not still and (short or went_ahead):
                # Its chunks turned long (or its first is, and chunks of it went ahead while
                # its kind was short): those waiting behind a long render on a busy node
                # come back, for a free slot anywhere.
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
            label = f"chunk {chunk.index} attempt {chunk.attempt} on {node}"
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
