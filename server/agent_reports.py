"""What each message from an agent does to the farm.

The agent link decodes a message and hands it here; this module turns it
into a step for the leader's group commit (``Leader.queue``), whose answer is
given once the step is committed: then, and only then, the link
acknowledges it. What the message adds to the job logs is written after the
commit (commit, then announce). A commit that fails fails the answer, so the
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
from collections.abc import Callable

import msgspec

from farmtui.printable import is_printable, printable
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
    KeptStaged,
)
from server.leader import Leader
from server.model import Changes

log = logging.getLogger("farmtui.leader.agent_reports")


class AgentReports:
    """Applies one node's messages; the link owns the socket, this owns their meaning."""

    def __init__(
        self,
        leader: Leader,
        node: str,
        answered: Callable[[AgentToLeader, BaseException | None], None],
    ) -> None:
        self.leader = leader
        self.node = node
        # The link's: a message is committed (None), or failed.
        self.answered = answered

    def current(self, job_id: str, chunk: int, attempt: int) -> bool:
        """The attempt is the chunk's latest, runs here, and has not ended: its log is open.

        A report about an attempt that ended (sent again after a link closed
        before its Ack, or late) adds nothing to the attempt's log.
        """
        record = self.leader.attempt_of(self.node, job_id, chunk, attempt)
        return record is not None and record.finished is None

    def queue(self, message: AgentToLeader) -> Step:
        """Queue ``message`` for the group commit: ``answered`` is called once it is
        committed, or failed, and the step returned says when (``Step.answered``)."""
        match message:
            case Heartbeat():
                step: Step = _Heartbeat(self, message)
                if message.seq <= 0:
                    self._heartbeat(step)
                    return step
            case ChunkStarted():
                step = _Started(self, message)
            case ChunkOutput():
                step = _Output(self, message)
            case ChunkProgress():
                step = _Progress(self, message)
            case FramesWritten():
                step = _Written(self, message)
            case ChunkTimedOut():
                step = _TimedOut(self, message)
            case ChunkFinished():
                step = _Finished(self, plain_words(message))
            case AgentLog():
                step = _AgentLog(self, message)
            case KeptStaged():
                step = _KeptStaged(self, message)
            case AgentHello():
                raise ValueError("hello is only valid as the first message")
        # A numbered heartbeat (an agent's are not): its Ack is cumulative, so it waits
        # its turn too.
        self.leader.queue(step, source=self.node)
        return step

    def refuse(self, message: AgentToLeader, why: BaseException) -> Step:
        """Answer ``message`` with ``why`` without applying it (an earlier one was refused)."""
        step = Step(self, message)
        step.set_exception(why)
        return step

    def _heartbeat(self, step: Step) -> None:
        # Applied and answered as soon as it is read (``Leader.apply_live``): the node
        # is heard now, and its lease renewed a turn of the loop later, however many
        # reports wait in the group commit. It stores nothing, so nothing waits for a
        # commit; a node that came back online is dispatched to by the next group.
        try:
            self.leader.apply_live(lambda now: step.apply(now, None))
        except Exception as exc:
            step.set_exception(exc)
        else:
            step.set_result(None)


class Step:
    """One message in the group commit: its step (called with the time it is applied)
    and its own answer (``group_commit.Waiting``), which tells the link.

    One small object per message rather than closures: with hundreds of agents
    a thousand or two reports wait in the group commit at any moment, and the
    closures' cells and functions (~13 objects a report) were a third of what
    each full collection of the garbage collector walked. And one rather than
    three (a step, a receipt for the link, the group commit's entry): two fewer
    objects and a dozen fewer fields set for each report.
    """

    __slots__ = ("reports", "message", "current", "answered", "frame")
    # Dispatch after the group (a report that may free a slot or change the farm's order).
    dispatch = False
    # A report about a chunk: its scheduler event reads neither the dispatch index nor
    # the free slots (``group_commit.Waiting``'s ``report``).
    report = False
    # Whether it may write to the store: refused while the disk is short if so.
    needs_room = True

    def __init__(self, reports: AgentReports, message: AgentToLeader) -> None:
        self.reports = reports
        self.message = message
        # Set when it is applied: the message is about the current attempt, so the
        # announcement (a log line) is written.
        self.current = False
        # Answered: committed, or failed (``done``).
        self.answered = False
        # Done once it is answered: set on the last report of a frame, which ``serve``
        # waits for (``AgentLink.handle_frame``).
        self.frame: asyncio.Future[None] | None = None

    def apply(self, now: float, into: Changes | None) -> Changes:
        """Apply the message; ``into``: the group's Changes, which a step about a chunk
        may add to and return rather than make its own (``GroupCommit.queue``)."""
        raise NotImplementedError

    def announce(self) -> None:
        """After the commit: what the message adds to the logs."""

    def done(self) -> bool:
        return self.answered

    def set_result(self, result: None, /) -> None:
        self._answer(None)

    def set_exception(self, exception: BaseException, /) -> None:
        self._answer(exception)

    def _answer(self, exc: BaseException | None) -> None:
        self.answered = True
        try:
            self.reports.answered(self.message, exc)
        except Exception:  # called by the group commit: the rest of the group is answered
            name = type(self.message).__name__
            log.exception("node %s: %s not answered", self.reports.node, name)
        if self.frame is not None and not self.frame.done():
            self.frame.set_result(None)


class _Heartbeat(Step):
    __slots__ = ()
    # Applied at once (``Leader.apply_live``), or, numbered, in its turn: then as a step
    # that may store, as ever.
    dispatch = True
    message: Heartbeat

    def apply(self, now: float, into: Changes | None) -> Changes:
        m = self.message
        scheduler = self.reports.leader.scheduler
        return scheduler.node_heartbeat(
            self.reports.node, m.cpu_percent, m.memory_percent, now, stopping=m.stopping
        )


class _Started(Step):
    __slots__ = ()
    message: ChunkStarted
    report = True

    def apply(self, now: float, into: Changes | None) -> Changes:
        m, reports = self.message, self.reports
        self.current = reports.current(m.job_id, m.chunk, m.attempt)
        return reports.leader.scheduler.chunk_started(
            reports.node, m.job_id, m.chunk, m.attempt, now, into, ran=m.pid > 0
        )

    def announce(self) -> None:
        if self.current:
            m, leader = self.message, self.reports.leader
            # The node's clock, as the footer's: a header heard after a freeze of the agent
            # read later than the footer of the same render.
            when = m.started if m.started > 0 else leader.now()
            leader.joblogs.chunk_started(
                m.job_id, m.chunk, m.attempt, self.reports.node, m.command, when
            )


class _Output(Step):
    __slots__ = ("needs_room",)
    message: ChunkOutput
    report = True

    def __init__(self, reports: AgentReports, message: ChunkOutput) -> None:
        super().__init__(reports, message)
        self.needs_room = _not_alive_yet(reports, message.job_id, message.chunk, message.attempt)

    def apply(self, now: float, into: Changes | None) -> Changes:
        m, reports = self.message, self.reports
        self.current = reports.current(m.job_id, m.chunk, m.attempt)
        return _alive(reports, m.job_id, m.chunk, m.attempt, now)

    def announce(self) -> None:
        if self.current:
            m = self.message
            self.reports.leader.output((m.job_id, m.chunk, m.attempt), m.lines)


class _Progress(Step):
    __slots__ = ("needs_room",)
    message: ChunkProgress
    report = True

    def __init__(self, reports: AgentReports, message: ChunkProgress) -> None:
        super().__init__(reports, message)
        self.needs_room = _not_alive_yet(reports, message.job_id, message.chunk, message.attempt)

    def apply(self, now: float, into: Changes | None) -> Changes:
        m = self.message
        return _alive(self.reports, m.job_id, m.chunk, m.attempt, now)


class _Written(Step):
    __slots__ = ()
    message: FramesWritten
    report = True

    def apply(self, now: float, into: Changes | None) -> Changes:
        m, node = self.message, self.reports.node
        scheduler = self.reports.leader.scheduler
        changes = scheduler.chunk_alive(node, m.job_id, m.chunk, m.attempt, now)
        return changes.merge(
            scheduler.frames_written(node, m.job_id, m.chunk, m.attempt, m.frames, m.staged, now)
        )


class _TimedOut(Step):
    __slots__ = ()
    message: ChunkTimedOut
    report = True

    def apply(self, now: float, into: Changes | None) -> Changes:
        m = self.message
        return self.reports.leader.scheduler.chunk_timed_out(
            self.reports.node, m.job_id, m.chunk, m.attempt, m.kind, m.elapsed, now
        )


class _Finished(Step):
    __slots__ = ()
    message: ChunkFinished
    report = True
    dispatch = True

    def apply(self, now: float, into: Changes | None) -> Changes:
        m, reports = self.message, self.reports
        self.current = reports.current(m.job_id, m.chunk, m.attempt)
        return reports.leader.scheduler.chunk_finished(reports.node, m, now, into)

    def announce(self) -> None:
        if self.current:
            leader = self.reports.leader
            leader.joblogs.chunk_finished(self.message, self.reports.node, leader.now())


class _AgentLog(Step):
    __slots__ = ()
    message: AgentLog
    needs_room = False

    def apply(self, now: float, into: Changes | None) -> Changes:
        return Changes()

    def announce(self) -> None:
        self.reports.leader.nodelogs.append(self.reports.node, self.message.lines)


class _KeptStaged(Step):
    __slots__ = ()
    message: KeptStaged
    needs_room = False  # it stores nothing: the node deletes files

    def apply(self, now: float, into: Changes | None) -> Changes:
        return self.reports.leader.scheduler.kept_staged(self.reports.node, self.message.kept)


def _not_alive_yet(reports: AgentReports, job_id: str, chunk: int, attempt: int) -> bool:
    """Whether ``_alive`` would write: the attempt's output and progress need no room once
    it is marked alive (it never goes back), so a short disk does not cost its lines."""
    record = reports.leader.attempt_of(reports.node, job_id, chunk, attempt)
    return record is not None and not record.alive


def _alive(reports: AgentReports, job_id: str, chunk: int, attempt: int, now: float) -> Changes:
    """The attempt's first sign of life (output, progress) marks it alive, once."""
    record = reports.leader.attempt_of(reports.node, job_id, chunk, attempt)
    if record is None or record.alive:
        return Changes()
    return reports.leader.scheduler.chunk_alive(reports.node, job_id, chunk, attempt, now)


# A node's reason for an attempt's end is kept (the store, each view of the attempt) and
# written where people read it: more than this is cut (a node is not to flood either).
MAX_REASON = 2000


def plain_words(report: ChunkFinished) -> ChunkFinished:
    """``report`` with its node's own words (reason, exit status) as plain text.

    They go into the job's events.log, the chunk log's footer and the leader's
    log, which people read on a terminal (``tail -f``): a node's reason of
    ``\x1b]0;...`` retitled it, or cleared it. The views escape what they show;
    those files are written as they are, so the words are made printable once,
    here, as the leader reads them.
    """
    reason, status = report.reason, report.exit_status
    if (
        len(reason) <= MAX_REASON
        and is_printable(reason)
        and (status is None or (len(status) <= MAX_REASON and is_printable(status)))
    ):
        return report
    return msgspec.structs.replace(
        report,
        reason=_cut(printable(reason)),
        exit_status=None if status is None else _cut(printable(status)),
    )


def _cut(text: str) -> str:
    return text if len(text) <= MAX_REASON else text[:MAX_REASON] + "…"
