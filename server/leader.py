"""The leader's hub: one scheduler, one store, the links, the logs.

Everything that changes the farm goes through ``Leader.run``: call the
scheduler, let it dispatch, commit the resulting ``Changes`` to the store in
one transaction, and only then announce them (assignments and kills to the
agents, lines to the job logs, fan-out to consoles, webhooks). All of it runs
on the event loop thread without awaiting in between, so the scheduler never
sees two events interleave.

On PostgreSQL several leaders share the farm and one is active
(``server.lease``). A leader starts as a standby: its scheduler is empty, it
refuses writes, agents and consoles (``refusal``), and its lease keeper polls
the lease. When it takes the lease it loads the farm and starts its clock
(``_activate``). An active leader that loses its lease, or may have (it could
not renew it in time, a commit was fenced), steps down at once
(``step_down``): no commit, no dispatch, no agent lease from it after that
moment; it closes every link, and ``server.main`` starts it again as a
standby, with a fresh memory. A SQLite leader is always active.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import logging
import math
import os
import secrets
import signal
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol

import msgspec

from farmtui.protocol import (
    STANDBY_REFUSAL,
    DiscardStaged,
    EventView,
    KillChunk,
    LeaderToAgentMessage,
    NodeView,
)
from server.auth import Principal, Tokens
from server.commit_line import CommitLine, Group
from server.config import LeaderSettings
from server.disk_room import DiskRoom
from server.errors import NoRoom, StoreError
from server.failures import FailureLog
from server.heap import frozen_heap
from server.history import History
from server.joblogs import chunk_log_path
from server.log_process import LogProcess, attach_logs
from server.metrics import ChangeCounters
from server.migrate import MOVED_TO, check_not_moved
from server.model import Attempt, Changes, Chunk, Job
from server.resources import LIMITS_SETTING, decode_limits
from server.rights import SHARED_AGENT
from server.scheduler import Scheduler
from server.step_line import Mark, StepLine
from server.store import FarmStore, Fenced, Store, find_chunk, open_store
from server.store_url import parse_store_url
from server.sync_root import claim_root
from server.watchdog import THRESHOLD as STALL_THRESHOLD
from server.watchdog import LoopWatchdog
from server.webhooks import WebhookBody, Webhooks

if TYPE_CHECKING:
    from server.lease import LeaseKeeper

log = logging.getLogger("farmtui.leader")

LeaderRole = Literal["active", "standby"]
# Close code for links of a leader that stepped down (the peer tries the next leader).
CLOSE_STEPPED_DOWN = 1012  # service restart
# Close code for links whose token was revoked (policy violation: the peer gives up).
CLOSE_REVOKED = 1008

ADMIN_TOKEN_FILE = "admin.token"
AGENT_TOKEN_FILE = "agent.token"

OutputKey = tuple[str, int, int]

# Identical commit failures are logged at most once in this many seconds.
COMMIT_FAILURE_LOG_INTERVAL = 10.0
# The job list's JSON is reused this long while no job or node changed: its
# estimates also move with the clock, so a cached copy is never older than this.
JOB_LIST_TTL = 0.5
# Seconds of reports applied in one group commit; the rest wait for the loop's next turn.
# The group's dispatch and commit come on top, in proportion, and so does the reading of
# what the agents send back: with 300 agents a 15 ms budget made turns of ~80 ms (/healthz
# p50), 5 ms ~30 ms, at the same chunks a second. Once steps got cheaper (ebaad59) 5 ms
# held more of them and turns grew again (p99 48-59 ms); 3 ms: p99 40-44 ms (bench/README).
GROUP_BUDGET = 0.003
# After a restart, while restored nodes keep coming back, those not back yet count
# as heard as of the last one: for at most this many node_timeouts from start-up (the
# heaviest restart measured, 600 agents and CPU hogs, accepted its last at ~2.8).
RESTORE_TIMEOUTS = 4.0

_encoder = msgspec.json.Encoder()


class AgentConnection(Protocol):
    """What the leader needs from an agent link."""

    name: str
    token_hash: str

    def send(self, message: LeaderToAgentMessage) -> None: ...

    def close(self, code: int, reason: str) -> None: ...


class ConsoleConnection(Protocol):
    """What the leader needs from a console link."""

    token_hash: str

    def changed(self, changes: Changes) -> None: ...

    def task_output(self, key: OutputKey, lines: list[str]) -> None: ...

    def farm_reloaded(self) -> None:
        """Send the whole farm again (a Snapshot): what it was told may have been undone."""
        ...

    def close(self, code: int, reason: str) -> None: ...


@dataclass(slots=True)
class _Pending:
    """A step waiting for the group commit (see ``Leader.submit``)."""

    step: Callable[[float], Changes]
    dispatch: bool
    announce: Callable[[], None] | None
    future: asyncio.Future[None]
    needs_room: bool = True


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


def _log_level(event: EventView) -> int:
    """How loud a farm event is in the leader's own log.

    What people did and what went wrong are there; a job's routine
    progress (chunk 7 done in 3.2 s, job running -> done) only at DEBUG: it
    is in the job's events.log, and at farm scale it would be most of the
    log.
    """
    if event.level != "info":
        return logging.WARNING
    return logging.DEBUG if event.job_id and not event.actor else logging.INFO


def _fail(future: asyncio.Future[None], exc: BaseException) -> None:
    """Fail a step's future, unless its waiter was cancelled (a tick, at shutdown):
    the rest of its group is still answered."""
    if not future.done():
        future.set_exception(exc)


def _no_change(now: float) -> Changes:
    return Changes()


def _retry_dispatched(future: asyncio.Future[None]) -> None:
    if future.cancelled():
        return
    exc = future.exception()
    # A StoreError: commit() logged it, and the tick dispatches later.
    if exc is not None and not isinstance(exc, StoreError):
        log.error("dispatch after a retry backoff failed", exc_info=exc)


def stall_credit(late: float) -> float:
    """Seconds of a tick's lateness not held against any node: the loop's stalls only.

    A loop that turns, however busy, reads every socket each turn, so the
    heartbeats that came meanwhile were heard. Crediting all of a busy loop's
    lateness made every node's silence clock run slow: under 300 agents a
    frozen node was declared lost 30-50% after ``node_timeout``. A turn longer
    than a stall (the watchdog's threshold) held the heartbeats unread.
    """
    return max(0.0, late - STALL_THRESHOLD)


def _stores_anything(changes: Changes) -> bool:
    """Whether ``changes`` name anything the store keeps or anyone is told of."""
    return bool(
        changes.jobs
        or changes.chunks
        or changes.nodes
        or changes.removed
        or changes.assignments
        or changes.kills
        or changes.discards
        or changes.events
        or changes.notifications
        or changes.frames
        or changes.timeout_updates
    )


class Leader:
    def __init__(self, settings: LeaderSettings) -> None:
        self.settings = settings
        self.config = settings.config
        self.clock = settings.clock
        settings.data.mkdir(parents=True, exist_ok=True, mode=0o700)
        # Tokens and the database live here: owner only, whoever made the folder.
        os.chmod(settings.data, 0o700)
        settings.root.mkdir(parents=True, exist_ok=True)
        self.root = settings.root.resolve()
        # SQLite (<data>/farm.db) unless --store or leader.toml names another; either store's
        # commit runs on the loop (see server.store_postgres for what that costs).
        shared = parse_store_url(settings.store_url)[0] == "postgresql"
        # Who this leader is in the lease row, and in the names of its database sessions.
        self.holder = secrets.token_hex(16)
        self.store: FarmStore = open_store(
            settings.store_url,
            self.config.synchronous,
            lease=self.config.leader_lease if shared else None,
            holder=self.holder,
        )
        # How others reach this leader; a standby names the active one's in its refusals.
        self.advertise = settings.advertised
        # SQLite: changes are refused while its disk is nearly full (server.disk_room).
        self.disk_room = (
            DiskRoom(
                self.store.path.parent,
                int(self.config.disk_reserve_mb * 1024**2),
                self.store.free_bytes,
                ballast=True,
            )
            if isinstance(self.store, Store)
            else None
        )
        # SQLite: always active. PostgreSQL: a standby until the lease is ours (``start``).
        self.role: LeaderRole = "standby" if shared else "active"
        self.lease: LeaseKeeper | None = None
        self._lease_task: asyncio.Task[None] | None = None
        self.stepped_down = False
        # First: a leader refused here leaves no tokens behind.
        check_not_moved(self.store.setting(MOVED_TO), self.store.where)
        self.store.hold()
        self.root_id = claim_root(self.root, self.store)
        self.tokens = Tokens(self.store)
        self.admin_token, self.agent_token = self._own_tokens(remember=not shared)
        self.scheduler = Scheduler(self.config)
        # Log files are written in order by a process of their own: the sync root may be a
        # slow filer, and a thread of ours competed with the loop (``server.log_process``).
        self.logwriter = LogProcess(self.root)
        self.joblogs, self.nodelogs = attach_logs(self.root, self.logwriter)
        self.failures = FailureLog(lambda: self.scheduler.jobs)
        self.history = History(lambda: self.scheduler.jobs, self.joblogs)
        self.webhooks = Webhooks(self.config.webhook, self.config.webhook_timeout)
        self.agents: dict[str, AgentConnection] = {}
        self.consoles: set[ConsoleConnection] = set()
        self.followers: dict[OutputKey, set[ConsoleConnection]] = {}
        self.metrics = Metrics()
        # Chunks dispatched and done, events by level: for ``/metrics`` (server.metrics).
        self.counters = ChangeCounters()
        self._tick_task: asyncio.Task[None] | None = None
        self._watchdog_task: asyncio.Task[None] | None = None
        self.watchdog = LoopWatchdog()
        # Wake-ups at the end of chunks' retry backoffs (see ``_wake_for_retries``).
        self._retry_wakeups: set[asyncio.TimerHandle] = set()
        # A dispatch pass that stopped at its budget has its next one queued (``_dispatch_more``).
        self._more_queued = False
        self._pending: StepLine[_Pending] = StepLine()
        # Settings and tokens are written one at a time, on a thread (``operations``).
        self.setting_writes = asyncio.Lock()
        # Applied groups on their way to the store, committed on a thread of their own.
        self.commit_line = CommitLine(
            lambda batches: self.store.write(batches), self._landed, self._commit_failed
        )
        # ``write`` calls waiting for the steps that were waiting when they came.
        self._marks: list[tuple[Mark, asyncio.Future[None]]] = []
        # (node, agent id) of hellos read and waiting in the group commit (``hello_waiting``).
        self._hellos_waiting: collections.Counter[tuple[str, str]] = collections.Counter()
        # Nodes loaded at start-up that have not said hello since (``_tick``), and when
        # the last of them did.
        self._restored: set[str] = set()
        self._restored_arriving: float | None = None
        # Nodes coming back count for those not back yet only until then (``_tick``).
        self._restored_until = math.inf
        # Bumped by every commit that changes what a job view shows (``job_list_json``).
        self._views_version = 0
        self._job_lists: dict[bool, tuple[int, float, bytes]] = {}
        self.started = False
        # The loop ``start`` ran on. Python 3.11's asyncio.get_running_loop() makes a
        # getpid() system call each time (to notice a fork); once a report, that was
        # 2% of the loop's time with 300 agents.
        self._loop: asyncio.AbstractEventLoop | None = None

    def _own_tokens(self, remember: bool) -> tuple[str, str]:
        """This leader's admin and agent tokens, from (or made into) its data folder.

        ``remember``: known to the store too; a standby leaves the farm's
        tables alone until it is active.
        """
        data = self.settings.data
        admin = self.tokens.ensure_file(
            data / ADMIN_TOKEN_FILE, Principal("admin", "admin"), remember
        )
        agent = self.tokens.ensure_file(
            data / AGENT_TOKEN_FILE, Principal(SHARED_AGENT, "agent"), remember
        )
        return admin, agent

    def now(self) -> float:
        return self.clock()

    # --- life cycle ---------------------------------------------------------------
    async def start(self) -> None:
        """SQLite: load the store and start the clock. PostgreSQL: the same once the lease
        is ours, which is tried once here (a farm's only leader is active when it answers)
        and then by the lease keeper, in the background."""
        loop = self._loop = asyncio.get_running_loop()
        self._watchdog_task = loop.create_task(self.watchdog.run())
        if self.role == "active":
            await self._activate(None)
            return
        from server.lease import LeaseKeeper, lease_outlives_takeover

        shortfall = lease_outlives_takeover(self.config)
        if shortfall is not None:
            log.warning("%s", shortfall)
        self.lease = LeaseKeeper.create(
            self.settings.store_url,
            self.config.leader_lease,
            self.config.lease_renew_interval,
            self.advertise,
            self._activate,
            self.step_down,
            holder=self.holder,
        )
        await self.lease.stand_by()
        if self.role == "standby":
            log.info(
                "leader up as a standby (store %s, advertised as %s); the active leader is %s",
                self.store.where,
                self.advertise,
                self.lease.active_url or "not known yet",
            )
        self._lease_task = loop.create_task(self.lease.run())

    async def _activate(self, term: int | None) -> None:
        """Load the farm from the store and start dispatching (``term``: the lease's)."""
        if term is not None:
            from server.store_postgres import PostgresStore

            assert isinstance(self.store, PostgresStore)
            self.store.term = term
            # Moved away by farm migrate while this leader stood by: it must not run it.
            check_not_moved(self.store.setting(MOVED_TO), self.store.where)
            # A standby's tokens were read at its start; others may have been made since.
            # Its own files become known to the farm now that it runs it (fenced writes).
            self.tokens = Tokens(self.store)
            self._own_tokens(remember=True)
            # Off the loop: the keeper renews the lease while a big farm loads.
            jobs, nodes = await asyncio.to_thread(self.store.load)
            if self.stepped_down:
                return
        else:
            jobs, nodes = self.store.load()
        self.scheduler.set_limits(decode_limits(self.store.setting(LIMITS_SETTING)))
        self.role = "active"  # from here on without a pause: no request sees a half-loaded farm
        if self.disk_room is not None:
            self.disk_room.start()  # before the load's commit looks at the disk
        self.run(
            lambda now: self.scheduler.load(jobs, nodes, now), dispatch=False, needs_room=False
        )
        self._restored = {name for name, node in self.scheduler.nodes.items() if node.running}
        self._restored_until = self.now() + RESTORE_TIMEOUTS * self.config.node_timeout
        self.counters.start(self.scheduler.jobs)
        if self.settings.own_process:
            # The farm just loaded is here to stay: no full collection walks it again.
            frozen_heap.install()
        log.info(
            "leader up%s: %d jobs, %d nodes, store %s, sync root %s (id %s)",
            "" if term is None else f" and active (term {term}, advertised as {self.advertise})",
            len(jobs),
            len(nodes),
            self.store.where,
            self.root,
            self.root_id,
        )
        self._tick_task = asyncio.get_running_loop().create_task(self._tick_loop())
        self.started = True

    @property
    def active_url(self) -> str | None:
        """The active leader's URL as far as this one knows (itself when active)."""
        if self.role == "active":
            return self.advertise
        return None if self.lease is None or self.stepped_down else self.lease.active_url

    def refusal(self) -> str | None:
        """Why this leader takes no writes, agents or consoles now (one line); None: active."""
        if self.role == "active":
            return None
        active = self.active_url
        if self.stepped_down or active is None:
            return f"{STANDBY_REFUSAL}; no leader is active right now, try again shortly"
        return f"{STANDBY_REFUSAL}; the active leader is {active}"

    def leases_allowed(self) -> bool:
        """May this leader grant or extend an agent's lease now (``LeaseRenewed``, Welcome)?

        Only while its own lease is held by its own clock: an agent's lease then
        ends at most ``agent_lease`` after ours, before a new leader may move
        that agent's chunks (``server.lease``).
        """
        if self.role != "active":
            return False
        return self.lease is None or self.lease.held()

    def step_down(self, reason: str) -> None:
        """Stop at once: no commit, dispatch or agent lease; close the links; start again.

        Called when the lease is lost or may be. Memory may hold what another
        leader has since changed, so this leader does not go on as a standby
        with it: ``settings.on_step_down`` (``server.main``) stops serving and
        starts a fresh leader, a standby, on the same port.
        """
        if self.stepped_down:
            return
        self.stepped_down = True
        self.role = "standby"
        log.critical(
            "stepping down: %s. No commit, dispatch or agent lease from this leader from now "
            "on; closing %d agent and %d console links and starting again as a standby",
            reason,
            len(self.agents),
            len(self.consoles),
        )
        if self.lease is not None:
            self.lease.lose(reason)
        if self._tick_task is not None:
            self._tick_task.cancel()
        for handle in self._retry_wakeups:
            handle.cancel()
        self._retry_wakeups.clear()
        for agent in list(self.agents.values()):
            agent.close(CLOSE_STEPPED_DOWN, "this leader stepped down")
        for console in list(self.consoles):
            console.close(CLOSE_STEPPED_DOWN, "this leader stepped down")
        if self.settings.on_step_down is not None:
            self.settings.on_step_down()

    async def stop(self) -> None:
        for task in (self._tick_task, self._watchdog_task, self._lease_task):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        if not self.stepped_down:
            with contextlib.suppress(StoreError):  # the agents send them again
                self._apply_group(budget=None)
        self.commit_line.close()  # what is on its way is written (or failed) first
        for handle in self._retry_wakeups:
            handle.cancel()
        self._retry_wakeups.clear()
        await self.webhooks.aclose()
        self.joblogs.close()
        self.nodelogs.close()
        await asyncio.to_thread(self.logwriter.close)  # bounded: a filer may hang
        self.store.close()
        if self.lease is not None:
            # Last, after every commit: a standby takes over at its next poll.
            await self.lease.release()
        log.info(
            "leader stopped (%d events, mean %.3f ms; %d commits, mean %.3f ms on their "
            "thread; %d loop stalls over %.0f ms, longest %.0f ms)",
            self.metrics.events,
            self.metrics.mean_ms,
            self.commit_line.commits,
            self.commit_line.seconds * 1000 / max(1, self.commit_line.commits),
            self.watchdog.stalls,
            self.watchdog.threshold * 1000,
            self.watchdog.longest * 1000,
        )

    async def _tick_loop(self) -> None:
        """Lost nodes, expired blocks, through the group commit, ahead of the reports.

        Time the loop itself was blocked is not held against any node: their
        heartbeats are waiting, unread, in the sockets. Through the group
        commit rather than run at once (``run``), a tick never applies the
        whole backlog of a busy farm's reports in one turn of the loop (with
        300 agents that held the loop for ~0.5 s every second); ahead of them
        rather than behind, it does not wait for that backlog either, which
        made a frozen node be declared lost up to twice ``node_timeout`` after
        it froze. Nothing it judges is in that backlog: a node is heard when
        its heartbeat is read (``apply_live``), and a node silent for
        ``node_timeout`` sent nothing else meanwhile either.
        """
        interval = self.config.tick_interval
        loop = asyncio.get_running_loop()
        while True:
            asleep = loop.time()
            await asyncio.sleep(interval)
            late = max(0.0, loop.time() - asleep - interval)
            try:
                await self.queue_tick(stall_credit(late), busy=late)
            except StoreError:
                pass  # commit() logged it; the next tick tries again
            except Exception:
                log.exception("tick failed")

    def queue_tick(self, stalled: float = 0.0, busy: float = 0.0) -> asyncio.Future[None]:
        """A tick ahead of the reports waiting; ``stalled``: seconds the loop was blocked;
        ``busy``: how late the tick came, for nodes not back since start-up."""
        tick = functools.partial(self._tick, stalled=stalled, busy=busy, queued=self.now())
        return self.submit(tick, ahead=True)

    def _tick(self, now: float, stalled: float, busy: float, queued: float) -> Changes:
        # Silence judged as of the moment it was queued, against each node's last_seen
        # as it is now (heartbeats are applied as they are read, ``apply_live``, so one
        # read while the tick waited counts): a wait (for the group before it) counts
        # against no node.
        #
        # A node not back since start-up has no link the leader could read: while the
        # loop is too busy to accept it (a restarted leader under a whole farm's
        # reconnections and resent reports), its silence is the leader's. All of the
        # loop's lateness is credited to such nodes, not only its stalls: with 300
        # agents, nodes whose connections were still waiting to be accepted were
        # declared lost at start-up + node_timeout and their finished work redone.
        # And while they keep coming back, those not back yet are heard as of the
        # last one: under a heavier load (600 agents, the leader starved of CPU)
        # its ticks were on time but it accepted 30 connections a second, and a
        # node_timeout passed with hundreds still queued. That lasts only
        # RESTORE_TIMEOUTS × node_timeout from start-up: nodes trickling back (a
        # rolling reboot) must not keep a dead node's chunks from moving for long.
        absent = [name for name in self._restored if name not in self.agents]
        arriving = self._restored_arriving
        if arriving is not None:
            arriving = min(arriving, self._restored_until)
        changes = self.scheduler.tick(
            min(now, queued),
            stalled,
            heard=list(self._hellos_waiting),
            unreached=absent,
            busy=max(0.0, busy - stalled),
            arriving=arriving,
        )
        nodes = self.scheduler.nodes
        self._restored = {
            name
            for name in self._restored
            if (node := nodes.get(name)) is not None and not node.online and node.running
        }
        return changes

    @contextlib.contextmanager
    def hello_waiting(self, name: str, agent_id: str) -> Iterator[None]:
        """While a node's hello waits in the group commit, or its Welcome to be written,
        the node counts as heard.

        After a leader restart a whole farm says hello at once, behind the
        reports its agents resend; a hello may wait longer than ``node_timeout``
        for its turn. The tick, ahead of that queue, would declare its node
        lost, and the attempts its hello lists as finished would be rendered
        again elsewhere.
        """
        key = (name, agent_id)
        if name in self._restored:
            self._restored.discard(name)  # heard: from now on it is judged like any node
            self._restored_arriving = self.now()
        self._hellos_waiting[key] += 1
        try:
            yield
        finally:
            self._hellos_waiting[key] -= 1
            if self._hellos_waiting[key] <= 0:
                del self._hellos_waiting[key]

    # --- the one way to change the farm ---------------------------------------------
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
        loop = self.running_loop()
        future: asyncio.Future[None] = loop.create_future()
        # Ahead: behind those ahead already (a node's disconnect, then its next hello).
        self._pending.put(
            _Pending(step, dispatch, announce, future, needs_room), source, ahead=ahead
        )
        if len(self._pending) == 1:
            loop.call_soon(self._apply_pending)
        return future

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
        applied: list[_Pending] = []
        refusal = self.room_refusal()
        while (item := pending.take()) is not None:
            if refusal is not None and item.needs_room:
                _fail(item.future, NoRoom(refusal))  # before it changed anything: no undo
                continue
            try:
                # Merged and let go at once: a step's own Changes (a dozen sets and lists)
                # kept until the group was answered outlived the young collections, and
                # with 300 agents was half of what the garbage collector walked.
                group.merge(item.step(now))
            except Exception as exc:
                _fail(item.future, exc)
                continue
            applied.append(item)
            if budget is not None and time.perf_counter() - began > budget:
                break
        if pending:
            self.running_loop().call_soon(self._apply_pending)
        if self._marks:
            # Once this group is committed and announced, or failed: either way its steps
            # are dealt with (a callback, so the writer goes on after this group's answers).
            self.running_loop().call_soon(self._caught_up)
        if refusal is None and any(item.dispatch for item in applied):
            group.merge(self.scheduler.dispatch(now))
        try:
            self.commit(group, applied)
        except Exception as exc:
            for item in applied:
                _fail(item.future, exc)
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
            if item.announce is not None:
                try:
                    item.announce()
                except Exception:
                    log.exception("a committed change could not be logged")
            if not item.future.done():  # its waiter was cancelled (a tick, at shutdown)
                item.future.set_result(None)

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

    def commit(self, changes: Changes, steps: Sequence[_Pending] = ()) -> Group:
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
                _fail(item.future, error)

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

    def publish(
        self, changes: Changes, links: Mapping[str, AgentConnection | None] | None = None
    ) -> None:
        """Announce committed changes: agents first, then logs, consoles and webhooks.

        ``links``: the nodes' connections when the changes were applied (``commit``);
        a message for a node connected again since is not sent (``send_to_node``).
        """
        for assignment in changes.assignments:
            message = assignment.message
            if not message.log_path:
                message = msgspec.structs.replace(
                    message, log_path=chunk_log_path(message.job_id, message.chunk, message.attempt)
                )
            self.send_to_node(assignment.node, message, links)
        for kill in changes.kills:
            self.send_to_node(
                kill.node,
                KillChunk(
                    job_id=kill.job_id,
                    chunk=kill.chunk,
                    attempt=kill.attempt,
                    reason=kill.reason,
                    waiting_only=kill.waiting_only,
                ),
                links,
            )
        for node, update in changes.timeout_updates:
            self.send_to_node(node, update, links)
        for discard in changes.discards:
            self.send_to_node(
                discard.node,
                DiscardStaged(job_id=discard.job_id, chunk=discard.chunk, attempt=discard.attempt),
                links,
            )
        if changes.events:
            self.joblogs.events(changes.events)
            for event in changes.events:
                level = _log_level(event)
                if log.isEnabledFor(level):  # routine progress is DEBUG: not formatted
                    log.log(
                        level,
                        "%s%s%s",
                        f"[{event.job_id}] " if event.job_id else "",
                        event.text,
                        f" (by {event.actor})" if event.actor else "",
                    )
        if changes.jobs or changes.removed or changes.nodes:
            self._views_version += 1
        now = self.now()
        for note in changes.notifications:
            self.joblogs.event(
                EventView(
                    time=now,
                    level="info",
                    text=f"notification {note.kind}: {note.text}",
                    job_id=note.job_id,
                    actor="leader",
                )
            )
            job = self.scheduler.jobs.get(note.job_id)
            view = self.scheduler.job_view(note.job_id) if job is not None else None
            self.webhooks.notify(
                WebhookBody(job_id=note.job_id, kind=note.kind, text=note.text, job=view),
                job.spec.webhook if job is not None else None,
            )
        for job_id in changes.removed:
            self.joblogs.forget_job(job_id)
            for key in [k for k in self.followers if k[0] == job_id]:
                del self.followers[key]
        self.failures.observe(changes)
        self.history.observe(changes)
        self.counters.observe(changes, self.scheduler.jobs)
        for console in list(self.consoles):
            console.changed(changes)

    def send_to_node(
        self,
        node: str,
        message: LeaderToAgentMessage,
        links: Mapping[str, AgentConnection | None] | None = None,
    ) -> None:
        link = self.agents.get(node)
        if links is not None and node in links and links[node] is not link:
            # Decided for the node's connection before it connected again: its hello,
            # applied since, kept what it still runs and took back the rest. Sent to the
            # new connection, an assignment it had taken back ran beside its next attempt.
            log.info(
                "node %s connected again since; %s for its previous connection not sent",
                node,
                type(message).__name__,
            )
            return
        if link is None:
            # The scheduler requeues it when the node reconnects without it or is lost.
            log.warning("node %s is not connected; %s not sent", node, type(message).__name__)
            return
        link.send(message)

    def revoked(self, token_hash: str) -> int:
        """Close the agent and console links opened with a token just revoked; how many.

        Requests are checked one by one, so a revoked token's next one is refused;
        a link was checked once, when it opened, and would have gone on.
        """
        links: list[AgentConnection | ConsoleConnection] = [
            *(a for a in self.agents.values() if a.token_hash == token_hash),
            *(c for c in self.consoles if c.token_hash == token_hash),
        ]
        for link in links:
            link.close(CLOSE_REVOKED, "its token was revoked")
        return len(links)

    # --- reads ----------------------------------------------------------------------
    def job_list_json(self, include_archived: bool) -> bytes:
        """``GET /api/jobs``, encoded once for all the readers of an unchanged farm.

        Two hundred consoles and scripts polling the job list would otherwise
        build every job's view for each of them; a submit, an action or a
        chunk's end makes the next read build it afresh (read after write).
        """
        now = time.monotonic()
        cached = self._job_lists.get(include_archived)
        if (
            cached is not None
            and cached[0] == self._views_version
            and now - cached[1] < JOB_LIST_TTL
        ):
            return cached[2]
        data = _encoder.encode(self.scheduler.job_views(include_archived))
        self._job_lists[include_archived] = (self._views_version, now, data)
        return data

    # --- lookups the links need -----------------------------------------------------
    def chunk(self, job_id: str, index: int) -> Chunk | None:
        job = self.scheduler.jobs.get(job_id)
        return None if job is None else find_chunk(job, index)

    def attempt_of(self, node: str, job_id: str, index: int, attempt: int) -> Attempt | None:
        """The attempt if it is the chunk's latest and runs on ``node``; None for stale reports."""
        chunk = self.chunk(job_id, index)
        if chunk is None or chunk.attempt != attempt:
            return None
        for record in reversed(chunk.attempts):
            if record.number == attempt:
                return record if record.node == node else None
        return None

    def job(self, job_id: str) -> Job | None:
        return self.scheduler.jobs.get(job_id)

    def node_view(self, name: str) -> NodeView | None:
        for view in self.scheduler.node_views():
            if view.name == name:
                return view
        return None

    def new_job_id(self) -> str:
        while True:
            job_id = secrets.token_hex(4)
            if not self.scheduler.id_in_use(job_id):
                return job_id

    # --- live output ----------------------------------------------------------------
    def output(self, key: OutputKey, lines: list[str]) -> None:
        self.joblogs.chunk_output(*key, lines)
        for console in self.followers.get(key, ()):
            console.task_output(key, lines)

    def follow(self, key: OutputKey, console: ConsoleConnection) -> None:
        self.followers.setdefault(key, set()).add(console)

    def unfollow(self, console: ConsoleConnection) -> None:
        for key in [k for k, consoles in self.followers.items() if console in consoles]:
            self.followers[key].discard(console)
            if not self.followers[key]:
                del self.followers[key]
