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

import logging

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
from server.group_commit import Answer
from server.leader import Leader
from server.model import Changes

log = logging.getLogger("farmtui.leader.agent_reports")


class AgentReports:
    """Applies one node's messages; the link owns the socket, this owns their meaning."""

    def __init__(self, leader: Leader, node: str) -> None:
        self.leader = leader
        self.node = node

    def current(self, job_id: str, chunk: int, attempt: int) -> bool:
        """The attempt is the chunk's latest, runs here, and has not ended: its log is open.

        A report about an attempt that ended (sent again after a link closed
        before its Ack, or late) adds nothing to the attempt's log.
        """
        record = self.leader.attempt_of(self.node, job_id, chunk, attempt)
        return record is not None and record.finished is None

    def queue(self, message: AgentToLeader, answer: Answer) -> None:
        """Queue ``message`` for the group commit; ``answer`` is answered once it is
        committed, or failed (``GroupCommit.queue``)."""
        match message:
            case Heartbeat():
                self._heartbeat(message, answer)
                return
            case ChunkStarted():
                step: _Step = _Started(self, message)
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
        self.leader.queue(
            step,
            answer,
            dispatch=step.dispatches,
            announce=step.announce if step.announces else None,
            needs_room=step.needs_room(),
            source=self.node,
            report=step.about_a_chunk,
        )

    def _heartbeat(self, message: Heartbeat, answer: Answer) -> None:
        step = _Heartbeat(self, message)
        if message.seq > 0:
            # Numbered (an agent's are not): its Ack is cumulative, so it waits its turn.
            self.leader.queue(step, answer, source=self.node)
            return
        # Applied and answered as soon as it is read (``Leader.apply_live``): the node
        # is heard now, and its lease renewed a turn of the loop later, however many
        # reports wait in the group commit. It stores nothing, so nothing waits for a
        # commit; a node that came back online is dispatched to by the next group.
        try:
            self.leader.apply_live(step)
        except Exception as exc:
            answer.set_exception(exc)
        else:
            answer.set_result(None)


class _Step:
    """One message's step in the group commit (called with the time it is applied).

    One small object per message rather than closures: with hundreds of agents
    a thousand or two reports wait in the group commit at any moment, and the
    closures' cells and functions (~13 objects a report) were a third of what
    each full collection of the garbage collector walked.
    """

    __slots__ = ("reports", "current")
    # Dispatch after the group (a report that may free a slot or change the farm's order).
    dispatches = False
    # What it adds to the logs after the commit (``announce``), if anything.
    announces = False
    # A report about a chunk: its scheduler event reads neither the dispatch index nor
    # the free slots (``GroupCommit.queue``'s ``report``).
    about_a_chunk = False

    def __init__(self, reports: AgentReports) -> None:
        self.reports = reports
        # Set when it is applied: the message is about the current attempt, so the
        # announcement (a log line) is written.
        self.current = False

    def __call__(self, now: float, into: Changes | None = None) -> Changes:
        """Apply the message; ``into``: the group's Changes, which a step about a chunk
        may add to and return rather than make its own (``GroupCommit.queue``)."""
        raise NotImplementedError

    def announce(self) -> None:
        """After the commit: what the message adds to the logs."""

    def needs_room(self) -> bool:
        """Whether it may write to the store: refused while the disk is short if so."""
        return True


class _Heartbeat(_Step):
    __slots__ = ("message",)
    dispatches = True

    def __init__(self, reports: AgentReports, message: Heartbeat) -> None:
        super().__init__(reports)
        self.message = message

    def __call__(self, now: float, into: Changes | None = None) -> Changes:
        m = self.message
        scheduler = self.reports.leader.scheduler
        return scheduler.node_heartbeat(
            self.reports.node, m.cpu_percent, m.memory_percent, now, stopping=m.stopping
        )

    def needs_room(self) -> bool:
        return False  # live readings: it stores nothing (``Leader.apply_live``)


class _Started(_Step):
    __slots__ = ("message",)
    about_a_chunk = True
    announces = True

    def __init__(self, reports: AgentReports, message: ChunkStarted) -> None:
        super().__init__(reports)
        self.message = message

    def __call__(self, now: float, into: Changes | None = None) -> Changes:
        m, reports = self.message, self.reports
        self.current = reports.current(m.job_id, m.chunk, m.attempt)
        return reports.leader.scheduler.chunk_started(
            reports.node, m.job_id, m.chunk, m.attempt, now, into
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


class _Output(_Step):
    __slots__ = ("message",)
    about_a_chunk = True
    announces = True

    def __init__(self, reports: AgentReports, message: ChunkOutput) -> None:
        super().__init__(reports)
        self.message = message

    def __call__(self, now: float, into: Changes | None = None) -> Changes:
        m, reports = self.message, self.reports
        self.current = reports.current(m.job_id, m.chunk, m.attempt)
        return _alive(reports, m.job_id, m.chunk, m.attempt, now)

    def needs_room(self) -> bool:
        m = self.message
        return _not_alive_yet(self.reports, m.job_id, m.chunk, m.attempt)

    def announce(self) -> None:
        if self.current:
            m = self.message
            self.reports.leader.output((m.job_id, m.chunk, m.attempt), m.lines)


class _Progress(_Step):
    __slots__ = ("message",)
    about_a_chunk = True

    def __init__(self, reports: AgentReports, message: ChunkProgress) -> None:
        super().__init__(reports)
        self.message = message

    def __call__(self, now: float, into: Changes | None = None) -> Changes:
        m = self.message
        return _alive(self.reports, m.job_id, m.chunk, m.attempt, now)

    def needs_room(self) -> bool:
        m = self.message
        return _not_alive_yet(self.reports, m.job_id, m.chunk, m.attempt)


class _Written(_Step):
    __slots__ = ("message",)
    about_a_chunk = True

    def __init__(self, reports: AgentReports, message: FramesWritten) -> None:
        super().__init__(reports)
        self.message = message

    def __call__(self, now: float, into: Changes | None = None) -> Changes:
        m, node = self.message, self.reports.node
        scheduler = self.reports.leader.scheduler
        changes = scheduler.chunk_alive(node, m.job_id, m.chunk, m.attempt, now)
        return changes.merge(
            scheduler.frames_written(node, m.job_id, m.chunk, m.attempt, m.frames, m.staged, now)
        )


class _TimedOut(_Step):
    __slots__ = ("message",)
    about_a_chunk = True

    def __init__(self, reports: AgentReports, message: ChunkTimedOut) -> None:
        super().__init__(reports)
        self.message = message

    def __call__(self, now: float, into: Changes | None = None) -> Changes:
        m = self.message
        return self.reports.leader.scheduler.chunk_timed_out(
            self.reports.node, m.job_id, m.chunk, m.attempt, m.kind, m.elapsed, now
        )


class _Finished(_Step):
    __slots__ = ("message",)
    about_a_chunk = True
    dispatches = True
    announces = True

    def __init__(self, reports: AgentReports, message: ChunkFinished) -> None:
        super().__init__(reports)
        self.message = message

    def __call__(self, now: float, into: Changes | None = None) -> Changes:
        m, reports = self.message, self.reports
        self.current = reports.current(m.job_id, m.chunk, m.attempt)
        return reports.leader.scheduler.chunk_finished(reports.node, m, now, into)

    def announce(self) -> None:
        if self.current:
            leader = self.reports.leader
            leader.joblogs.chunk_finished(self.message, self.reports.node, leader.now())


class _AgentLog(_Step):
    __slots__ = ("message",)
    announces = True

    def __init__(self, reports: AgentReports, message: AgentLog) -> None:
        super().__init__(reports)
        self.message = message

    def __call__(self, now: float, into: Changes | None = None) -> Changes:
        return Changes()

    def needs_room(self) -> bool:
        return False

    def announce(self) -> None:
        self.reports.leader.nodelogs.append(self.reports.node, self.message.lines)


class _KeptStaged(_Step):
    __slots__ = ("message",)

    def __init__(self, reports: AgentReports, message: KeptStaged) -> None:
        super().__init__(reports)
        self.message = message

    def __call__(self, now: float, into: Changes | None = None) -> Changes:
        return self.reports.leader.scheduler.kept_staged(self.reports.node, self.message.kept)

    def needs_room(self) -> bool:
        return False  # it stores nothing: the node deletes files


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
