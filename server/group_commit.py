"""The one way to change the farm: apply, dispatch, commit, and only then announce.

Everything that changes the farm goes through ``run``, ``write`` or ``submit``
(a base of ``server.leader.Leader``): call the scheduler, let it dispatch,
commit the resulting ``Changes`` to the store in one transaction, and only
then announce them (``server.announcements``). Steps that arrive together
(an agent's reports, a tick, a request) are applied as one group, up to
``GROUP_BUDGET`` seconds of them in a turn of the event loop, in one
transaction and one dispatch pass; each step's future is answered once its
group is committed and announced. All of it runs on the event loop thread
without awaiting in between, so the scheduler never sees two events
interleave; the commit itself runs on a thread of its own (``CommitLine``).

A commit that fails undoes itself and every group applied behind it: the
scheduler is rebuilt from the store (``_rebuild_from_store``), so memory and
disk never disagree, and the steps' futures fail with the StoreError.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol

from server.announcements import AgentConnection, Announcing
from server.commit_line import CommitLine, Group
from server.config import LeaderConfig
from server.disk_room import DiskRoom
from server.errors import NoRoom, StoreError
from server.model import Changes, Chunk
from server.step_line import Mark, StepLine
from server.store import FarmStore, Fenced

if TYPE_CHECKING:
    from server.lease import LeaseKeeper

log = logging.getLogger("farmtui.leader")

# Identical commit failures are logged at most once in this many seconds.
COMMIT_FAILURE_LOG_INTERVAL = 10.0
# Seconds of reports applied in one group commit; the rest wait for the loop's next turn.
# The group's dispatch and commit come on top, in proportion, and so does the reading of
# what the agents send back: with 300 agents a 15 ms budget made turns of ~80 ms (/healthz
# p50), 5 ms ~30 ms, at the same chunks a second. Once steps got cheaper (ebaad59) 5 ms
# held more of them and turns grew again (p99 48-59 ms); 3 ms: p99 40-44 ms (bench/README).
GROUP_BUDGET = 0.003


class Answer(Protocol):
    """Who is told once a step's group is committed and announced, or the step failed:
    a future (``submit``), or the step itself (``queue``)."""

    def done(self) -> bool: ...
    def set_result(self, result: None, /) -> None: ...
    def set_exception(self, exception: BaseException, /) -> None: ...


class Waiting(Answer, Protocol):
    """A step in the group commit, and its own answer: a ``submit``'s (``_Pending``),
    or an agent's report (``queue``): one object a report rather than three (its
    step, its answer, and an entry holding both), two every chunk rendered."""

    # Dispatch after its group.
    dispatch: bool
    # Refused while the disk is short (``room_refusal``).
    needs_room: bool
    # An agent's report about a chunk: its event reads neither the dispatch index nor
    # the free slots, which wait for the group (``Scheduler.defer_notes``), and it
    # writes into the group's Changes (``apply``'s ``into``).
    report: bool

    def apply(self, now: float, into: Changes) -> Changes:
        """The step; a report may add to ``into`` and return it rather than make its own."""
        ...

    def announce(self) -> None:
        """After its group is committed, before it is answered: what it adds to the logs."""
        ...


@dataclass(slots=True)
class _Pending:
    """A step waiting for the group commit (see ``Leader.submit``), answered by its future."""

    step: Callable[[float], Changes]
    dispatch: bool
    after: Callable[[], None] | None
    future: asyncio.Future[None]
    needs_room: bool = True
    report = False

    def apply(self, now: float, into: Changes) -> Changes:
        return self.step(now)

    def announce(self) -> None:
        if self.after is not None:
            self.after()

    def done(self) -> bool:
        return self.future.done()

    def set_result(self, result: None, /) -> None:
        self.future.set_result(result)

    def set_exception(self, exception: BaseException, /) -> None:
        self.future.set_exception(exception)


@dataclass(slots=True)
class Metrics:
    """Time spent handling events on the event loop (scheduler + commit + announce)."""

    events: int = 0
    seconds: float = 0.0
    slowest: float = 0.0

    def record(self, seconds: float) -> None:
        self.events += 1
        self.seconds += seconds
        self.slowest = max(self.slowest, seconds)

    @property
    def mean_ms(self) -> float:
        return 1000 * self.seconds / self.events if self.events else 0.0


def _fail(step: Answer, exc: BaseException) -> None:
    """Fail a step, unless its waiter was cancelled (a tick, at shutdown): the rest of
    its group is still answered."""
    if not step.done():
        step.set_exception(exc)


def _no_change(now: float) -> Changes:
    return Changes()


def _retry_dispatched(future: asyncio.Future[None]) -> None:
    if future.cancelled():
        return
    exc = future.exception()
    # A StoreError: commit() logged it, and the tick dispatches later.
    if exc is not None and not isinstance(exc, StoreError):
        log.error("dispatch after a retry backoff failed", exc_info=exc)


def _stores_anything(changes: Changes) -> bool:
    """Whether ``changes`` name anything the store keeps or anyone is told of."""
    return bool(
        changes.jobs
        or changes.chunks
        or changes.nodes
        or changes.contacts
        or changes.removed
        or changes.assignments
        or changes.kills
        or changes.discards
        or changes.events
        or changes.notifications
        or changes.frames
        or changes.timeout_updates
    )


class GroupCommit(Announcing):
    """Apply steps in groups, commit each group, announce it once committed."""

    # The leader's, set in its ``__init__``.
    config: LeaderConfig
    store: FarmStore
    disk_room: DiskRoom | None
    lease: LeaseKeeper | None
    started: bool
    metrics: Metrics
    commit_line: CommitLine
    _pending: StepLine[Waiting]
    # ``write`` calls waiting for the steps that were waiting when they came.
    _marks: list[tuple[Mark, asyncio.Future[None]]]
    # Wake-ups at the end of chunks' retry backoffs (see ``_wake_for_retries``).
    _retry_wakeups: set[asyncio.TimerHandle]
    # A dispatch pass that stopped at its budget has its next one queued (``_dispatch_more``).
    _more_queued: bool
    _loop: asyncio.AbstractEventLoop | None
    role: Literal["active", "standby"]

    if TYPE_CHECKING:  # Leader's, used here

        def leases_allowed(self) -> bool: ...
        def refusal(self) -> str | None: ...
        def step_down(self, reason: str) -> None: ...
        def chunk(self, job_id: str, index: int) -> Chunk | None: ...

    def run(
        self, step: Callable[[float], Changes], *, dispatch: bool = True, needs_room: bool = True
    ) -> Changes:
        """Apply ``step(now)`` (then dispatch), commit, announce. SchedulerError changes nothing.

        Agents' reports waiting in the group commit (``submit``) are applied
        first, so the farm sees every change in the order it arrived. While the
        disk is nearly full (``room_refusal``) StoreError and nothing changed,
        unless ``needs_room`` is False (deleting jobs, loading the farm); nothing
        is dispatched then. All in this turn of the loop, however many wait: requests
        go through ``write``.
        """
        if self._pending:
            self._apply_group(budget=None)  # all of them first: their order is kept
        refusal = self.room_refusal()
        if refusal is not None and needs_room:
            raise NoRoom(refusal)
        began = time.perf_counter()
        now = self.now()
        changes = step(now)
        if dispatch and refusal is None:
            changes.merge(self.scheduler.dispatch(now))
        group = self.commit(changes)
        self.commit_line.drain()  # this turn, as its caller expects: waits for the one in flight
        if group.error is not None:
            raise group.error
        self._wake_for_retries(changes, now)
        self._dispatch_more()
        self.metrics.record(time.perf_counter() - began)
        return changes

    async def write(self, step: Callable[[float], Changes], *, needs_room: bool = True) -> Changes:
        """Apply ``step`` as ``run`` does (then dispatch, commit, announce; SchedulerError
        changes nothing), after every step waiting now, without applying those in this
        turn of the loop: an operator's or a client's change.

        ``run`` applies what waits in one go: with links flooding reports, an
        operator's pause applied 20,788 of them in one turn (177 ms), every agent
        and console waiting. Here they go in the group commit's groups, the loop
        serving between them, and then ``step``, ahead of what is still waiting:
        it sees every change that arrived before it (some that came after may go
        first, as steps of different sources do).
        """
        if self._pending:
            caught_up: asyncio.Future[None] = self.running_loop().create_future()
            self._marks.append((self._pending.mark(), caught_up))
            await caught_up
        made: list[Changes] = []

        def recorded(now: float) -> Changes:
            changes = step(now)
            made.append(changes)
            return changes

        await self.submit(recorded, ahead=True, needs_room=needs_room)
        return made[0]

    def _caught_up(self) -> None:
        """Let the ``write`` calls go whose steps waiting before them are all applied."""
        waiting = []
        for mark, caught_up in self._marks:
            if caught_up.done():  # its request went away
                continue
            if StepLine.passed(mark):
                caught_up.set_result(None)
            else:
                waiting.append((mark, caught_up))
        self._marks = waiting

    def apply_live(self, step: Callable[[float], Changes]) -> Changes:
        """Apply a change that stores nothing (live readings) at once and announce it.

        Ahead of the reports waiting in the group commit: a node's heartbeat, so
        that its lease is renewed a turn of the loop after it is read, however
        long that queue. Queued, a leader busy with a flood of reports answered
        heartbeats seconds late, and a healthy node with a short lease lost it
        and killed its renders. Its order among the node's other reports does
        not matter: it only says the node was heard (``Scheduler.tick`` reads
        ``last_seen`` when it is applied, so a heartbeat applied before a tick
        always counts).
        """
        changes = step(self.now())
        if _stores_anything(changes):
            # Not committed, so not announced: whatever it was must not reach anyone.
            self.commit_line.drain()  # the store is read next: no commit in flight
            self._rebuild_from_store(StoreError("a live change tried to change the farm"))
            raise RuntimeError("apply_live: the step changed what the store keeps")
        self.publish(changes)
        return changes

    def submit(
        self,
        step: Callable[[float], Changes],
        *,
        dispatch: bool = True,
        announce: Callable[[], None] | None = None,
        ahead: bool = False,
        needs_room: bool = True,
        source: str | None = None,
    ) -> asyncio.Future[None]:
        """Group commit: ``step`` is applied with the others that arrive in this turn
        of the event loop, in one transaction and one dispatch pass.

        The future is done (None) once the group is committed and announced (then
        ``announce`` runs: what the step adds to the logs), or failed with the
        step's own exception, or with StoreError for the whole group when the
        commit failed (the scheduler is then rebuilt from the store, as for
        ``run``). The steps of one ``source`` (a node's reports; None: the rest)
        are applied in the order they were submitted, so each sees what the ones
        before it did: a step checks the farm when it is applied, not when it is
        submitted. Sources take turns, up to 64 steps each (``server.step_line``).
        ``ahead``: before every step waiting that was not itself submitted ahead
        (a tick, a hello, a disconnect), in their order. ``needs_room``: see
        ``run``; False only for changes that must not wait for room.
        """
        future: asyncio.Future[None] = self.running_loop().create_future()
        self.queue(
            _Pending(step, dispatch, announce, future, needs_room), source=source, ahead=ahead
        )
        return future

    def queue(self, step: Waiting, *, source: str | None = None, ahead: bool = False) -> None:
        """``submit`` a step that is its own answer (an agent's report: ``Waiting``).

        An agent's reports: their answer is an Ack, queued on the spot as their group
        lands, so it goes out in the same frame as the assignments that group made.
        A future per report cost a callback and a turn of the loop each, and its
        Ack came a turn after the assignments, in a frame of its own (two writes
        to each agent per group).
        """
        # Ahead: behind those ahead already (a node's disconnect, then its next hello).
        self._pending.put(step, source, ahead=ahead)
        if len(self._pending) == 1:
            self.running_loop().call_soon(self._apply_pending)

    def running_loop(self) -> asyncio.AbstractEventLoop:
        """The event loop the leader runs on (that of ``start``), as get_running_loop() says."""
        return self._loop if self._loop is not None else asyncio.get_running_loop()

    def room_refusal(self) -> str | None:
        """Why a change needing room is refused now (the disk is nearly full), or None."""
        return None if self.disk_room is None else self.disk_room.refusal()

    def _apply_pending(self) -> None:
        self._apply_group(GROUP_BUDGET)

    def _apply_group(self, budget: float | None) -> None:
        """Apply the waiting steps as one group, for at most ``budget`` seconds
        (None: all of them).

        With hundreds of agents a turn of the loop brings a thousand reports;
        applied as one group they held the loop for 0.4-0.7 s, and every
        other request (``/healthz``, a console) waited behind them. The rest
        go in the next group, after whatever else is ready on the loop; the
        order of each source's steps is kept (``run`` applies every waiting
        one before its own step).
        """
        pending = self._pending
        if not pending:
            return
        began = time.perf_counter()
        now = self.now()
        group = Changes()
        applied: list[Waiting] = []
        refusal = self.room_refusal()
        scheduler = self.scheduler
        reports = False  # a run of reports is applied: the index waits for ``group``
        try:
            while (item := pending.take()) is not None:
                if refusal is not None and item.needs_room:
                    _fail(item, NoRoom(refusal))  # before it changed anything: no undo
                    continue
                if item.report != reports:
                    reports = item.report
                    if reports:
                        scheduler.defer_notes()
                    else:  # any other step sees the index up to date
                        scheduler.note_deferred(group)
                try:
                    # A report writes into the group's Changes: a Changes of its own (a
                    # dozen sets and lists) made and merged for each was a tenth of its
                    # step. A step that raises leaves in it what it had changed
                    # (committed with the rest, as memory holds it). Another step's own
                    # Changes is merged and let go at once: kept until the group was
                    # answered, they outlived the young collections, and with 300
                    # agents were half of what the garbage collector walked.
                    changes = item.apply(now, group)
                    if changes is not group:
                        group.merge(changes)
                except Exception as exc:
                    _fail(item, exc)
                    continue
                applied.append(item)
                if budget is not None and time.perf_counter() - began > budget:
                    break
        finally:
            if reports:
                scheduler.note_deferred(group)
        if pending:
            self.running_loop().call_soon(self._apply_pending)
        if self._marks:
            # Once this group is committed and announced, or failed: either way its steps
            # are dealt with (a callback, so the writer goes on after this group's answers).
            self.running_loop().call_soon(self._caught_up)
        if refusal is None and any(item.dispatch for item in applied):
            try:
                group.merge(self.scheduler.dispatch(now))
            except Exception:
                # A bug: the group's own changes are committed and answered all the same,
                # or their senders (an agent's link reads no more till then) wait for good.
                log.exception("a dispatch pass failed")
        try:
            self.commit(group, applied)
        except Exception as exc:
            for item in applied:
                _fail(item, exc)
            return
        finally:
            self.metrics.record(time.perf_counter() - began)
        self._wake_for_retries(group, now)
        self._dispatch_more()

    def _landed(self, group: Group) -> None:
        """A group is committed (``commit_line``): announce it, answer its steps."""
        try:
            self.publish(group.changes, group.links)
        except Exception:
            log.exception("a committed change could not be announced")
        for item in group.steps:
            try:
                item.announce()
            except Exception:
                log.exception("a committed change could not be logged")
            if not item.done():  # its waiter was cancelled (a tick, at shutdown)
                item.set_result(None)

    def _wake_for_retries(self, changes: Changes, now: float) -> None:
        """Dispatch again when a chunk's backoff ends, not only at the next tick.

        Otherwise every retry waits for a tick or a heartbeat, and short
        exponential backoffs all come out as the same tick-sized gap.
        """
        if not self.started or not changes.chunks:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # called outside the event loop: the tick will do
            return
        self._retry_wakeups = {h for h in self._retry_wakeups if h.when() > loop.time()}
        for job_id, index in changes.chunks:
            chunk = self.chunk(job_id, index)
            if chunk is None or chunk.state != "waiting-retry" or chunk.retry_at is None:
                continue
            # A hair late rather than early: the scheduler compares retry_at with its clock.
            delay = max(0.0, chunk.retry_at - now) + 0.01
            handle = loop.call_later(delay, self._retry_due)
            self._retry_wakeups.add(handle)

    def _dispatch_more(self) -> None:
        """A dispatch pass stopped at its budget (``ASSIGN_BUDGET``): the next one soon,
        as a group of its own, after what else is waiting on the loop."""
        if not self.started or not self.scheduler.cut_short or self._more_queued:
            return
        try:
            asyncio.get_running_loop()
        except RuntimeError:  # called outside the event loop: the tick will do
            return
        self._more_queued = True
        self.submit(self._more_step).add_done_callback(self._more_done)

    def _more_done(self, future: asyncio.Future[None]) -> None:
        if future.cancelled() or future.exception() is not None:
            self._more_queued = False  # refused before its step ran: the next pass may ask

    def _more_step(self, now: float) -> Changes:
        self._more_queued = False  # its own pass may stop at the budget again
        return Changes()

    def _retry_due(self) -> None:
        # Through the group commit, not ``run``: the steps waiting are applied in their
        # groups, not all in this turn.
        self.submit(_no_change).add_done_callback(_retry_dispatched)

    # (text, monotonic time) of the last failed commit logged at ERROR, and how many
    # identical failures were kept quiet since (see ``_log_commit_failure``).
    _commit_failure_logged: tuple[str, float] | None = None
    _commit_failures_quiet: int = 0

    def commit(self, changes: Changes, steps: Sequence[Waiting] = ()) -> Group:
        """Queue ``changes`` for their commit (``commit_line``), then their announcement.

        Their rows are built now, from memory as it is. When the commit fails
        (StoreError: the disk is full ...), nothing of it is announced: the
        scheduler is rebuilt from the store, so memory again holds exactly what
        is on disk, and each step's future fails with the StoreError, which its
        caller answers (REST 503, console Reply) or an agent's message is left
        unacknowledged so the agent sends it again (``_commit_failed``).
        """
        if not self.leases_allowed():
            # A standby, or an active leader whose lease ran out by its own clock:
            # another may be active. Nothing is saved or announced (``server.lease``).
            if self.role == "active":
                lease = self.config.leader_lease
                self.step_down(f"the lease ran out (not renewed within {lease:g} s)")
            raise Fenced(self.refusal() or "this leader is not active: nothing was changed")
        if self.commit_line.closed:
            # Stopping: a link that closes now (its disconnect) must not reach the store,
            # which is closed next; its agent sends what it had again to the next leader.
            raise StoreError("the leader is stopping: nothing was changed")
        group = Group(changes, steps, self._links_of(changes))
        self.commit_line.put(group, self.store.written.queued(changes, self.scheduler))
        return group

    def _links_of(self, changes: Changes) -> dict[str, AgentConnection | None]:
        """The connections of the nodes ``changes`` sends messages to, as they are now."""
        nodes = {assignment.node for assignment in changes.assignments}
        nodes.update(kill.node for kill in changes.kills)
        nodes.update(node for node, _ in changes.timeout_updates)
        nodes.update(discard.node for discard in changes.discards)
        return {node: self.agents.get(node) for node in nodes}

    def _commit_failed(self, groups: list[Group], error: BaseException) -> None:
        """A commit failed: it and every group applied behind it are undone.

        Called with the commits' thread idle, so the store can be read again.
        """
        if not isinstance(error, StoreError):
            # A bug. Told as a failed save all the same: an agent whose report fails any
            # other way takes it for a bad report and drops it, though it was never kept.
            log.error("a commit failed: %r", error, exc_info=error)
            error = StoreError(
                f"the leader could not save the change ({type(error).__name__}, see its log): "
                "it may not have been saved",
                repr(error),
            )
        if isinstance(error, Fenced):
            self.step_down(f"a commit was fenced ({error.detail or error})")
        elif self.lease is not None and not self.lease.held():
            self.step_down(f"a commit failed and the lease ran out ({error})")
        else:
            self._rebuild_from_store(error)
        for group in groups:
            group.error = error
            for item in group.steps:
                _fail(item, error)

    def _rebuild_from_store(self, error: StoreError) -> None:
        """Undo a change that could not be committed by reloading what the store holds.

        The scheduler changes its records in place before the commit, so a
        failed commit leaves memory ahead of the disk: a job that was never
        saved would show as queued, a pause would look applied, and both would
        vanish at the next restart. Of the ways to stop that, rebuilding from
        the store was chosen because it costs nothing until a commit fails:
        applying each event to a copy of the state costs a copy per event; an
        undo log is a second source of truth that must match every rule; and
        stopping the leader would also stop the reads (job lists, logs, the
        console) that still work on a full disk. Live node fields (online,
        last seen, load) are kept by ``Scheduler.reload``: they are not stored.
        """
        self._log_commit_failure(error)
        try:
            jobs, nodes = self.store.load()
        except StoreError as reload_error:
            # Memory may now hold a change that is not on disk, and nothing can
            # undo it. With a lease (PostgreSQL), step down: a fresh standby
            # takes the lease again once the database answers (this one or another
            # leader). Alone (SQLite), stop (uvicorn shuts down on SIGTERM) rather
            # than go on with a picture the database does not share.
            if self.lease is not None:
                self.step_down(f"could not reload the store after a failed commit ({reload_error})")
                return
            log.critical(
                "could not reload the store after a failed commit (%s); stopping the leader",
                reload_error,
            )
            os.kill(os.getpid(), signal.SIGTERM)
            return
        self.scheduler.reload(jobs, nodes, self.now())
        # What was read meanwhile may hold what was undone (``commit_line``: reads see
        # the groups applied before their commits return): a job list, a console's views.
        self._views_version += 1
        for console in self.consoles:
            console.farm_reloaded()

    def _log_commit_failure(self, error: StoreError) -> None:
        """One ERROR line per distinct failure every ``COMMIT_FAILURE_LOG_INTERVAL`` s.

        With a full disk every heartbeat and request fails the same way; a line
        for each would bury the first one (and fill what is left of the disk).
        """
        text = f"{error} ({error.detail})" if error.detail else str(error)
        now = time.monotonic()
        last = self._commit_failure_logged
        if last is not None and last[0] == text and now - last[1] < COMMIT_FAILURE_LOG_INTERVAL:
            self._commit_failures_quiet += 1
            return
        quiet = self._commit_failures_quiet
        more = f" ({quiet} failed commits not logged since the last report)" if quiet else ""
        log.error("commit failed, change undone: %s%s", text, more)
        self._commit_failure_logged = (text, now)
        self._commit_failures_quiet = 0
