"""What agents report about the chunks they run.

Started, alive, frames written, timed out, finished; a report about an attempt
that is no longer current changes nothing (but a stale end frees its slot).
"""

from __future__ import annotations

from farmtui.protocol import ChunkFinished
from server import outcomes
from server.frame_states import tally_of, tracking
from server.model import Changes, Discard, Job, Notification
from server.prefetch import (
    HOLD_FEWER_WORTH,
    PREFETCH_BELOW,
    ahead_a_slot,
    chunk_time,
    held_at_most,
    holds_deep,
    take_back,
    takes_ahead,
    withdraw_waiting,
    work_kind,
)
from server.scheduler.dispatch_index import _noting
from server.scheduler.render_clock import RenderClock
from server.transitions import refresh_job, settle_stopped


class ChunkReports(RenderClock):
    """Reports from agents (stale attempts are ignored: return empty Changes)."""

    @_noting
    def chunk_started(
        self,
        node: str,
        job_id: str,
        chunk: int,
        attempt: int,
        now: float,
        into: Changes | None = None,
        *,
        ran: bool = True,
    ) -> Changes:
        """``into``: the Changes to add to (the group commit's), returned; else new ones.

        ``ran`` False: the agent says the attempt never started (taken back from its
        queue, or its supervisor could not start it); it sends the command for the
        chunk log's header, but nothing started, so no event says so and the job's
        first-render clock does not start.
        """
        changes = Changes() if into is None else into
        if not ran or self._live(node, job_id, chunk, attempt) is None:
            return changes
        # Judged by the clock (``_judge_by_clock``), whatever its job is now: chunks of it
        # may be taken ahead later, while it still renders.
        self._renders.append((now, job_id, chunk, attempt))
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

    def _judged(self, job: Job, short: bool, changes: Changes) -> None:
        """The job has a render time more; ``short``: it took chunks ahead by its own before.

        Its kind of work is now as the job is (O(1): no job of the queue is looked at,
        the dispatch pass looks the kind up when it comes to one). If its chunks are
        long now (turned, or its first is and chunks of it went ahead by its kind):
        those waiting behind a long render on a busy node come back, for a free slot
        anywhere.
        """
        still = takes_ahead(job)
        by_kind = job.id in self._ahead_by_kind
        self._ahead_by_kind.discard(job.id)
        if still != short or by_kind or len(tally_of(job).times) == 1:
            self._short_kinds.learn(work_kind(job), still, ahead_a_slot(job))
        if not still and (short or by_kind):
            why = f"not started: its chunks now take {PREFETCH_BELOW:g} s or more"
            withdraw_waiting(job, self.nodes, changes, why)

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
    def chunk_finished(
        self, node: str, report: ChunkFinished, now: float, into: Changes | None = None
    ) -> Changes:
        """Success, failure with retry/backoff/blocklist, or the job's on_timeout response.

        A report about an attempt that is no longer current still says its tree
        is gone: the slot it held is freed, and its chunk may start again.

        ``into``: the Changes to add to (the group commit's), returned; else new ones.
        """
        changes = Changes() if into is None else into
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
            waited_for = chunk is not None and (chunk.staged_on, chunk.staged_attempt) == (
                node,
                report.attempt,
            )
            if report.kept_staged and not waited_for:
                # Output kept for a retry sync of an attempt that had moved on (its node
                # lost meanwhile): nobody will copy it. Its hello left it to this report.
                changes.discards.append(
                    Discard(
                        node=node, job_id=report.job_id, chunk=report.chunk, attempt=report.attempt
                    )
                )
            return changes
        job, chunk = live
        nodes, config = self.nodes, self.config
        kinds = self._short_kinds
        short = takes_ahead(job, kinds)
        timed = len(tally_of(job).times)
        if report.outcome == "done":
            outcomes.succeed(job, chunk, report, "done", nodes, config, changes, now)
        elif report.outcome == "killed":
            # Not asked for by the leader (that attempt would be stale): the agent
            # lost its lease or was stopped. The farm's fault: no retry used.
            reason = report.reason or "killed on the node"
            outcomes.preempt(job, chunk, nodes, changes, now, "killed", reason, reported=True)
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
        if len(tally_of(job).times) > timed:  # a render time more: judged by its own chunks
            self._judged(job, short and timed > 0, changes)
            if short and takes_ahead(job):  # (turned long, all that waited went back)
                self._hold_fewer(job, node, changes, now)
        refresh_job(job, changes, now)
        return changes

    def _hold_fewer(self, job: Job, name: str, changes: Changes, now: float) -> None:
        """A chunk of a job that takes chunks ahead ended on ``name``: if its chunks now take
        longer, so that the node holds more of them than it would be given now (``depth``),
        the last given of those beyond go back (taken back only if not started).

        Without this, a job of brief chunks whose frames turned heavier (still under
        ``PREFETCH_BELOW``) kept every chunk a deep node held, one after another on that
        node while others idled at the job's end. Only when what goes back is worth it
        (``HOLD_FEWER_WORTH``), another node has a free slot for it, and not again soon
        for the same job and node: the wobble of brief chunks' times made chunks go back
        and come again (break round 32a), and with no other node free they came back
        to the same one (32b). Each node is trimmed as its own next chunk of the job
        ends. O(1) unless the node holds more than it would be given, then O(what it
        holds).
        """
        node = self.nodes.get(name)
        if node is None or not holds_deep(node):
            return  # never more than a chunk a slot ahead: within any job's depth
        took = chunk_time(job)
        if took is None:
            return
        allowed = held_at_most(node, ahead_a_slot(job))
        if len(node.running) <= allowed:
            return
        held = sorted(ref for ref in node.running if ref[0] == job.id)
        beyond = held[allowed:]  # the last given: the last in line there
        if len(beyond) * took < HOLD_FEWER_WORTH * node.slots:
            return
        if next((other for other in self._free if other != name), None) is None:
            return  # no other node has a free slot now: they would come back here
        if self._held_fewer_at.recent((job.id, name), now):
            return
        self._held_fewer_at.took((job.id, name), now)
        why = f"not started: its chunks take longer now; {name} holds fewer of them ahead"
        for ref in beyond:
            take_back(name, ref, why, changes)
