"""The leader lease (``server.lease``): its bookkeeping on a paper clock, its SQL on a real
PostgreSQL, the fence on every write, and what a standby answers (in-process leaders).

The failover of real leader processes is ``tests/server/test_failover.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import threading
import time
from pathlib import Path

import psycopg
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from farmtui.console.link import refusal_text
from farmtui.protocol import (
    PROTOCOL_VERSION,
    ROLE_HEADER,
    AgentHello,
    JobSpec,
    Refused,
    decode_checked,
    encode,
    leader_to_agent,
)
from server import store_postgres
from server.auth import hash_token
from server.config import LeaderConfig
from server.errors import StoreError
from server.lease import (
    LeaseKeeper,
    LeaseRow,
    LeaseState,
    lease_outlives_takeover,
    session_name,
)
from server.scheduler import Scheduler, SchedulerConfig
from server.store import Fenced, open_store
from server.store_postgres import PostgresStore
from tests.helpers.leader import leader_in_process, wait_for

SPEC_BODY = {"name": "shot", "frames": "1-4", "chunk": 2, "argv": ["render"]}


class PaperClock:
    def __init__(self, now: float = 100.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


# --- the bookkeeping, on a paper clock --------------------------------------------------


def test_the_lease_runs_from_when_the_renewal_was_sent_not_answered() -> None:
    clock = PaperClock()
    state = LeaseState(duration=3.0, clock=clock)
    assert not state.held()
    state.acquired(term=7, sent=100.0)
    clock.now = 102.9
    assert state.held()
    sent = clock.now
    clock.now = 104.5  # the answer came 1.6 s later: the lease still counts from 102.9
    state.renewed(sent)
    assert state.until == pytest.approx(105.9)
    clock.now = 105.95
    assert not state.held()


def test_a_late_answer_to_an_old_renewal_never_shortens_the_lease() -> None:
    state = LeaseState(duration=3.0, clock=PaperClock())
    state.acquired(term=1, sent=100.0)
    state.renewed(sent=101.0)
    state.renewed(sent=100.5)  # answered after the later one
    assert state.until == pytest.approx(104.0)


def test_a_lost_lease_is_held_no_more() -> None:
    state = LeaseState(duration=3.0, clock=PaperClock())
    state.acquired(term=1, sent=100.0)
    state.lost()
    assert not state.held()
    assert state.term is None


# --- the SQL, on a real PostgreSQL ---------------------------------------------------------


def _migrated(url: str) -> PostgresStore:
    store = open_store(url, lease=1.0)
    assert isinstance(store, PostgresStore)
    return store


async def test_one_leader_takes_a_free_lease_and_a_second_waits_until_it_expires(
    postgres_url: str,
) -> None:
    _migrated(postgres_url).close()
    first = LeaseRow(postgres_url, 0.5, "holder-a", "http://a:7878")
    second = LeaseRow(postgres_url, 0.5, "holder-b", "http://b:7878")
    try:
        assert await first.acquire() == 1
        assert await second.acquire() is None
        assert await second.active() == ("http://a:7878", 1)
        assert await first.renew(1)
        # Once it is not renewed, the database's clock ends it.
        deadline = time.monotonic() + 30
        while (term := await second.acquire()) is None:
            assert time.monotonic() < deadline, "the lease never expired"
            await asyncio.sleep(0.05)
        assert term == 2
        # Deposed: the taker ended its session, and on a new one its term is over.
        with contextlib.suppress(psycopg.OperationalError):
            assert not await first.renew(1)
        assert not await first.renew(1)
        assert await second.active() == ("http://b:7878", 2)
        await second.release(2)
        assert await first.acquire() == 3  # released: taken at once
    finally:
        await first.close()
        await second.close()


async def test_a_write_with_an_old_term_is_fenced_and_changes_nothing(postgres_url: str) -> None:
    store = _migrated(postgres_url)
    row = LeaseRow(postgres_url, 60.0, "holder-a", "http://a:7878")
    try:
        term = await row.acquire()
        assert term == 1
        store.term = term
        scheduler = Scheduler(SchedulerConfig())
        spec = JobSpec(name="shot", frames="1-4", chunk=1, argv=["render"])
        store.save(scheduler.submit("j1", spec, "alice", 1000.0), scheduler)
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            # Another leader took over (as a standby does once the lease expired).
            conn.execute("UPDATE leader_lease SET term = term + 1")
        with pytest.raises(Fenced, match="another leader holds the lease"):
            store.save(scheduler.submit("j2", spec, "alice", 1001.0), scheduler)
        with pytest.raises(Fenced):
            store.set_setting("k", "v")
        with psycopg.connect(postgres_url) as conn:
            ids = [r[0] for r in conn.execute("SELECT id FROM jobs ORDER BY id")]
            assert ids == ["j1"]
            assert conn.execute("SELECT count(*) FROM settings WHERE key = 'k'").fetchone() == (0,)
    finally:
        store.close()
        await row.close()


async def test_a_leader_frozen_inside_a_write_cannot_hold_the_takeover_back(
    postgres_url: str,
) -> None:
    """A leader SIGSTOPped in the middle of a pipelined write keeps its session "active"
    (``idle_in_transaction_session_timeout`` never runs) with the lease row locked: the
    standby ends its sessions and takes over; the deposed store changes nothing."""
    store = open_store(postgres_url, lease=0.5, holder="holder-a")
    assert isinstance(store, PostgresStore)
    first = LeaseRow(postgres_url, 0.5, "holder-a", "http://a:7878")
    second = LeaseRow(postgres_url, 0.5, "holder-b", "http://b:7878")
    frozen = psycopg.connect(
        postgres_url, autocommit=True, application_name=session_name("holder-a")
    )
    try:
        store.term = await first.acquire()
        assert store.term == 1
        scheduler = Scheduler(SchedulerConfig())
        spec = JobSpec(name="shot", frames="1-4", chunk=1, argv=["render"])
        # What ``PostgresStore._writing`` then ``executemany`` send, cut off before the Sync.
        frozen.execute("BEGIN")
        frozen.execute("SELECT term FROM leader_lease WHERE id = 1 AND term = 1 FOR SHARE")
        frozen.pgconn.enter_pipeline_mode()
        frozen.pgconn.send_query_params(b"DELETE FROM jobs", None)
        frozen.pgconn.flush()
        deadline = time.monotonic() + 30
        while (term := await second.acquire()) is None:
            assert time.monotonic() < deadline, "the frozen leader held the takeover back"
            await asyncio.sleep(0.05)
        assert term == 2
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            names = [r[0] for r in conn.execute("SELECT application_name FROM pg_stat_activity")]
        assert session_name("holder-a") not in names
        assert session_name("holder-a", "lease") not in names
        # Thawed, the deposed leader's store commits nothing (its link was ended; then fenced).
        for job in ("j1", "j2"):
            with pytest.raises(StoreError):
                store.save(scheduler.submit(job, spec, "alice", 1000.0), scheduler)
        with psycopg.connect(postgres_url) as conn:
            assert conn.execute("SELECT count(*) FROM jobs").fetchone() == (0,)
    finally:
        frozen.close()
        store.close()
        await first.close()
        await second.close()


def test_a_database_that_stops_answering_fails_a_write_within_the_lease(
    postgres_url: str,
) -> None:
    """A frozen server (SIGSTOP: the connection stays open, nothing answers) must not hold
    the leader's loop for ever: the write fails after the lease's length, changing nothing."""
    store = open_store(postgres_url, lease=1.0, holder="holder-f")
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE application_name = %s",
            (session_name("holder-f"),),
        ).fetchone()
    assert row is not None
    backend = int(row[0])
    outcome: list[BaseException | None] = []

    def write() -> None:
        try:
            store.set_setting("k", "frozen")
            outcome.append(None)
        except StoreError as exc:
            outcome.append(exc)

    os.kill(backend, signal.SIGSTOP)
    try:
        writer = threading.Thread(target=write, daemon=True)
        writer.start()
        writer.join(30)
        assert outcome, "the write still waits on a frozen database"
    finally:
        os.kill(backend, signal.SIGCONT)
    assert isinstance(outcome[0], StoreError)
    assert "did not answer within 1 s" in str(outcome[0])
    assert "may not have been saved" in str(outcome[0])
    # The next call opens a new link; the cut transaction was never committed.
    assert store.setting("k") is None
    store.set_setting("k", "thawed")
    assert store.setting("k") == "thawed"
    store.close()


def test_a_link_the_server_closed_while_idle_is_opened_again_before_a_write(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a database restart the first change must not fail on the old, dead link."""
    # Every use counts as idle (raising=False: the check is what is under test).
    monkeypatch.setattr(store_postgres, "IDLE_CHECK_AFTER", 0.0, raising=False)
    store = open_store(postgres_url, lease=2.0, holder="holder-r")
    store.set_setting("k", "before")
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        ended = conn.execute(
            "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE application_name = %s",
            (session_name("holder-r"),),
        ).fetchone()
    assert ended == (1,)
    store.set_setting("k", "after")  # no StoreError
    assert store.setting("k") == "after"
    store.close()


async def test_a_leader_that_stepped_down_gives_back_a_lease_the_row_still_holds(
    postgres_url: str,
) -> None:
    """It stepped down on its own clock (a frozen database); a renewal that ran as the
    database thawed left the row naming it: at its stop the row is freed for a standby."""
    _migrated(postgres_url).close()
    acquired: list[int] = []

    async def on_acquired(term: int) -> None:
        acquired.append(term)

    keeper = LeaseKeeper.create(postgres_url, 30.0, 0.1, "http://me:7878", on_acquired, print)
    other = LeaseRow(postgres_url, 30.0, "holder-other", "http://other:7878")
    try:
        await keeper.stand_by()
        assert acquired == [1]
        assert await other.active() == ("http://me:7878", 1)
        keeper.lose("the lease was not renewed within 30 s")
        await keeper.release()
        assert await other.active() is None
        assert await other.acquire() == 2  # at once, not 30 s later
    finally:
        await other.close()


async def test_the_keeper_takes_over_renews_and_steps_down_when_deposed(
    postgres_url: str,
) -> None:
    _migrated(postgres_url).close()
    acquired: list[int] = []
    lost: list[str] = []

    async def on_acquired(term: int) -> None:
        acquired.append(term)

    keeper = LeaseKeeper.create(postgres_url, 1.0, 0.1, "http://me:7878", on_acquired, lost.append)
    task = asyncio.create_task(keeper.run())
    try:
        deadline = time.monotonic() + 30
        while not acquired:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
        assert acquired == [1]
        assert keeper.held()
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            conn.execute("UPDATE leader_lease SET term = 5, holder = 'someone else'")
        while not lost:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
        assert "another leader took the lease over" in lost[0]
        assert not keeper.held()
        await asyncio.wait_for(task, 5)  # a deposed keeper stops: the leader starts afresh
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await keeper.row.close()


# --- a standby, in-process --------------------------------------------------------------------


async def test_a_standby_refuses_writes_reads_agents_and_consoles_naming_the_active(
    tmp_path: Path, postgres_url: str
) -> None:
    config = LeaderConfig(store=postgres_url, leader_lease=2.0, lease_renew_interval=0.2)
    async with contextlib.AsyncExitStack() as stack:
        active = await stack.enter_async_context(leader_in_process(tmp_path / "a", config))
        async with active.http() as http:
            job = (await http.post("/api/jobs", json=SPEC_BODY)).json()["id"]
        standby = await stack.enter_async_context(leader_in_process(tmp_path / "b", config))
        said = f"this leader is a standby; the active leader is {active.url}"
        async with standby.http(None) as http:
            health = (await http.get("/healthz")).json()
        assert health == {"ok": True, "role": "standby", "active": active.url}
        async with active.http(None) as http:
            health = (await http.get("/healthz")).json()
        assert health == {"ok": True, "role": "active", "active": active.url}

        async with standby.http() as http:
            for method, path in (("POST", "/api/jobs"), ("GET", "/api/jobs")):
                answer = await http.request(method, path, json=SPEC_BODY)
                assert answer.status_code == 503
                assert answer.json() == {"error": said}
                assert answer.headers[ROLE_HEADER] == "standby"

        async with connect(standby.ws_url + "/ws/agent") as ws:
            hello = AgentHello(name="n1", slots=1, protocol=PROTOCOL_VERSION)
            await ws.send(encode(hello).decode())
            reply = decode_checked(leader_to_agent, await ws.recv())
        assert reply == Refused(error=said, retry=True)

        with pytest.raises(InvalidStatus) as refused:
            async with connect(standby.ws_url + "/ws/console"):
                pass
        assert refused.value.response.status_code == 503
        assert said.encode() in refused.value.response.body
        assert refusal_text(refused.value.response) == said  # the console's banner says it
        assert standby.leader.scheduler.jobs == {}  # nothing loaded
        # Nor written: its own tokens are in its data folder, not yet in the farm's tables.
        own = {hash_token(standby.leader.admin_token), hash_token(standby.leader.agent_token)}
        assert not own & {row.hash for row in open_store(postgres_url).tokens()}

        # The active one stops cleanly and hands the lease over: the standby takes over
        # at its next look, with the farm as the active one left it.
        stopped = time.monotonic()
        active.server.should_exit = True

        async def taken_over() -> bool:
            async with standby.http(None) as http:
                return bool((await http.get("/healthz")).json()["role"] == "active")

        await wait_for(taken_over, 30.0, "the standby to take over")
        assert time.monotonic() - stopped < 30.0
        async with standby.http() as http:
            jobs = (await http.get("/api/jobs")).json()
        assert [j["id"] for j in jobs] == [job]
        # Active, it runs the farm: its tokens are the farm's now (and its own admin works).
        assert own <= {row.hash for row in open_store(postgres_url).tokens()}
        async with standby.http(standby.leader.admin_token) as http:
            assert (await http.get("/api/whoami")).status_code == 200


def test_a_node_timeout_too_short_for_a_takeover_is_warned_of() -> None:
    """Agents' leases shorter than a takeover stop every render in flight at each
    failover (a break round: 25 frames again in 4 failovers at node_timeout 6 s)."""
    warned = lease_outlives_takeover(LeaderConfig(node_timeout=6))
    assert warned is not None
    assert "every failover will stop and render again the chunks in flight" in warned
    assert warned.endswith("set node_timeout above 8.3 s")
    assert lease_outlives_takeover(LeaderConfig(node_timeout=10)) is None
    assert lease_outlives_takeover(LeaderConfig()) is None
