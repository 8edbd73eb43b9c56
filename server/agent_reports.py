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
may have changed what this one finds. Heartbeats are the exception: they
store nothing, and are applied and answered as soon as they are read
(``Leader.apply_live``), so that a busy leader renews leases on time.

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
        """Queue ``message`` for the group commit; the future is done once it is committed.

        One small method per kind of message: each builds only its own step (this
        runs for every message of every agent, and one function holding every
        kind's closures paid for all of their cells each time).
        """
        match message:
            case Heartbeat():
                return self._heartbeat(message)
            case ChunkStarted():
                return self._started(message)
            case ChunkOutput():
                return self._output(message)
            case ChunkProgress():
                return self._progress(message)
            case FramesWritten():
                return self._written(message)
            case ChunkTimedOut():
                return self._timed_out(message)
            case ChunkFinished():
                return self._finished(message)
            case AgentLog():
                return self._agent_log(message)
            case AgentHello():
                raise ValueError("hello is only valid as the first message")

    def _heartbeat(self, message: Heartbeat) -> asyncio.Future[Changes]:
        scheduler, node = self.leader.scheduler, self.node
        cpu, memory = message.cpu_percent, message.memory_percent
        if message.seq > 0:
            # Numbered (an agent's are not): its Ack is cumulative, so it waits its turn.
            return self.leader.submit(lambda now: scheduler.node_heartbeat(node, cpu, memory, now))
        # Applied and answered as soon as it is read (``Leader.apply_live``): the node
        # is heard now, and its lease renewed a turn of the loop later, however many
        # reports wait in the group commit. It stores nothing, so nothing waits for a
        # commit; a node that came back online is dispatched to by the next group.
        done: asyncio.Future[Changes] = asyncio.get_running_loop().create_future()
        try:
            done.set_result(
                self.leader.apply_live(lambda now: scheduler.node_heartbeat(node, cpu, memory, now))
            )
        except Exception as exc:
            done.set_exception(exc)
        return done

    def _started(self, message: ChunkStarted) -> asyncio.Future[Changes]:
        leader, node = self.leader, self.node
        job_id, chunk, attempt = message.job_id, message.chunk, message.attempt
        # Set by the step when the message is about the current attempt: the
        # announcement (a log line) is written only then.
        current = False

        def started(now: float) -> Changes:
            nonlocal current
            current = self._current(job_id, chunk, attempt)
            return leader.scheduler.chunk_started(node, job_id, chunk, attempt, now)

        def announce() -> None:
            if current:
                leader.joblogs.chunk_started(
                    job_id, chunk, attempt, node, message.command, leader.now()
                )

        return leader.submit(started, dispatch=False, announce=announce)

    def _output(self, message: ChunkOutput) -> asyncio.Future[Changes]:
        leader, node = self.leader, self.node
        job_id, chunk, attempt = message.job_id, message.chunk, message.attempt
        current = False

        def output(now: float) -> Changes:
            nonlocal current
            current = self._current(job_id, chunk, attempt)
            record = leader.attempt_of(node, job_id, chunk, attempt)
            if record is None or record.alive:
                return Changes()
            return leader.scheduler.chunk_alive(node, job_id, chunk, attempt, now)

        def announce() -> None:
            if current:
                leader.output((job_id, chunk, attempt), message.lines)

        return leader.submit(output, dispatch=False, announce=announce)

    def _progress(self, message: ChunkProgress) -> asyncio.Future[Changes]:
        leader, node = self.leader, self.node
        job_id, chunk, attempt = message.job_id, message.chunk, message.attempt

        def progress(now: float) -> Changes:
            record = leader.attempt_of(node, job_id, chunk, attempt)
            if record is None or record.alive:
                return Changes()
            return leader.scheduler.chunk_alive(node, job_id, chunk, attempt, now)

        return leader.submit(progress, dispatch=False)

    def _written(self, message: FramesWritten) -> asyncio.Future[Changes]:
        scheduler, node = self.leader.scheduler, self.node
        job_id, chunk, attempt = message.job_id, message.chunk, message.attempt
        frames, staged = message.frames, message.staged

        def written(now: float) -> Changes:
            changes = scheduler.chunk_alive(node, job_id, chunk, attempt, now)
            return changes.merge(
                scheduler.frames_written(node, job_id, chunk, attempt, frames, staged, now)
            )

        return self.leader.submit(written, dispatch=False)

    def _timed_out(self, message: ChunkTimedOut) -> asyncio.Future[Changes]:
        scheduler, node = self.leader.scheduler, self.node
        job_id, chunk, attempt = message.job_id, message.chunk, message.attempt
        kind, elapsed = message.kind, message.elapsed
        return self.leader.submit(
            lambda now: scheduler.chunk_timed_out(node, job_id, chunk, attempt, kind, elapsed, now),
            dispatch=False,
        )

    def _finished(self, message: ChunkFinished) -> asyncio.Future[Changes]:
        leader, node = self.leader, self.node
        current = False

        def finished(now: float) -> Changes:
            nonlocal current
            current = self._current(message.job_id, message.chunk, message.attempt)
            return leader.scheduler.chunk_finished(node, message, now)

        def announce() -> None:
            if current:
                leader.joblogs.chunk_finished(message, node, leader.now())

        return leader.submit(finished, announce=announce)

    def _agent_log(self, message: AgentLog) -> asyncio.Future[Changes]:
        nodelogs, node, lines = self.leader.nodelogs, self.node, message.lines
        return self.leader.submit(
            lambda now: Changes(),
            dispatch=False,
            announce=lambda: nodelogs.append(node, lines),
        )
