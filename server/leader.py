"""The leader's hub: one scheduler, one store, the links, the logs.

Every change to the farm goes through the group commit (``server.group_commit``:
apply, dispatch, commit in one transaction, and only then announce, with
``server.announcements``), on the event loop thread without awaiting in
between, so the scheduler never sees two events interleave. Here: the
leader's life (start, ticks, stepping down, stop) and what the links and the
API read.

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
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Literal

import msgspec

from farmtui.protocol import STANDBY_REFUSAL, NodeView
from server.announcements import CLOSE_STEPPED_DOWN, ConsoleConnection, OutputKey
from server.auth import Principal, Tokens
from server.commit_line import CommitLine
from server.config import LeaderSettings
from server.disk_room import DiskRoom
from server.errors import StoreError
from server.failures import FailureLog
from server.group_commit import GroupCommit, Metrics
from server.heap import frozen_heap
from server.history import History
from server.log_process import LogProcess, attach_logs
from server.metrics import ChangeCounters
from server.migrate import MOVED_TO, check_not_moved
from server.model import Attempt, Changes, Chunk, Job
from server.resources import LIMITS_SETTING, decode_limits
from server.rights import SHARED_AGENT
from server.scheduler import Scheduler
from server.step_line import StepLine
from server.store import Store, find_chunk, open_store
from server.store_url import parse_store_url
from server.sync_root import claim_root
from server.upload_records import sweep_uploads
from server.watchdog import THRESHOLD as STALL_THRESHOLD
from server.watchdog import LoopWatchdog
from server.webhooks import Webhooks

if TYPE_CHECKING:
    from server.lease import LeaseKeeper

log = logging.getLogger("farmtui.leader")

LeaderRole = Literal["active", "standby"]

ADMIN_TOKEN_FILE = "admin.token"
AGENT_TOKEN_FILE = "agent.token"

# The job list's JSON is reused this long while no job or node changed: its
# estimates also move with the clock, so a cached copy is never older than this.
JOB_LIST_TTL = 0.5
# After a restart, while restored nodes keep coming back, those not back yet count
# as heard as of the last one: for at most this many node_timeouts from start-up (the
# heaviest restart measured, 600 agents and CPU hogs, accepted its last at ~2.8).
RESTORE_TIMEOUTS = 4.0
# Every node heard has its last contact written this often (with a tick): a leader
# killed (kill -9, a crash) restarts knowing when each node was last heard to within
# this, not as of its row's last write (a hello hours ago for a node idle since).
CONTACTS_EVERY = 60.0

_encoder = msgspec.json.Encoder()


def stall_credit(late: float) -> float:
    """Seconds of a tick's lateness not held against any node: the loop's stalls only.

    A loop that turns, however busy, reads every socket each turn, so the
    heartbeats that came meanwhile were heard. Crediting all of a busy loop's
    lateness made every node's silence clock run slow: under 300 agents a
    frozen node was declared lost 30-50% after ``node_timeout``. A turn longer
    than a stall (the watchdog's threshold) held the heartbeats unread.
    """
    return max(0.0, late - STALL_THRESHOLD)


class Leader(GroupCommit):
    """The farm's one scheduler, its store, links and logs; active or standing by."""

    def __init__(self, settings: LeaderSettings) -> None:
        self.settings = settings
        self.config = settings.config
        self.clock = settings.clock
        settings.data.mkdir(parents=True, exist_ok=True, mode=0o700)
        # Tokens and the database live here: owner only, whoever made the folder.
        os.chmod(settings.data, 0o700)
        settings.root.mkdir(parents=True, exist_ok=True)
        self.root = settings.root.resolve()
        # Uploads in flight (``api_uploads.Upload``): what a leader killed midway left.
        self.upload_records = settings.data / "uploads"
        # SQLite (<data>/farm.db) unless --store or leader.toml names another.
        shared = parse_store_url(settings.store_url)[0] == "postgresql"
        # Who this leader is in the lease row, and in the names of its database sessions.
        self.holder = secrets.token_hex(16)
        # How others reach this leader; a standby names the active one's in its refusals.
        self.advertise = settings.advertised
        # SQLite: always active. PostgreSQL: a standby until the lease is ours (``start``).
        self.role: LeaderRole = "standby" if shared else "active"
        self.lease: LeaseKeeper | None = None
        self._lease_task: asyncio.Task[None] | None = None
        self.stepped_down = False
        self.scheduler = Scheduler(self.config)
        self.agents = {}
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
        # A dispatch pass that stopped at its budget has its next one queued
        # (``_dispatch_more``).
        self._more_queued = False
        self._pending = StepLine()
        # Settings and tokens are written one at a time, on a thread (``operations``).
        self.setting_writes = asyncio.Lock()
        # ``write`` calls waiting for the steps that were waiting when they came.
        self._marks = []
        # (node, agent id) of hellos read and waiting in the group commit (``hello_waiting``).
        self._hellos_waiting: collections.Counter[tuple[str, str]] = collections.Counter()
        # Nodes loaded at start-up that have not said hello since (``_tick``), and when
        # the last of them did.
        self._restored: set[str] = set()
        self._restored_arriving: float | None = None
        # Nodes coming back count for those not back yet only until then (``_tick``).
        self._restored_until = math.inf
        # When a tick next writes the nodes' last contacts (``CONTACTS_EVERY``).
        self._contacts_due = math.inf
        # Bumped by every commit that changes what a job view shows (``job_list_json``).
        self._views_version = 0
        self._job_lists: dict[bool, tuple[int, float, bytes]] = {}
        self.started = False
        # The loop ``start`` ran on. Python 3.11's asyncio.get_running_loop() makes a
        # getpid() system call each time (to notice a fork); once a report, that was
        # 2% of the loop's time with 300 agents.
        self._loop: asyncio.AbstractEventLoop | None = None
        self.store = open_store(
            settings.store_url,
            self.config.synchronous,
            lease=self.config.leader_lease if shared else None,
            holder=self.holder,
        )
        # A start refused from here on (a full disk, a farm moved away, a root that is
        # another farm's, no descriptor left) must not leave the store open, or locked.
        with contextlib.ExitStack() as undo:
            undo.callback(self.store.close)
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
            # First: a leader refused here leaves no tokens behind.
            check_not_moved(self.store.setting(MOVED_TO), self.store.where)
            self.store.hold()
            self.root_id = claim_root(self.root, self.store)
            self.tokens = Tokens(self.store)
            self.admin_token, self.agent_token = self._own_tokens(remember=not shared)
            # Log files are written in order by a process of their own: the sync root may
            # be a slow filer, and a thread of ours competed with the loop
            # (``server.log_process``).
            self.logwriter = LogProcess(self.root)
            undo.callback(self.logwriter.close)
            self.joblogs, self.nodelogs = attach_logs(self.root, self.logwriter)
            self.failures = FailureLog(lambda: self.scheduler.jobs)
            self.history = History(lambda: self.scheduler.jobs, self.joblogs)
            self.webhooks = Webhooks(self.config.webhook, self.config.webhook_timeout)
            # Applied groups on their way to the store, committed on a thread of their own.
            self.commit_line = CommitLine(
                lambda batches: self.store.write(batches), self._landed, self._commit_failed
            )
            undo.pop_all()

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
        swept = await asyncio.to_thread(sweep_uploads, self.root, self.upload_records)
        if swept:
            log.info("removed %d unfinished upload(s) a previous run left", swept)
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
        # Not a node already silent under the last leader (``Node.unheard``): no link of
        # it waits in this one's backlog, and with the leniency below a leader restarting
        # more often than node_timeout never judged a dead node's chunks lost.
        self._restored = {
            name for name, node in self.scheduler.nodes.items() if node.running and not node.unheard
        }
        self._restored_until = self.now() + RESTORE_TIMEOUTS * self.config.node_timeout
        # Nobody is heard yet (a hello writes its node's row): the first in a minute.
        self._contacts_due = self.now() + CONTACTS_EVERY
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
        # A load or commit the database holds (frozen) fails now, not when it thaws:
        # ``stop`` closes the store next, and nothing else will use it.
        self.store.abandon()
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

    async def abandon_start(self) -> None:
        """Close what a start that failed had opened (its tasks, its logs, the lease's
        and the store's connections), without the stop's last commit or log line.

        A PostgreSQL leader whose database comes and goes tries again and again: each
        try left a connection or two to the garbage collector.
        """
        await self._end_tasks()
        self.commit_line.close()
        self.joblogs.close()
        self.nodelogs.close()
        await asyncio.to_thread(self.logwriter.close)
        self.store.abandon()  # a call the database holds fails now, not at its timeout
        self.store.close()
        if self.lease is not None:
            await self.lease.abandon()

    async def _end_tasks(self) -> None:
        for task in (self._tick_task, self._watchdog_task, self._lease_task):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)

    async def stop(self) -> None:
        await self._end_tasks()
        if not self.stepped_down:
            with contextlib.suppress(StoreError):  # the agents send them again
                self._apply_group(budget=None)
                self.run(self.scheduler.contacts, dispatch=False)
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
        if now >= self._contacts_due:
            # Heartbeats commit nothing of their own: their contacts go now and then.
            self._contacts_due = now + CONTACTS_EVERY
            changes.contacts |= self.scheduler.contacts(now).nodes
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
