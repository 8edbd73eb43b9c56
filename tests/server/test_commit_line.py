"""Commits on a thread of their own: the loop serves meanwhile, and nothing is
acknowledged, announced or kept before its commit (``server.commit_line``)."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from farmtui.protocol import Ack, AssignChunk, ChunkFinished, Heartbeat, LeaseRenewed, Snapshot
from server.errors import StoreError
from server.model import Changes
from server.store import Store
from server.store_rows import Rows, merge_rows
from tests.helpers.fake_agent import FakeAgent
from tests.helpers.leader import InProcessLeader, wait_for
from tests.server.test_agent_link import chunk_on_disk, submit
from tests.server.test_console_link import console
from tests.server.test_store_failure import until_closed

WAIT = 20.0  # seconds a test waits for something that takes milliseconds


@contextmanager
def held_commits(store: Store, fail: type[Exception] | None = None) -> Iterator[threading.Event]:
    """Every commit waits on the commits' thread, holding the store as a real one
    does, until the event is set (a database that stopped answering); ``fail``: then
    it raises that (StoreError: as a full disk would)."""
    release = threading.Event()
    write = store.write

    def held(batches: Sequence[Rows]) -> None:
        with store._using:
            release.wait(WAIT)
            if fail is not None:
                raise fail("the disk is full: nothing was changed")
            write(batches)

    store.write = held  # type: ignore[method-assign]
    try:
        yield release
    finally:
        release.set()
        store.write = write  # type: ignore[method-assign]


def priorities(response: httpx.Response) -> dict[str, int]:
    assert response.status_code == 200, response.text
    return {job["id"]: job["priority"] for job in response.json()}


async def test_a_commit_that_hangs_holds_its_ack_but_not_the_loop(
    leader: InProcessLeader,
) -> None:
    """A database that stops answering mid-commit (PostgreSQL away, an fsync on a
    sick disk): heartbeats are still renewed and /healthz answered, the report is
    acknowledged only once its commit returns, and the chunk is done on disk then."""
    farm = leader.leader
    job_id = await submit(leader, frames="1-2", chunk=2)
    async with FakeAgent.connect(leader.ws_url, leader.agent_token, "node1") as agent:
        assign = await agent.expect(AssignChunk)
        ref = {"job_id": job_id, "chunk": assign.chunk, "attempt": assign.attempt}
        with held_commits(farm.store) as release:
            seq = agent.next_seq()
            await agent.send(ChunkFinished(**ref, outcome="done", exit_status="0", seq=seq))
            await wait_for(
                lambda: not farm.commit_line.idle, WAIT, what="the report's commit to start"
            )

            await agent.send(Heartbeat(beat=1))
            renewed = await agent.expect(LeaseRenewed)
            assert renewed.beat == 1
            async with leader.http() as http:
                assert (await http.get("/healthz")).status_code == 200
            assert not any(isinstance(m, Ack) and m.seq >= seq for m in agent.inbox)
            assert "state" not in chunk_on_disk(leader, job_id, 0) or (
                chunk_on_disk(leader, job_id, 0)["state"] != "done"
            )
            release.set()
            await agent.expect_ack(seq)
        assert chunk_on_disk(leader, job_id, 0)["state"] == "done"


async def test_a_failed_commit_undoes_every_group_applied_behind_it(
    leader: InProcessLeader,
) -> None:
    """Groups applied while a commit was on its way were built on it: when it fails
    they fail too, memory is reloaded from the disk, and no agent hears of any."""
    farm = leader.leader
    job_id = await submit(leader, frames="1-4", chunk=2)
    async with FakeAgent.connect(leader.ws_url, leader.agent_token, "node1", slots=2) as agent:
        assigns = [await agent.expect(AssignChunk) for _ in range(2)]
        priority = farm.scheduler.jobs[job_id].priority
        with held_commits(farm.store, fail=StoreError) as release:
            first = farm.submit(
                lambda now: farm.scheduler.job_action([job_id], "pause", "alice", now)
            )
            await wait_for(
                lambda: not farm.commit_line.idle, WAIT, what="the first commit to start"
            )
            second = farm.submit(lambda now: farm.scheduler.set_priority(job_id, 90, "alice", now))
            await wait_for(
                lambda: farm.scheduler.jobs[job_id].priority == 90, WAIT, what="the second group"
            )
            async with leader.http() as http:  # a read sees what is applied, not yet kept
                assert priorities(await http.get("/api/jobs")) == {job_id: 90}
            release.set()
            results = await asyncio.gather(first, second, return_exceptions=True)
        assert [type(result) for result in results] == [StoreError, StoreError]
        job = farm.scheduler.jobs[job_id]
        assert job.priority == priority, "memory holds what the disk holds"
        assert job.state != "paused"
        async with leader.http() as http:  # and so do the reads, cached or not
            assert priorities(await http.get("/api/jobs")) == {job_id: priority}
        assert {farm.chunk(job_id, a.chunk).state for a in assigns} == {"assigned"}  # type: ignore[union-attr]

        # The disk is back: the same change goes through.
        await farm.submit(lambda now: farm.scheduler.set_priority(job_id, 90, "alice", now))
        assert farm.scheduler.jobs[job_id].priority == 90


# --- merging the rows of the groups that wait ------------------------------------------

JOB_IDS = st.sampled_from(["a", "b", "c"])
ROWS = st.builds(
    Rows,
    deleted=st.sets(JOB_IDS, max_size=1),
    jobs=st.lists(st.tuples(JOB_IDS, st.text("xyz", max_size=3)), max_size=3),
    chunks=st.lists(st.tuples(JOB_IDS, st.integers(0, 2), st.text("xyz", max_size=3)), max_size=4),
    nodes=st.lists(
        st.tuples(st.sampled_from(["n1", "n2"]), st.text("xyz", max_size=3)), max_size=2
    ),
)


def contents(path: Path) -> tuple[list[tuple[object, ...]], ...]:
    db = sqlite3.connect(path)
    try:
        return tuple(
            list(db.execute(f"SELECT * FROM {table} ORDER BY 1, 2"))
            for table in ("jobs", "chunks", "nodes")
        )
    finally:
        db.close()


@settings(max_examples=60, deadline=None)
@given(st.lists(ROWS, min_size=1, max_size=6))
def test_merged_rows_write_what_the_groups_one_by_one_would(
    tmp_path_factory: pytest.TempPathFactory, groups: list[Rows]
) -> None:
    """However the waiting groups' rows are merged into one commit, the tables end as
    if each group had been committed on its own, in order."""
    folder = tmp_path_factory.mktemp("merge")
    one_by_one, merged = Store(folder / "one.db"), Store(folder / "merged.db")
    try:
        for rows in groups:
            copy = Rows(set(rows.deleted), list(rows.jobs), list(rows.chunks), list(rows.nodes))
            one_by_one.write([copy])
        waiting: list[Rows] = []
        for rows in groups:
            merge_rows(waiting, rows)
        merged.write(waiting)
        assert contents(folder / "merged.db") == contents(folder / "one.db")
    finally:
        one_by_one.close()
        merged.close()


def test_rows_waiting_together_are_written_once_a_key() -> None:
    waiting: list[Rows] = []
    merge_rows(waiting, Rows(set(), [("a", "1")], [("a", 0, "assigned")], [("n1", "busy")]))
    merge_rows(waiting, Rows(set(), [], [("a", 0, "done"), ("a", 1, "assigned")], [("n1", "x")]))
    assert len(waiting) == 1
    assert waiting[0].chunks == [("a", 0, "done"), ("a", 1, "assigned")]
    assert waiting[0].nodes == [("n1", "x")]
    # A job deleted, then an id used again: written after the deletion, not merged into it.
    merge_rows(waiting, Rows({"a"}, [], [], []))
    assert waiting[0].jobs == []
    assert waiting[0].chunks == []
    merge_rows(waiting, Rows(set(), [("a", "new")], [], []))
    assert len(waiting) == 2
    assert waiting[1].jobs == [("a", "new")]


def test_without_a_loop_a_change_is_committed_before_run_returns(tmp_path: Path) -> None:
    """Start-up and scripts change the farm with no event loop: written there and then."""
    from server.commit_line import CommitLine, Group

    store = Store(tmp_path / "farm.db")
    landed: list[Group] = []
    try:
        line = CommitLine(store.write, landed.append, lambda groups, error: None)
        group = Group(Changes())
        line.put(group, Rows(set(), [("a", "{}")], [], []))
        assert landed == [group]
        assert line.idle
        assert store.commits == 1
    finally:
        store.close()


async def test_consoles_get_the_farm_again_after_a_failed_commit(
    leader: InProcessLeader,
) -> None:
    """A console's views are built from memory, which holds the groups on their way to
    the store: after a failed commit undoes them it is sent a whole Snapshot again."""
    farm = leader.leader
    job_id = await submit(leader, frames="1-2", chunk=2)
    priority = farm.scheduler.jobs[job_id].priority
    async with console(leader) as c:
        await c.expect(Snapshot)
        with held_commits(farm.store, fail=StoreError) as release:
            change = farm.submit(lambda now: farm.scheduler.set_priority(job_id, 90, "a", now))
            await wait_for(
                lambda: farm.scheduler.jobs[job_id].priority == 90, WAIT, what="the change"
            )
            release.set()
            with pytest.raises(StoreError):
                await change
        again = await c.expect(Snapshot)
        assert {job.id: job.priority for job in again.jobs} == {job_id: priority}


async def test_a_failure_of_another_kind_is_a_failed_save_too(leader: InProcessLeader) -> None:
    """A commit that fails with anything but StoreError (a bug) is still a failed save:
    taken for a bad report, an agent's would be dropped from its outbox unkept."""
    farm = leader.leader
    job_id = await submit(leader, frames="1-2", chunk=2)
    async with FakeAgent.connect(leader.ws_url, leader.agent_token, "node1") as agent:
        assign = await agent.expect(AssignChunk)
        ref = {"job_id": job_id, "chunk": assign.chunk, "attempt": assign.attempt}
        with held_commits(farm.store, fail=RuntimeError) as release:
            await agent.send(ChunkFinished(**ref, outcome="done", exit_status="0", seq=1))
            await wait_for(lambda: not farm.commit_line.idle, WAIT, what="the report's commit")
            release.set()
            heard = await until_closed(agent)  # as for a full disk: the agent sends it again
        assert not any(isinstance(message, Ack) for message in heard)
        with held_commits(farm.store, fail=RuntimeError) as release:
            change = farm.submit(lambda now: farm.scheduler.set_priority(job_id, 90, "a", now))
            release.set()
            with pytest.raises(StoreError, match="could not save the change"):
                await change


async def test_a_dispatch_pass_that_fails_still_commits_and_acknowledges_the_group(
    leader: InProcessLeader, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A bug in a dispatch pass left its group unanswered: the agent's link read no more
    frames, its reports and heartbeats unheard (break round 28c, by reading)."""
    farm = leader.leader
    job_id = await submit(leader, frames="1-2", chunk=2)
    async with FakeAgent.connect(leader.ws_url, leader.agent_token, "node1") as agent:
        assign = await agent.expect(AssignChunk)
        ref = {"job_id": job_id, "chunk": assign.chunk, "attempt": assign.attempt}

        def broken(now: float) -> Changes:
            raise RuntimeError("a bug in the dispatch pass")

        monkeypatch.setattr(farm.scheduler, "dispatch", broken)
        await agent.send(ChunkFinished(**ref, outcome="done", exit_status="0", seq=1))
        ack = await agent.expect(Ack)
        assert ack.seq == 1
    assert chunk_on_disk(leader, job_id, assign.chunk)["state"] == "done"
    assert "a dispatch pass failed" in caplog.text


async def test_a_node_back_before_a_commit_lands_gets_none_of_its_old_messages(
    leader: InProcessLeader,
) -> None:
    """An assignment waits for its commit; the node reconnects meanwhile and its hello
    takes the attempt back. Sent to the new connection, the old attempt would run
    beside the next one."""
    farm = leader.leader
    async with contextlib.AsyncExitStack() as stack:
        await stack.enter_async_context(
            FakeAgent.connect(leader.ws_url, leader.agent_token, "node1")
        )
        with held_commits(farm.store) as release:
            job = asyncio.create_task(submit(leader, frames="1-1", chunk=1))
            await wait_for(
                lambda: bool(farm.scheduler.nodes["node1"].running), WAIT, what="the assignment"
            )
            ((_, _, old_attempt),) = farm.scheduler.nodes["node1"].running
            first = farm.agents["node1"]
            again = asyncio.create_task(
                stack.enter_async_context(
                    FakeAgent.connect(leader.ws_url, leader.agent_token, "node1")
                )
            )
            await wait_for(
                lambda: farm.agents.get("node1") not in (None, first), WAIT, what="the hello"
            )
            release.set()
            agent = await again
            job_id = await job
        assign = await agent.expect(AssignChunk)
        assert (assign.job_id, assign.attempt) == (job_id, old_attempt + 1)
        # A round trip on the link: whatever was sent before its answer has arrived.
        await agent.send(Heartbeat(beat=7))
        await agent.expect(LeaseRenewed)
        old = [m for m in agent.inbox if isinstance(m, AssignChunk) and m.attempt == old_attempt]
        assert old == []


async def test_a_limit_or_a_token_set_during_a_stuck_commit_does_not_hold_the_loop(
    leader: InProcessLeader,
) -> None:
    """They are written to the store, which a commit on its way holds: on a thread,
    so /healthz and heartbeats are answered meanwhile."""
    farm = leader.leader
    job_id = await submit(leader, frames="1-2", chunk=2)
    async with leader.http() as http:
        with held_commits(farm.store) as release:
            change = farm.submit(lambda now: farm.scheduler.set_priority(job_id, 90, "a", now))
            await wait_for(lambda: not farm.commit_line.idle, WAIT, what="the commit")
            limit = asyncio.create_task(http.put("/api/limits/licences", json={"units": 2}))
            token = asyncio.create_task(
                http.post("/api/tokens", json={"role": "user", "name": "bob"})
            )
            for _ in range(3):
                assert (await http.get("/healthz", timeout=WAIT / 4)).status_code == 200
            assert not limit.done()
            release.set()
            await change
            assert (await limit).status_code == 200, (await limit).text
            assert (await token).status_code == 201, (await token).text
    assert [view.name for view in farm.scheduler.limit_views()] == ["licences"]


async def test_a_stopping_leader_takes_no_more_changes(
    leader: InProcessLeader, caplog: pytest.LogCaptureFixture
) -> None:
    """What arrives once the commits are closed (a link's disconnect while the leader
    stops) is refused in one line, not written to a store that is closing."""
    farm = leader.leader
    job_id = await submit(leader, frames="1-2", chunk=2)
    farm.commit_line.close()
    with pytest.raises(StoreError, match="the leader is stopping"):
        await farm.submit(lambda now: farm.scheduler.set_priority(job_id, 90, "a", now))
    assert not any(record.levelname == "CRITICAL" for record in caplog.records)


async def test_the_events_of_a_change_a_read_has_shown_are_in_its_log(
    leader: InProcessLeader,
) -> None:
    """A read shows a change before its commit returns, and the change's events are
    logged only then: a script that saw the job paused, then asked for its events,
    must find who paused it (CI caught ``farm events`` of a failed job without why)."""
    farm = leader.leader
    job_id = await submit(leader, frames="1-2", chunk=2)
    async with leader.http() as http:
        with held_commits(farm.store) as release:
            change = farm.submit(
                lambda now: farm.scheduler.job_action([job_id], "pause", "al", now)
            )
            await wait_for(
                lambda: farm.scheduler.jobs[job_id].state == "paused", WAIT, what="the pause"
            )
            assert (await http.get(f"/api/jobs/{job_id}")).json()["job"]["state"] == "paused"
            events = asyncio.create_task(http.get(f"/api/jobs/{job_id}/events"))
            farm_events = asyncio.create_task(http.get("/api/events"))
            assert (await http.get("/healthz")).status_code == 200
            # Each answered (without its wait) or waiting behind the commit (a tick's
            # group may wait there too).
            reads = (events, farm_events)
            await wait_for(
                lambda: sum(read.done() for read in reads) + farm.commit_line.waiting >= 2,
                WAIT,
                what="the reads to be answered or to wait",
            )
            release.set()
            await change
            assert "paused" in (await events).text
            assert any("paused" in e["text"] for e in (await farm_events).json())


async def test_a_log_read_waits_for_a_stuck_commit_a_bounded_time(
    leader: InProcessLeader, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A database that stopped answering delays a log's newest lines, not the log."""
    from server import api_logs

    monkeypatch.setattr(api_logs, "SETTLE_WAIT", 0.2)
    farm = leader.leader
    job_id = await submit(leader, frames="1-2", chunk=2)
    async with leader.http() as http:
        with held_commits(farm.store):
            change = farm.submit(lambda now: farm.scheduler.set_priority(job_id, 90, "a", now))
            await wait_for(lambda: not farm.commit_line.idle, WAIT, what="the commit")
            events = await http.get(f"/api/jobs/{job_id}/events", timeout=WAIT / 2)
            assert events.status_code == 200
            assert "submitted" in events.text
            assert not change.done()
        await change
