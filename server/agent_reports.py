"""What each message from an agent does to the farm.

The agent link decodes a message and hands it here; this module turns it
into a step for the leader's group commit (``Leader.submit``) and returns the
future that is done once the step is committed: then, and only then, the link
acknowledges it. What the message adds to the job logs is written after the
commit (commit, then announce). A commit that fails fails the future, so the
link never acknowledges the message and the agent sends it again from its
outbox.

Every check of the farm's state (is this attempt still current?) happens
inside the step, when it is applied, not when the message was read: messages
from all agents are applied in the order they arrived, and one read earlier
may have changed what this one finds.

Reports about an attempt that is no longer current change nothing but the
slot they held (see ``Scheduler.chunk_finished``); they are never logged as
if they were the chunk's.

Nothing after the commit may fail the message: the job logs never raise (a
log that cannot be written is reported once, see ``JobLogs``), and the
leader catches what would still escape an announcement, so a log planted or
broken by another job never keeps a chunk's report from being acknowledged.
"""

from __future__ import annotations

import asyncio
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
        """The attempt is the chunk's latest, runs here, and has not ended: its log is open.

        A report about an attempt that ended (sent again after a link closed
        before its Ack, or late) adds nothing to the attempt's log.
        """
        record = self.leader.attempt_of(self.node, job_id, chunk, attempt)
        return record is not None and record.finished is None

    def apply(self, message: AgentToLeader) -> asyncio.Future[Changes]:
        """Queue ``message`` for the group commit; the future is done once it is committed."""
        leader = self.leader
        scheduler = leader.scheduler
        node = self.node
        # Set by a step when its message is about the current attempt: the
        # announcement (a log line) is written only then.
        current = False

        def announce_if_current(write: Callable[[], None]) -> Callable[[], None]:
            def announce() -> None:
                if current:
                    write()

            return announce

        match message:
            case Heartbeat(cpu_percent=cpu, memory_percent=memory):
                return leader.submit(lambda now: scheduler.node_heartbeat(node, cpu, memory, now))
            case ChunkStarted(job_id=job_id, chunk=chunk, attempt=attempt):

                def started(now: float) -> Changes:
                    nonlocal current
                    current = self._current(job_id, chunk, attempt)
                    return scheduler.chunk_started(node, job_id, chunk, attempt, now)

                command = message.command
                return leader.submit(
                    started,
                    dispatch=False,
                    announce=announce_if_current(
                        lambda: leader.joblogs.chunk_started(
                            job_id, chunk, attempt, node, command, leader.now()
                        )
                    ),
                )
            case ChunkOutput(job_id=job_id, chunk=chunk, attempt=attempt, lines=lines):

                def output(now: float) -> Changes:
                    nonlocal current
                    current = self._current(job_id, chunk, attempt)
                    record = leader.attempt_of(node, job_id, chunk, attempt)
                    if record is None or record.alive:
                        return Changes()
                    return scheduler.chunk_alive(node, job_id, chunk, attempt, now)

                key = (job_id, chunk, attempt)
                return leader.submit(
                    output,
                    dispatch=False,
                    announce=announce_if_current(lambda: leader.output(key, lines)),
                )
            case ChunkProgress(job_id=job_id, chunk=chunk, attempt=attempt):

                def progress(now: float) -> Changes:
                    record = leader.attempt_of(node, job_id, chunk, attempt)
                    if record is None or record.alive:
                        return Changes()
                    return scheduler.chunk_alive(node, job_id, chunk, attempt, now)

                return leader.submit(progress, dispatch=False)
            case FramesWritten(job_id=job_id, chunk=chunk, attempt=attempt):
                frames, staged = message.frames, message.staged

                def written(now: float) -> Changes:
                    changes = scheduler.chunk_alive(node, job_id, chunk, attempt, now)
                    return changes.merge(
                        scheduler.frames_written(node, job_id, chunk, attempt, frames, staged, now)
                    )

                return leader.submit(written, dispatch=False)
            case ChunkTimedOut(job_id=job_id, chunk=chunk, attempt=attempt):
                kind, elapsed = message.kind, message.elapsed
                return leader.submit(
                    lambda now: scheduler.chunk_timed_out(
                        node, job_id, chunk, attempt, kind, elapsed, now
                    ),
                    dispatch=False,
                )
            case ChunkFinished(job_id=job_id, chunk=chunk, attempt=attempt):

                def finished(now: float) -> Changes:
                    nonlocal current
                    current = self._current(job_id, chunk, attempt)
                    return scheduler.chunk_finished(node, message, now)

                return leader.submit(
                    finished,
                    announce=announce_if_current(
                        lambda: leader.joblogs.chunk_finished(message, node, leader.now())
                    ),
                )
            case AgentLog(lines=lines):
                return leader.submit(
                    lambda now: Changes(),
                    dispatch=False,
                    announce=lambda: leader.nodelogs.append(node, lines),
                )
            case AgentHello():
                raise ValueError("hello is only valid as the first message")
