"""Which of several leaders on one PostgreSQL database is active: a lease row with a term.

One row, ``leader_lease`` (``server.store_schema``): the holder's id, the URL
it advertises, a **term**, and ``expires_at`` by the *database's* clock. The
active leader renews it every ``lease_renew_interval`` seconds; a standby
polls it as often and takes over once ``expires_at < now()`` with one atomic
``UPDATE ... SET term = term + 1``. Every write transaction of the active
leader first checks, in that same transaction, that the row still holds its
term (``PostgresStore._writing``, ``SELECT ... FOR SHARE``: the takeover's
UPDATE waits for a write in flight, and a write waits for a takeover in
flight and then finds the new term), so a deposed leader can never commit.

Why a row with a term and not only an advisory lock: a session-level lock
lives as long as its session, and the session of a leader that froze
(SIGSTOP, a paused VM, a stalled disk) or was cut off stays open on the
server until TCP timeouts notice it, minutes later; the lock would keep a
healthy standby waiting that long, and a leader that thaws still holds it and
would believe it is active. A lease measured by the database's clock ends on
time whatever happened to its holder, and the term fences what the holder
does next: a thawed leader's first commit finds another term and fails. A
frozen leader that was inside a write transaction holds the row's lock; its
session ends after ``idle_in_transaction_session_timeout`` (set to the lease
on the store's connection), which frees the row for the takeover. That
timeout only runs while the server waits between statements: a leader frozen
inside a pipeline (``executemany`` sends its batch as one) leaves its session
"active", waiting for the rest, with its locks held until TCP gives up, hours
later. So a standby that finds the lease expired first ends the old holder's
sessions (``pg_terminate_backend``; each leader names its connections after
its holder id, ``session_name``), which rolls back whatever the old holder
had in flight and frees every lock it held. This needs the leaders to connect
as one database role (or roles granted ``pg_signal_backend``); without it the
standby says so once and waits for the sessions to end by themselves.

The active leader also keeps the lease's end on its own clock, counted from
when it *sent* each renewal that succeeded (the database's ``now()`` for that
renewal is later, so the database's expiry is later still). Past that moment
it may have been deposed without knowing it, so it stops at once: no commit,
no dispatch, and no ``LeaseRenewed`` to an agent (an agent's lease, granted
before our lease ends, then ends at most ``agent_lease`` after it: before the
new leader, which waits ``node_timeout`` from its takeover for each node,
may move that node's chunks). Its clock is ``CLOCK_BOOTTIME`` where there is
one, which keeps counting while the machine sleeps or its VM is paused.

``LeaseState`` is that bookkeeping alone, with an injected clock (tested
without a database); ``LeaseRow`` is the SQL on a connection of its own
(``psycopg.AsyncConnection``, so a slow database never blocks the loop);
``LeaseKeeper`` runs them: acquire, renew, step down.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import TupleRow

from server.config import LeaderConfig
from server.pg_cut import shut_down
from server.scheduler_config import LEASE_FRACTION
from server.store_url import redacted, scrubbed

log = logging.getLogger("farmtui.leader.lease")

AsyncConnection = psycopg.AsyncConnection[TupleRow]


def session_name(holder: str, part: str = "leader") -> str:
    """The ``application_name`` of a leader's connections: a successor finds them by it."""
    return f"farmtui {part} {holder}"


def new_holder() -> str:
    """A fresh id for one leader's tenure as a lease holder (or candidate)."""
    return uuid.uuid4().hex


def lease_clock() -> float:
    """Seconds on a clock that keeps counting while the machine sleeps or is paused."""
    boottime = getattr(time, "CLOCK_BOOTTIME", None)
    if boottime is not None:
        return time.clock_gettime(boottime)
    return time.monotonic()


@dataclass(slots=True)
class LeaseState:
    """What the active leader knows of its lease, on its own clock.

    ``until`` is the end of the lease as last renewed: the moment the renewal
    was sent plus the lease's length. None: not active (a standby, or deposed).
    """

    duration: float
    clock: Callable[[], float] = lease_clock
    term: int | None = None
    until: float = 0.0

    def acquired(self, term: int, sent: float) -> None:
        self.term = term
        self.until = sent + self.duration

    def renewed(self, sent: float) -> None:
        """A renewal sent at ``sent`` succeeded; a late answer never shortens the lease."""
        self.until = max(self.until, sent + self.duration)

    def held(self, now: float | None = None) -> bool:
        """True while the lease is ours by our own clock: no other leader can be active."""
        if self.term is None:
            return False
        return (self.clock() if now is None else now) < self.until

    def remaining(self, now: float | None = None) -> float:
        return self.until - (self.clock() if now is None else now)

    def lost(self) -> None:
        self.term = None
        self.until = 0.0


# One row, id 1. ``expires_at`` and ``now()`` are the database's: one clock for all.
_ACQUIRE = (
    "UPDATE leader_lease SET term = term + 1, holder = %s, url = %s, "
    "expires_at = now() + %s * interval '1 second' "
    "WHERE id = 1 AND expires_at < now() RETURNING term"
)
_RENEW = (
    "UPDATE leader_lease SET expires_at = now() + %s * interval '1 second' "
    "WHERE id = 1 AND term = %s AND holder = %s RETURNING term"
)
# A leader that stops cleanly hands over at once instead of after its lease.
_RELEASE = (
    "UPDATE leader_lease SET expires_at = '-infinity' WHERE id = 1 AND term = %s AND holder = %s"
)
_ACTIVE = "SELECT url, term FROM leader_lease WHERE id = 1 AND expires_at >= now()"
# A plain read: it never waits for a lock, whatever the old holder left in flight.
_EXPIRED_HOLDER = "SELECT holder FROM leader_lease WHERE id = 1 AND expires_at < now()"
_END_SESSIONS = (
    "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity "
    "WHERE application_name = ANY(%s) AND pid <> pg_backend_pid()"
)


class LeaseRow:
    """The lease row's statements, on a connection of their own (autocommit)."""

    def __init__(self, url: str, duration: float, holder: str, advertise: str) -> None:
        self.url = url
        self.where = redacted(url)
        self.duration = duration
        self.holder = holder
        self.advertise = advertise
        self._conn: AsyncConnection | None = None
        # Its link was cut (``abandon``): the next statement goes on a new connection.
        self._abandoned = False
        given = conninfo_to_dict(url)
        timeout_ms = max(500, int(duration * 1000 / 2))
        self._options: dict[str, Any] = {
            k: v
            for k, v in {
                "connect_timeout": max(2, int(duration)),
                "tcp_user_timeout": timeout_ms,
            }.items()
            if k not in given
        }
        # Always ours, whatever the URL says: a successor ends this session by its name.
        self._options["application_name"] = session_name(holder, "lease")
        self._cannot_end_sessions = False
        # No statement may hold the keeper longer than half a lease (a row locked by a
        # frozen leader's transaction, a slow server): it fails, and the next try comes.
        self._statement_timeout_ms = timeout_ms

    async def _connection(self) -> AsyncConnection:
        conn = self._conn
        if conn is None or conn.closed or conn.broken or self._abandoned:
            self._abandoned = False
            if conn is not None:
                await conn.close()
            self._conn = None
            conn = await psycopg.AsyncConnection.connect(self.url, autocommit=True, **self._options)
            await conn.execute(f"SET statement_timeout = {self._statement_timeout_ms}")
            self._conn = conn
        return conn

    async def _one(self, sql: str, params: tuple[Any, ...]) -> TupleRow | None:
        conn = await self._connection()
        cursor = await conn.execute(sql, params)
        return await cursor.fetchone() if cursor.description is not None else None

    async def acquire(self) -> int | None:
        """The new term when the lease was free (expired) and is now ours; None otherwise.

        An expired lease's old holder may be frozen with the row locked: its
        sessions are ended first, so the takeover never waits on them.
        """
        expired = await self._one(_EXPIRED_HOLDER, ())
        if expired is None:
            return None
        old = str(expired[0])
        if old and old != self.holder:
            await self.end_sessions(old)
        row = await self._one(_ACQUIRE, (self.holder, self.advertise, self.duration))
        return None if row is None else int(row[0])

    async def end_sessions(self, holder: str) -> int:
        """End every database session of leader ``holder``; how many there were.

        Its transactions roll back and its locks are freed. Without the right
        to (another role), say so once and carry on: the takeover then waits
        for those sessions to end by themselves.
        """
        names = [session_name(holder), session_name(holder, "lease")]
        try:
            row = await self._one(_END_SESSIONS, (names,))
        except psycopg.errors.InsufficientPrivilege as exc:
            if not self._cannot_end_sessions:
                self._cannot_end_sessions = True
                log.error(
                    "cannot end the sessions of the deposed leader %s (%s): a takeover "
                    "waits until they end by themselves; connect every leader as the "
                    "same database role, or grant this one pg_signal_backend",
                    holder,
                    self.reason(exc),
                )
            return 0
        ended = 0 if row is None else int(row[0])
        if ended:
            log.warning("ended %d database sessions of the deposed leader %s", ended, holder)
        return ended

    async def renew(self, term: int) -> bool:
        """True when the row still holds ``term`` (and is renewed); False: deposed."""
        row = await self._one(_RENEW, (self.duration, term, self.holder))
        return row is not None

    async def active(self) -> tuple[str, int] | None:
        """The active leader's URL and term, or None when no lease is current."""
        row = await self._one(_ACTIVE, ())
        return None if row is None else (str(row[0]), int(row[1]))

    async def release(self, term: int) -> None:
        await self._one(_RELEASE, (term, self.holder))

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()
            self._conn = None

    def abandon(self) -> None:
        """Fail the statement under way now, if any (``shut_down``), rather than wait for it."""
        if self._conn is not None:
            self._abandoned = True
            shut_down(self._conn)

    def reason(self, exc: BaseException) -> str:
        """One line, without the password."""
        text = str(exc) or type(exc).__name__
        return " ".join(scrubbed(text, self.url).split())[:200]


# After a dead leader's lease runs out, what a standby needs to take over and its
# agents to reconnect: loading the farm, the agents' next try at each URL. The
# takeover itself was measured at p50 3.2 s, p99 3.7 s with the defaults (bench/README).
TAKEOVER_MARGIN = 1.5
# A leader whose start failed waits this long at most to hand back a lease it took.
RELEASE_AT_ONCE = 1.0


def lease_outlives_takeover(config: LeaderConfig) -> str | None:
    """Why every failover would kill the renders in flight with this config, or None.

    An agent's renders stop when its lease (0.6 x node_timeout) runs out before the
    new leader renews it. A break round with node_timeout 6 s (a 3.6 s lease against a
    3.2-3.7 s takeover) re-rendered 25 frames in 4 failovers; with 10 s, none.
    """
    takeover = config.leader_lease + config.lease_renew_interval + TAKEOVER_MARGIN
    if config.agent_lease > takeover:
        return None
    least = takeover / LEASE_FRACTION
    return (
        f"node_timeout {config.node_timeout:g} s gives agents a {config.agent_lease:g} s "
        f"lease, no longer than a takeover ({takeover:g} s: leader_lease + "
        f"lease_renew_interval + {TAKEOVER_MARGIN:g}): every failover will stop and render "
        f"again the chunks in flight; set node_timeout above {least:.1f} s"
    )


class LeaseKeeper:
    """Acquires the lease as a standby, renews it while active, and reports its loss.

    ``on_acquired(term)`` runs when this leader takes over (it loads the farm
    and starts dispatching; the keeper renews meanwhile); ``on_lost(reason)``
    runs once, when the lease is lost or may have been: the leader steps down.
    """

    def __init__(
        self,
        row: LeaseRow,
        state: LeaseState,
        interval: float,
        on_acquired: Callable[[int], Awaitable[None]],
        on_lost: Callable[[str], None],
    ) -> None:
        self.row = row
        self.state = state
        self.interval = interval
        self.on_acquired = on_acquired
        self.on_lost = on_lost
        # The active leader's URL as last read (a standby names it in its refusals).
        self.active_url: str | None = None
        self.stopped = False
        self._expiry: asyncio.TimerHandle | None = None
        self._last_error = ""
        # The term this leader held when it stepped down: released at its stop, in
        # case the database still holds it (a renewal that ran late, as it thawed).
        self._lost_term: int | None = None

    @classmethod
    def create(
        cls,
        url: str,
        duration: float,
        interval: float,
        advertise: str,
        on_acquired: Callable[[int], Awaitable[None]],
        on_lost: Callable[[str], None],
        clock: Callable[[], float] = lease_clock,
        holder: str | None = None,
    ) -> LeaseKeeper:
        """``holder``: this leader's id, which also names its store's sessions."""
        holder = holder or new_holder()
        return cls(
            LeaseRow(url, duration, holder, advertise),
            LeaseState(duration, clock),
            interval,
            on_acquired,
            on_lost,
        )

    async def run(self) -> None:
        """Forever: try to take the lease while standing by, renew it while active."""
        try:
            while not self.stopped:
                if self.state.term is None:
                    await self.stand_by()
                else:
                    await self._renew()
                if not self.stopped:
                    await asyncio.sleep(self.interval)
        finally:
            if self._expiry is not None:
                self._expiry.cancel()

    async def stand_by(self) -> None:
        """One standby's look at the lease: take it if it ran out, else note who holds it."""
        sent = self.state.clock()
        try:
            term = await self.row.acquire()
            if term is None:
                active = await self.row.active()
                # Our own URL: a lease of this leader's previous life, renewed late as the
                # database thawed; it runs out within a lease. No one to send clients to.
                mine = active is not None and active[0] == self.row.advertise
                self.active_url = None if active is None or mine else active[0]
                return
        except psycopg.Error as exc:
            self._log_error(f"standby: cannot read the lease in {self.row.where}", exc)
            return
        self.state.acquired(term, sent)
        self.active_url = self.row.advertise
        self._arm_expiry()
        log.warning("took over the lease (term %d): this leader is now active", term)
        # The keeper goes on renewing (another task) while the farm loads.
        renewing = asyncio.get_running_loop().create_task(self._renew_while_loading())
        try:
            await self.on_acquired(term)
        except Exception as exc:  # noqa: BLE001 - whatever stopped the load, never stay half-active
            # Holding the lease without serving would leave the farm without a leader:
            # give it up (a fresh standby takes it again once the store answers).
            log.error("could not become active: %s", exc)
            self.lose(f"could not load the farm ({exc})")
        finally:
            renewing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewing

    async def _renew_while_loading(self) -> None:
        while self.state.term is not None:
            await asyncio.sleep(self.interval)
            await self._renew()

    async def _renew(self) -> None:
        term = self.state.term
        if term is None:
            return
        sent = self.state.clock()
        try:
            ours = await self.row.renew(term)
        except psycopg.Error as exc:
            self._log_error("cannot renew the lease", exc)
            if not self.state.held():
                self.lose(f"the lease could not be renewed for {self.state.duration:g} s")
            return
        if not ours:
            self.lose(f"another leader took the lease over (term {term} is over)")
            return
        if self.state.term != term:
            return  # lost meanwhile
        self.state.renewed(sent)
        self._last_error = ""
        self._arm_expiry()

    def _arm_expiry(self) -> None:
        """Step down the moment the lease runs out by our clock, whatever the keeper is doing."""
        if self._expiry is not None:
            self._expiry.cancel()
        delay = max(0.0, self.state.remaining())
        self._expiry = asyncio.get_running_loop().call_later(delay, self._check_expiry)

    def _check_expiry(self) -> None:
        if self.state.term is not None and not self.state.held():
            self.lose(f"the lease was not renewed within {self.state.duration:g} s")
        elif self.state.term is not None:
            self._arm_expiry()

    def lose(self, reason: str) -> None:
        """The lease is lost or may be: forget it and tell the leader (once)."""
        if self.state.term is None:
            return
        self._lost_term = self.state.term
        self.state.lost()
        self.active_url = None
        self.stopped = True  # a deposed leader starts again as a standby (server.main)
        if self._expiry is not None:
            self._expiry.cancel()
        # A renewal the database holds (frozen) fails now: cancelled instead as the
        # takeover gave up, it held the deposed leader's start-up 10 s more.
        self.row.abandon()
        self.on_lost(reason)

    def held(self) -> bool:
        return self.state.held()

    async def abandon(self) -> None:
        """The leader's start failed: hand back a lease it took if the database answers
        at once (else it runs out as a dead leader's would), and close the connection."""
        term = self.state.term
        self.stopped = True
        self.state.lost()
        if self._expiry is not None:
            self._expiry.cancel()
        if term is not None:
            with contextlib.suppress(psycopg.Error, TimeoutError):
                async with asyncio.timeout(RELEASE_AT_ONCE):
                    await self.row.release(term)
        self.row.abandon()
        with contextlib.suppress(psycopg.Error):
            await self.row.close()

    async def release(self) -> None:
        """Hand the lease over at once (a clean stop); a standby takes over at its next poll.

        After a step-down too: the row changes only if it still holds our term.
        Within one lease: a database that does not answer cannot hold the stop.
        """
        term = self.state.term if self.state.term is not None else self._lost_term
        self.stopped = True
        self.state.lost()
        with contextlib.suppress(psycopg.Error, TimeoutError):
            async with asyncio.timeout(self.state.duration):
                if term is not None:
                    await self.row.release(term)
                await self.row.close()

    def _log_error(self, what: str, exc: psycopg.Error) -> None:
        text = f"{what}: {self.row.reason(exc)}"
        if text != self._last_error:  # once per distinct failure, not twice a second
            log.error("%s", text)
            self._last_error = text
