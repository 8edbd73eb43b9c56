"""A commit that fails changes nothing: not the database, not the leader's memory, not the wire.

SQLite refuses for real here: ``PRAGMA max_page_count`` at the current page
count makes any write that needs a new page fail with SQLITE_FULL (a full
disk, as far as SQLite and the leader can tell), and ``PRAGMA query_only``
refuses writes that would update pages in place. ``test_disk_full.py`` fills
a real file system.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from farmtui.protocol import (
    Ack,
    AssignChunk,
    ChunkFinished,
    ChunkProgress,
    ChunkRef,
    ConsoleHello,
    Event,
    JobPatch,
    JobsChanged,
    JobSpec,
    SetPriority,
    Snapshot,
    encode,
)
from server.errors import StoreError
from server.model import Attempt, Changes
from server.scheduler import Scheduler, SchedulerConfig, SchedulerError
from server.store import DISK_FULL, Store, save_error
from server.store_rows import Rows
from tests.helpers.fake_agent import FakeAgent
from tests.helpers.leader import InProcessLeader, leader_in_process
from tests.server.test_console_link import Console

READ_ONLY = (
    "the leader could not save the change (attempt to write a readonly database): "
    "nothing was changed"
)

SPEC: dict[str, Any] = {
    "name": "shot",
    "frames": "1-4",
    "chunk": 2,
    "renderer": "generic",
    "argv": ["render"],
    "output": "renders/shot/f_####.png",
}
# A job row big enough that saving it always needs new pages (untouched chunks
# have no rows of their own: the store rebuilds them from the spec).
PADDING = {f"PAD{i}": "x" * 100 for i in range(400)}
BIG: dict[str, Any] = {**SPEC, "name": "big", "frames": "1-400", "chunk": 1, "env": PADDING}


@contextmanager
def disk_full(store: Store) -> Iterator[None]:
    """No new page for the database: every write that grows it fails with SQLITE_FULL."""
    db = store.db
    with store._using:  # not in the middle of a commit on the commits' thread
        limit = db.execute("PRAGMA max_page_count").fetchone()[0]
        pages = db.execute("PRAGMA page_count").fetchone()[0]
        db.execute(f"PRAGMA max_page_count={pages}")
    try:
        yield
    finally:
        with store._using:
            db.execute(f"PRAGMA max_page_count={limit}")


@contextmanager
def read_only(store: Store) -> Iterator[None]:
    """SQLite refuses every write (SQLITE_READONLY), also those that fit in place."""
    with store._using:  # not in the middle of a commit on the commits' thread
        store.db.execute("PRAGMA query_only=ON")
    try:
        yield
    finally:
        with store._using:
            store.db.execute("PRAGMA query_only=OFF")


def error_of(response: httpx.Response) -> str:
    assert set(response.json()) == {"error"}, response.text
    message: str = response.json()["error"]
    assert "\n" not in message
    return message


# --- the store on its own ---------------------------------------------------------


def big_job(scheduler: Scheduler, job_id: str) -> Changes:
    spec = JobSpec(name=job_id, frames="1-400", chunk=1, argv=["render"], env=PADDING)
    return scheduler.submit(job_id, spec, "alice", 1000.0)


def test_a_full_disk_is_store_error_and_the_database_stays_usable(tmp_path: Path) -> None:
    scheduler = Scheduler(SchedulerConfig())
    store = Store(tmp_path / "farm.db")
    store.save(big_job(scheduler, "first"), scheduler)
    second = big_job(scheduler, "second")
    with disk_full(store):
        with pytest.raises(StoreError) as caught:
            store.save(second, scheduler)
        # SQLite rolled the transaction back itself; ours did not fail on top of it.
        assert str(caught.value) == DISK_FULL
        assert "SQLITE_FULL" in caught.value.detail
        assert not store.db.in_transaction
        assert [job.id for job in store.load()[0]] == ["first"]
        with pytest.raises(StoreError, match="disk is full"):
            store.set_setting("note", "x" * 100_000)
        with pytest.raises(StoreError, match="disk is full"):
            store.add_token("hash", "x" * 100_000, "user")
    # Space is back: the same change saves, and so do the settings.
    store.save(second, scheduler)
    store.set_setting("note", "x" * 100_000)
    store.close()
    reopened = Store(tmp_path / "farm.db")
    assert sorted(job.id for job in reopened.load()[0]) == ["first", "second"]
    assert reopened.setting("note") == "x" * 100_000
    assert reopened.tokens() == []


def test_other_sqlite_errors_say_why_in_one_line(tmp_path: Path) -> None:
    scheduler = Scheduler(SchedulerConfig())
    store = Store(tmp_path / "farm.db")
    store.db.execute("PRAGMA busy_timeout=0")
    other = sqlite3.connect(tmp_path / "farm.db", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another writer holds the lock
    first = big_job(scheduler, "first")
    try:
        with pytest.raises(StoreError) as caught:
            store.save(first, scheduler)
        assert str(caught.value) == (
            "the leader could not save the change (database is locked): nothing was changed"
        )
        assert not store.db.in_transaction
        with pytest.raises(StoreError, match=r"\(database is locked\)"):
            store.set_setting("k", "v")
    finally:
        other.execute("ROLLBACK")
        other.close()
    store.save(first, scheduler)
    assert [job.id for job in store.load()[0]] == ["first"]


@pytest.mark.parametrize(
    ("name", "disk_full"),
    [
        ("SQLITE_FULL", True),
        ("SQLITE_IOERR", True),
        ("SQLITE_IOERR_WRITE", True),
        ("SQLITE_IOERR_FSYNC", True),
        ("SQLITE_IOERR_SHMSIZE", True),
        ("SQLITE_READONLY", False),
        ("SQLITE_CORRUPT", False),
    ],
)
def test_which_sqlite_errors_mean_a_full_disk(name: str, disk_full: bool) -> None:
    # Errors as sqlite3 raises them; their codes cannot all be provoked on demand.
    exc = sqlite3.OperationalError("some reason")
    exc.sqlite_errorcode = getattr(sqlite3, name)
    exc.sqlite_errorname = name
    error = save_error(exc)
    assert error.detail == f"{name}: some reason"
    if disk_full:
        assert str(error) == DISK_FULL
    else:
        assert str(error) == (
            "the leader could not save the change (some reason): nothing was changed"
        )


# --- through a leader -------------------------------------------------------------


async def test_writes_that_cannot_be_saved_answer_503_and_change_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with leader_in_process(tmp_path) as farm, farm.http() as http:
        store = farm.leader.store
        first = await http.post("/api/jobs", json=SPEC)
        assert first.status_code == 201
        job_id = first.json()["id"]
        before = (await http.get(f"/api/jobs/{job_id}")).json()

        with caplog.at_level(logging.ERROR, logger="farmtui.leader"), disk_full(store):
            for _ in range(3):
                refused = await http.post("/api/jobs", json=BIG)
                assert refused.status_code == 503
                assert error_of(refused) == DISK_FULL
            # Reads still work and show no ghost job.
            listed = await http.get("/api/jobs")
            assert listed.status_code == 200
            assert [job["id"] for job in listed.json()] == [job_id]
        failures = [r for r in caplog.records if "commit failed" in r.getMessage()]
        assert len(failures) == 1, "identical failures are logged once"
        assert DISK_FULL in failures[0].getMessage()
        assert set(farm.leader.scheduler.jobs) == {job_id}
        await asyncio.to_thread(farm.leader.logwriter.wait, 10.0)  # what was logged is on disk
        assert sorted(p.name for p in (farm.root / "jobs").iterdir()) == [job_id]

        # Pause and priority rewrite rows in place (no new page): refuse every write.
        with read_only(store):
            paused = await http.post("/api/jobs/actions", json={"action": "pause", "ids": [job_id]})
            assert paused.status_code == 503
            assert error_of(paused) == READ_ONLY
            priority = await http.post(f"/api/jobs/{job_id}/priority", json={"priority": 5})
            assert priority.status_code == 503
            assert error_of(priority) == READ_ONLY
            token = await http.post("/api/tokens", json={"role": "user", "name": "alice"})
            assert token.status_code == 503
            assert error_of(token) == READ_ONLY
            after = (await http.get(f"/api/jobs/{job_id}")).json()
            assert after == before, "the refused pause and priority are not applied in memory"
            events = (await http.get(f"/api/jobs/{job_id}/events")).text
            assert "paused" not in events
            assert "priority 50 -> 5" not in events

        # Space is back: the same requests succeed.
        again = await http.post("/api/jobs", json=BIG)
        assert again.status_code == 201
        second = again.json()["id"]
        paused = await http.post("/api/jobs/actions", json={"action": "pause", "ids": [job_id]})
        assert paused.status_code == 200
        assert paused.json()["jobs"][0]["state"] == "paused"

    # A restart on the same folders finds exactly the acknowledged jobs, as acknowledged.
    async with leader_in_process(tmp_path) as farm, farm.http() as http:
        jobs = (await http.get("/api/jobs")).json()
        assert {job["id"]: (job["state"], job["priority"]) for job in jobs} == {
            job_id: ("paused", 50),
            second: ("queued", 50),
        }


async def test_the_console_gets_the_error_and_no_deltas(leader: InProcessLeader) -> None:
    store = leader.leader.store
    async with leader.http() as http:
        job_id = (await http.post("/api/jobs", json=SPEC)).json()["id"]
    async with connect(
        f"{leader.ws_url}/ws/console",
        additional_headers={"Authorization": f"Bearer {leader.admin_token}"},
    ) as ws:
        await ws.send(encode(ConsoleHello()).decode())
        console = Console(ws)
        await console.expect(Snapshot)
        with read_only(store):
            reply = await console.request(SetPriority(job_id=job_id, priority=5))
        assert not reply.ok
        assert reply.error == READ_ONLY
        reply = await console.request(SetPriority(job_id=job_id, priority=7))
        assert reply.ok, reply.error
        changed = await console.expect(JobsChanged, lambda m: m.jobs[0].priority == 7)
        assert changed.jobs[0].id == job_id
        event = await console.expect(Event, lambda m: "priority" in m.event.text)
        # The first thing it heard about priority is the change that was saved.
        assert event.event.text == "priority 50 -> 7"
        seen = [m for m in console.inbox if isinstance(m, JobsChanged)]
        assert all(job.priority != 5 for m in seen for job in m.jobs)


async def test_an_agent_message_that_cannot_be_saved_raises_before_its_ack(
    leader: InProcessLeader,
) -> None:
    """``Leader.run`` raises, so the agent link never reaches its ``Ack``; memory is undone."""
    farm = leader.leader
    async with leader.http() as http:
        job_id = (await http.post("/api/jobs", json=SPEC)).json()["id"]
    async with FakeAgent.connect(leader.ws_url, leader.agent_token, "node1") as agent:
        assign = await agent.expect(AssignChunk)
        index, attempt = assign.chunk, assign.attempt

        def alive(now: float) -> Changes:
            return farm.scheduler.chunk_alive("node1", job_id, index, attempt, now)

        def record() -> Attempt:
            found = farm.attempt_of("node1", job_id, index, attempt)
            assert found is not None
            return found

        with read_only(farm.store), pytest.raises(StoreError, match="readonly"):
            farm.run(alive, dispatch=False)
        assert not record().alive
        chunk = farm.chunk(job_id, index)
        assert chunk is not None
        assert (chunk.state, chunk.attempt) == ("assigned", attempt)
        # Live node fields survive the rebuild: the node is still online and runs the chunk.
        node = farm.scheduler.nodes["node1"]
        assert node.online
        assert (job_id, index, attempt) in node.running
        farm.run(alive, dispatch=False)
        assert record().alive


async def test_reports_that_arrive_together_are_committed_together_and_failed_together(
    leader: InProcessLeader, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The group commit: one transaction for a turn's reports; a failed one acknowledges none."""
    # No time budget: on a loaded machine three steps could outlast it and split the group.
    monkeypatch.setattr("server.group_commit.GROUP_BUDGET", math.inf)
    farm = leader.leader
    scheduler = farm.scheduler
    async with leader.http() as http:
        body = {**SPEC, "frames": "1-3", "chunk": 1}
        job_id = (await http.post("/api/jobs", json=body)).json()["id"]
    async with FakeAgent.connect(leader.ws_url, leader.agent_token, "node1", slots=3) as agent:
        assigns = [await agent.expect(AssignChunk) for _ in range(3)]

        def state() -> set[tuple[str, bool]]:
            return {
                (chunk.state, chunk.attempts[-1].alive)
                for a in assigns
                if (chunk := farm.chunk(job_id, a.chunk))
            }

        def alive(a: AssignChunk) -> Callable[[float], Changes]:
            return lambda now: scheduler.chunk_alive("node1", job_id, a.chunk, a.attempt, now)

        def finished(a: AssignChunk) -> Callable[[float], Changes]:
            report = ChunkFinished(
                job_id=job_id, chunk=a.chunk, attempt=a.attempt, outcome="done", exit_status="0"
            )
            return lambda now: scheduler.chunk_finished("node1", report, now)

        def refused(now: float) -> Changes:
            raise SchedulerError("no such chunk")

        # Submitted in one turn of the loop: one commit for the three of them.
        saved: list[set[tuple[str, int]]] = []
        write = farm.store.write

        def recording(batches: Sequence[Rows]) -> None:
            saved.append({(job, index) for rows in batches for job, index, _ in rows.chunks})
            write(batches)

        farm.store.write = recording  # type: ignore[method-assign]
        await asyncio.gather(*[farm.submit(alive(a), dispatch=False) for a in assigns])
        farm.store.write = write  # type: ignore[method-assign]
        ours = {(job_id, a.chunk) for a in assigns}
        # One transaction held the three of them (a tick may have committed apart).
        assert [chunks & ours for chunks in saved if chunks & ours] == [ours]
        assert state() == {("assigned", True)}

        # A step the scheduler refuses fails alone; the other is committed.
        first, *rest = assigns
        committed = farm.submit(finished(first), dispatch=False)
        bad = farm.submit(refused, dispatch=False)
        await committed
        with pytest.raises(SchedulerError):
            await bad
        assert state() == {("done", True), ("assigned", True)}

        # The disk refuses the group: every report in it fails, none is applied.
        with read_only(farm.store):
            results = await asyncio.gather(
                *[farm.submit(finished(a)) for a in rest], return_exceptions=True
            )
        assert all(isinstance(result, StoreError) for result in results)
        assert state() == {("done", True), ("assigned", True)}
        assert {farm.chunk(job_id, a.chunk).state for a in rest} == {"assigned"}  # type: ignore[union-attr]


def noting(order: list[str], name: str) -> Callable[[float], Changes]:
    """A step that notes its name in ``order`` when it is applied."""

    def apply(now: float) -> Changes:
        order.append(name)
        return Changes()

    return apply


async def test_a_flood_of_reports_is_committed_in_groups_with_the_loop_free_between(
    leader: InProcessLeader, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Hundreds of agents' reports in one turn no longer hold the loop for their whole
    group: past ``GROUP_BUDGET`` the rest wait for the next turn, in the same order,
    and whatever else was ready (a /healthz, a console) runs in between."""
    from server import group_commit

    monkeypatch.setattr(group_commit, "GROUP_BUDGET", 0.0)  # one step a group
    farm = leader.leader
    order: list[str] = []
    step = functools.partial(noting, order)
    futures = [farm.submit(step(f"report {i}"), dispatch=False) for i in range(5)]
    asyncio.get_running_loop().call_soon(lambda: order.append("other work"))
    await asyncio.gather(*futures)
    reports = [name for name in order if name != "other work"]
    assert reports == [f"report {i}" for i in range(5)], "applied in the order submitted"
    assert 0 < order.index("other work") < len(order) - 1, "the loop was free between groups"

    # A change made directly (an operator's) sees every report that arrived before it.
    order.clear()
    waiting = [farm.submit(step(f"report {i}"), dispatch=False) for i in range(3)]
    farm.run(step("operator"), dispatch=False)
    await asyncio.gather(*waiting)
    assert order == ["report 0", "report 1", "report 2", "operator"]


async def test_an_operators_change_sees_the_reports_before_it_applied_in_groups(
    leader: InProcessLeader, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A REST or console change (``Leader.write``) waits for the reports that arrived
    before it, applied in the group commit's groups with the loop free between them;
    ``run`` applied them all in one turn (20,788 steps in 177 ms under a flood)."""
    from server import group_commit

    monkeypatch.setattr(group_commit, "GROUP_BUDGET", 0.0)  # one step a group
    farm = leader.leader
    order: list[str] = []
    step = functools.partial(noting, order)
    reports = [
        farm.submit(step(f"report {i}"), dispatch=False, source=f"node{i % 2}") for i in range(6)
    ]
    change = asyncio.ensure_future(farm.write(step("operator")))
    asyncio.get_running_loop().call_soon(lambda: order.append("other work"))
    await asyncio.gather(*reports, change)
    applied = [name for name in order if name != "other work"]
    assert applied[-1] == "operator"
    assert sorted(applied[:-1]) == [f"report {i}" for i in range(6)]
    assert order.index("other work") < order.index("operator") - 1, "the loop was free"
    # With nothing waiting it goes at once, in the next group.
    order.clear()
    await farm.write(step("alone"))
    assert order == ["alone"]


@pytest.mark.parametrize("change", ["priority", "patch", "chunks", "move", "action"])
async def test_a_job_deleted_while_a_change_to_it_waits_is_answered_not_found(
    leader: InProcessLeader, monkeypatch: pytest.MonkeyPatch, change: str
) -> None:
    """Checked before the wait, the job was there; deleted meanwhile, the scheduler's
    "unknown job" was answered 400 or 409, as if the request were wrong."""
    from server import group_commit, operations
    from server.errors import NotFound

    monkeypatch.setattr(group_commit, "GROUP_BUDGET", 0.0)  # one step a group
    farm = leader.leader
    async with leader.http() as http:
        job_id = (await http.post("/api/jobs", json=SPEC)).json()["id"]
    admin = farm.tokens.lookup(leader.admin_token)
    assert admin is not None
    made = {
        "priority": lambda: operations.set_priority(farm, admin, job_id, 10),
        "patch": lambda: operations.patch(farm, admin, job_id, JobPatch(retries=1)),
        "chunks": lambda: operations.chunk_action(farm, admin, job_id, "suspend", [0]),
        "move": lambda: operations.move(farm, admin, job_id, "top", None),
        "action": lambda: operations.job_action(farm, admin, "pause", [job_id]),
    }
    waiting = [farm.submit(lambda now: Changes(), source=f"node{i}") for i in range(4)]
    request = asyncio.ensure_future(made[change]())
    await asyncio.sleep(0)  # one turn: the request checks the job and waits behind those
    assert not request.done()
    gone = farm.submit(
        lambda now: farm.scheduler.job_action([job_id], "delete", "admin", now), ahead=True
    )
    await asyncio.gather(*waiting, gone)
    with pytest.raises(NotFound, match=f"unknown job {job_id}"):
        await request


async def test_a_tick_goes_ahead_of_the_reports_waiting_so_a_silent_node_is_lost_on_time(
    leader: InProcessLeader, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The tick (lost nodes, expired blocks) goes through the group commit, ahead of the
    reports waiting there. Run at once it applied a busy farm's whole backlog in one
    turn (~0.5 s every second with 300 agents); queued behind that backlog, a frozen
    node was declared lost up to twice node_timeout after it froze. It still never runs
    in the same turn as the backlog: the loop is free between groups."""
    from server import group_commit

    monkeypatch.setattr(group_commit, "GROUP_BUDGET", 0.0)  # one step a group
    farm = leader.leader
    async with FakeAgent.connect(leader.ws_url, leader.agent_token, "node1"):
        node = farm.scheduler.nodes["node1"]
        clock = [farm.now()]
        farm.clock = lambda: clock[0]
        node.last_seen = clock[0] - farm.config.node_timeout - 0.5  # silent for too long
        order: list[str] = []

        def slow_report(name: str) -> Callable[[float], Changes]:
            def apply(now: float) -> Changes:
                order.append(f"{name}, node1 {'online' if node.online else 'lost'}")
                clock[0] += 1.0  # each report takes the leader a second
                return Changes()

            return apply

        reports = [farm.submit(slow_report(f"report {i}"), dispatch=False) for i in range(3)]
        tick = farm.queue_tick()
        assert order == [], "queueing the tick applied nothing at once"
        asyncio.get_running_loop().call_soon(lambda: order.append("other work"))
        await asyncio.gather(*reports, tick)
        assert [name for name in order if name != "other work"] == [
            f"report {i}, node1 lost" for i in range(3)
        ], "the tick waited for the reports queued before it"
        assert order.index("other work") < len(order) - 1, "the loop was free between groups"


async def test_steps_submitted_ahead_keep_their_own_order(leader: InProcessLeader) -> None:
    """A node's disconnect, then its next hello, both ahead of the reports waiting: in
    the other order the node would end offline with its link open."""
    farm = leader.leader
    order: list[str] = []
    step = functools.partial(noting, order)
    waiting = [
        farm.submit(step("report"), dispatch=False),
        farm.submit(step("disconnect"), dispatch=False, ahead=True),
        farm.submit(step("hello"), dispatch=False, ahead=True),
    ]
    await asyncio.gather(*waiting)
    assert order == ["disconnect", "hello", "report"]


async def test_a_cancelled_tick_does_not_keep_its_group_from_being_answered(
    leader: InProcessLeader,
) -> None:
    """A leader stopping cancels its tick while the tick waits in the group commit; the
    reports grouped with it are committed, and must still be acknowledged and logged."""
    farm = leader.leader
    report = farm.submit(lambda now: Changes(), dispatch=False)
    tick = farm.queue_tick()
    tick.cancel()
    async with asyncio.timeout(5):
        await report  # answered: committed, not failed or left waiting


async def test_an_agent_report_the_disk_refused_is_never_acknowledged_and_comes_again(
    leader: InProcessLeader,
) -> None:
    farm = leader.leader
    async with leader.http() as http:
        job_id = (await http.post("/api/jobs", json=SPEC)).json()["id"]
    async with FakeAgent.connect(leader.ws_url, leader.agent_token, "node1") as agent:
        assign = await agent.expect(AssignChunk)
        # The renderer's first sign of life: the chunk is running from then on.
        report = ChunkProgress(
            job_id=job_id, chunk=assign.chunk, attempt=assign.attempt, fraction=0.5, seq=1
        )
        with read_only(farm.store):
            await agent.send(report)
            # The link is closed without an Ack: the agent keeps the report in its outbox.
            heard = await until_closed(agent)
        assert not any(isinstance(message, Ack) for message in heard)

    def alive() -> bool:
        # Read afresh each time: a failed commit reloads the jobs from the store, and
        # the last one's failure may reach the loop after the link closed.
        chunk = farm.chunk(job_id, assign.chunk)
        assert chunk is not None
        return chunk.attempts[-1].alive

    assert not alive()
    hello_running = [ChunkRef(job_id=job_id, chunk=assign.chunk, attempt=assign.attempt)]
    async with FakeAgent.connect(
        leader.ws_url, leader.agent_token, "node1", running=hello_running
    ) as agent:
        await agent.send(report)
        await agent.expect_ack(1)
    assert alive()


async def until_closed(agent: FakeAgent) -> list[object]:
    """Everything the leader sends until it closes the link."""
    heard: list[object] = []
    async with asyncio.timeout(10):
        try:
            while True:
                heard.append(await agent.receive())
        except ConnectionClosed:
            return heard
