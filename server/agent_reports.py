"""What each message from an agent does to the farm.

The agent link decodes a message and hands it here; this module calls the
scheduler through ``Leader.run`` (which commits before it returns) and only
then writes what the message adds to the job logs: commit, then announce. A
commit that fails raises, so the link never acknowledges the message and the
agent sends it again from its outbox.

Reports about an attempt that is no longer current change nothing but the
slot they held (see ``Scheduler.chunk_finished``); they are never logged as
if they were the chunk's.

Nothing after the commit may fail the message: the job logs never raise (a
log that cannot be written is reported once, see ``JobLogs``), and
``_announce`` catches what would still escape, so a log planted or broken by
another job never keeps a chunk's report from being acknowledged.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from farmtui.protocol import (
    AgentHello,
    AgentLog,
    AgentToLeader,
    ChunkFinished,
    ChunkOutput,
    ChunkProgress,
    ChunkStarted,
    ChunkTimedOut,
    FramesWritten,
    Heartbeat,
)
from server.leader import Leader
from server.model import Changes

log = logging.getLogger("farmtui.leader.agent_reports")


class AgentReports:
    """Applies one node's messages; the link owns the socket, this owns their meaning."""

    def __init__(self, leader: Leader, node: str) -> None:
        self.leader = leader
        self.node = node

    def _current(self, job_id: str, chunk: int, attempt: int) -> bool:
        return self.leader.attempt_of(self.node, job_id, chunk, attempt) is not None

    def _announce(self, what: str, step: Callable[[], None]) -> None:
        """Write what a committed message adds to the logs; a failure stays here.

        The message is committed: raising now would leave it unacknowledged,
        and the agent would send again what the farm has already applied.
        """
        try:
            step()
        except Exception:
            log.exception("node %s: %s was applied but could not be logged", self.node, what)

    def apply(self, message: AgentToLeader) -> None:
        """Apply ``message``; when this returns, its effects are committed and announced."""
        leader = self.leader
        scheduler = leader.scheduler
        node = self.node
        match message:
            case Heartbeat(cpu_percent=cpu, memory_percent=memory):
                leader.run(lambda now: scheduler.node_heartbeat(node, cpu, memory, now))
            case ChunkStarted(job_id=job_id, chunk=chunk, attempt=attempt):
                current = self._current(job_id, chunk, attempt)
                leader.run(
                    lambda now: scheduler.chunk_started(node, job_id, chunk, attempt, now),
                    dispatch=False,
                )
                if current:
                    self._announce(
                        "ChunkStarted",
                        lambda: leader.joblogs.chunk_started(
                            job_id, chunk, attempt, node, message.command, leader.now()
                        ),
                    )
            case ChunkOutput(job_id=job_id, chunk=chunk, attempt=attempt, lines=lines):
                record = leader.attempt_of(node, job_id, chunk, attempt)
                if record is None:
                    return
                if not record.alive:
                    leader.run(
                        lambda now: scheduler.chunk_alive(node, job_id, chunk, attempt, now),
                        dispatch=False,
                    )
                key = (job_id, chunk, attempt)
                self._announce("ChunkOutput", lambda: leader.output(key, lines))
                self._announce("ChunkOutput", leader.joblogs.flush)
            case ChunkProgress(job_id=job_id, chunk=chunk, attempt=attempt):
                record = leader.attempt_of(node, job_id, chunk, attempt)
                if record is not None and not record.alive:
                    leader.run(
                        lambda now: scheduler.chunk_alive(node, job_id, chunk, attempt, now),
                        dispatch=False,
                    )
            case FramesWritten(job_id=job_id, chunk=chunk, attempt=attempt):
                frames, staged = message.frames, message.staged

                def written(now: float) -> Changes:
                    changes = scheduler.chunk_alive(node, job_id, chunk, attempt, now)
                    return changes.merge(
                        scheduler.frames_written(node, job_id, chunk, attempt, frames, staged, now)
                    )

                leader.run(written, dispatch=False)
            case ChunkTimedOut(job_id=job_id, chunk=chunk, attempt=attempt):
                kind, elapsed = message.kind, message.elapsed
                leader.run(
                    lambda now: scheduler.chunk_timed_out(
                        node, job_id, chunk, attempt, kind, elapsed, now
                    ),
                    dispatch=False,
                )
            case ChunkFinished(job_id=job_id, chunk=chunk, attempt=attempt):
                current = self._current(job_id, chunk, attempt)
                leader.run(lambda now: scheduler.chunk_finished(node, message, now))
                if current:

                    def footer() -> None:
                        leader.joblogs.chunk_finished(message, node, leader.now())
                        leader.joblogs.flush()

                    self._announce("ChunkFinished", footer)
            case AgentLog(lines=lines):
                self._announce("AgentLog", lambda: leader.nodelogs.append(node, lines))
            case AgentHello():
                raise ValueError("hello is only valid as the first message")
