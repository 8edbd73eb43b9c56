"""``/ws/agent`` with a scripted agent over a real WebSocket."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from starlette.websockets import WebSocket
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from farmtui.protocol import (
    LOOK_OVER_BYTES,
    MAX_BATCH_FRAME_BYTES,
    MAX_FRAME_READ_BYTES,
    MAX_SLOTS,
    Ack,
    AgentHello,
    AgentLog,
    AssignChunk,
    ChunkFinished,
    ChunkOutput,
    ChunkRef,
    ChunkStarted,
    DiscardStaged,
    FramesWritten,
    GpuInfo,
    Heartbeat,
    KeptStaged,
    KillChunk,
    LeaseRenewed,
    Refused,
    encode,
    encode_batch,
    leader_to_agent,
)
from server import repeated_warnings
from server.agent_link import CLOSE_LOST, AgentLink
from server.config import LeaderConfig
from server.joblogs import iso_time
from server.leader import CONTACTS_EVERY
from server.model import Changes
from server.turns import COSTLY, Account, turns
from tests.helpers.fake_agent import FakeAgent
from tests.helpers.leader import InProcessLeader, leader_in_process, wait_for

SPEC: dict[str, Any] = {
    "name": "shot",
    "frames": "1-2",
    "chunk": 2,
    "renderer": "generic",
    "argv": ["render", "{start}", "{end}"],
    "output": "renders/shot/f_####.png",
}


async def submit(leader: InProcessLeader, **changes: Any) -> str:
    async with leader.http() as http:
        response = await http.post("/api/jobs", json={**SPEC, **changes})
    assert response.status_code == 201, response.text
    job_id: str = response.json()["id"]
    return job_id


def chunk_on_disk(leader: InProcessLeader, job_id: str, index: int) -> dict[str, Any]:
    """The chunk as committed, read with a connection of our own."""
    db = sqlite3.connect(leader.data / "farm.db")
    try:
        row = db.execute(
            "SELECT data FROM chunks WHERE job_id = ? AND idx = ?", (job_id, index)
        ).fetchone()
    finally:
        db.close()
    data: dict[str, Any] = json.loads(row[0])
    return data


async def run_chunk(agent: FakeAgent, assign: AssignChunk) -> None:
    ref = {"job_id": assign.job_id, "chunk": assign.chunk, "attempt": assign.attempt}
    started = time.time()
    await agent.send(
        ChunkStarted(**ref, pid=4242, command=["render", "1", "2"], seq=agent.next_seq())
    )
    await agent.send(
        ChunkOutput(**ref, lines=["Fra:1 rendering", "Fra:2 rendering"], seq=agent.next_seq())
    )
    await agent.send(FramesWritten(**ref, frames=[1, 2], staged=False, seq=agent.next_seq()))
    seq = agent.next_seq()
    await agent.send(
        ChunkFinished(
            **ref, outcome="done", exit_status="0", started=started, finished=time.time(), seq=seq
        )
    )
    await agent.expect_ack(seq)


async def test_welcome_assign_report_ack_and_logs(leader: InProcessLeader) -> None:
    job_id = await submit(leader)
    async with FakeAgent.connect(leader.ws_url, leader.agent_token, "node1") as agent:
        welcome = agent.welcome
        assert welcome is not None
        assert welcome.node == "node1"
        assert welcome.sync_root == str(leader.root.resolve())
        assert welcome.root_id == (leader.root / ".farmtui-root").read_text().strip()
        assert welcome.lease == leader.leader.config.agent_lease
        assign = await agent.expect(AssignChunk)
        assert (assign.job_id, assign.chunk, assign.attempt) == (job_id, 0, 1)
        assert assign.log_path == f"jobs/{job_id}/chunk-0000.attempt-1.log"
        assert assign.outputs == ["renders/shot/f_0001.png", "renders/shot/f_0002.png"]

        ref = {"job_id": job_id, "chunk": 0, "attempt": 1}
        await agent.send(ChunkStarted(**ref, pid=1, command=["render", "1", "2"], seq=1))
        await agent.expect_ack(1)
        await agent.send(ChunkOutput(**ref, lines=["Fra:1 rendering", "Fra:2 rendering"], seq=2))
        await agent.expect_ack(2)
        await agent.send(FramesWritten(**ref, frames=[1, 2], staged=False, seq=3))
        await agent.expect_ack(3)
        assert sorted(chunk_on_disk(leader, job_id, 0)["done"]) == [1, 2]
        await agent.send(
            ChunkFinished(
                **ref,
                outcome="done",
                exit_status="0",
                started=time.time() - 1.5,
                finished=time.time(),
                seq=4,
            )
        )
        await agent.expect_ack(4)
        # Acknowledged only after the commit: another connection sees it at once.
        assert chunk_on_disk(leader, job_id, 0)["state"] == "done"

    async with leader.http() as http:
        detail = (await http.get(f"/api/jobs/{job_id}")).json()
        assert detail["job"]["state"] == "done"
        assert detail["frame_states"] == {"1": "done", "2": "done"}
        log = (await http.get(f"/api/jobs/{job_id}/logs", params={"chunk": 0})).text
        events = (await http.get(f"/api/jobs/{job_id}/events")).text

    on_disk = (leader.root / assign.log_path).read_text()
    assert on_disk == log
    lines = log.splitlines()
    assert lines[0].startswith("# farmtui: job")
    assert "# node: node1" in lines
    assert "# command: render 1 2" in lines
    assert lines.index("Fra:1 rendering") > lines.index("# command: render 1 2")
    assert lines[-1].startswith("# outcome: done; exit status: 0; duration: 1.5")
    assert (leader.root / f"jobs/{job_id}/events.log").read_text() == events
    assert "submitted" in events
    assert "-> node1" in events
    assert "started on node1" in events


async def test_an_attempt_taken_back_unstarted_is_not_said_to_have_started(
    leader: InProcessLeader,
) -> None:
    """An agent reports a chunk it took back from its queue with pid 0 (for its log's
    header); the job's events said "started on node1" for it (break round 34b)."""
    job_id = await submit(leader)
    async with FakeAgent.connect(leader.ws_url, leader.agent_token, "node1") as agent:
        assign = await agent.expect(AssignChunk)
        ref = {"job_id": job_id, "chunk": assign.chunk, "attempt": assign.attempt}
        await agent.send(ChunkStarted(**ref, pid=0, command=["render", "1", "2"], seq=1))
        now = time.time()
        reason = "not started: the job was paused by admin"
        finished = ChunkFinished(
            **ref, outcome="killed", reason=reason, started=now, finished=now, seq=2
        )
        await agent.send(finished)
        await agent.expect_ack(2)
    async with leader.http() as http:
        events = (await http.get(f"/api/jobs/{job_id}/events")).text
        params = {"chunk": 0, "attempt": 1}
        log = (await http.get(f"/api/jobs/{job_id}/logs", params=params)).text
    assert "-> node1" in events
    assert "not started" in events
    assert "started on node1" not in events
    assert "# command: render 1 2" in log  # its log still says what it would have run


async def test_a_chunk_logs_start_is_the_renderers_as_its_node_reported_it(
    leader: InProcessLeader,
) -> None:
    """A chunk its shim started while the agent was frozen is heard of late: its
    log's header says when it started, on the node's clock as its footer does,
    not when the leader heard (which read later than the footer's end)."""
    job_id = await submit(leader)
    async with FakeAgent.connect(leader.ws_url, leader.agent_token, "node1") as agent:
        assign = await agent.expect(AssignChunk)
        ref = {"job_id": job_id, "chunk": 0, "attempt": assign.attempt}
        began = time.time() - 30
        await agent.send(ChunkStarted(**ref, pid=1, command=["render"], started=began, seq=1))
        await agent.send(
            ChunkFinished(
                **ref, outcome="done", exit_status="0", started=began, finished=began + 1, seq=2
            )
        )
        await agent.expect_ack(2)
    async with leader.http() as http:
        log = (await http.get(f"/api/jobs/{job_id}/logs", params={"chunk": 0})).text
    lines = log.splitlines()
    assert f"# started: {iso_time(began)}" in lines
    assert f"# finished: {iso_time(began + 1)} on node1" in lines


async def started_then_cancelled(
    leader: InProcessLeader, agent: FakeAgent, job_id: str
) -> dict[str, Any]:
    """The job's chunk 0 started on ``agent``, then its job cancelled (the agent told to
    kill it): the attempt's ``job_id``, ``chunk`` and ``attempt``, for its late report."""
    assign = await agent.expect(AssignChunk)
    ref: dict[str, Any] = {"job_id": job_id, "chunk": 0, "attempt": assign.attempt}
    await agent.send(ChunkStarted(**ref, pid=1, command=["render"], seq=1))
    await agent.expect_ack(1)
    async with leader.http() as http:
        cancel = {"action": "cancel", "ids": [job_id]}
        assert (await http.post("/api/jobs/actions", json=cancel)).status_code == 200
    await agent.expect(KillChunk)
    return ref


async def test_a_chunk_log_the_leader_ended_says_how_and_its_late_report_adds_nothing(
    leader: InProcessLeader,
) -> None:
    """A chunk log whose attempt the leader ended (a cancel, its node lost) stopped
    after its output, no end said: the agent's report of the kill comes for an attempt
    already over. The leader writes its footer; the late report adds no second one."""
    job_id = await submit(leader)
    async with FakeAgent.connect(leader.ws_url, leader.agent_token, "node1") as agent:
        ref = await started_then_cancelled(leader, agent, job_id)
        now = time.time()
        killed = ChunkFinished(**ref, outcome="killed", started=now - 1, finished=now, seq=2)
        await agent.send(killed)
        await agent.expect_ack(2)
    async with leader.http() as http:
        log = (await http.get(f"/api/jobs/{job_id}/logs", params={"chunk": 0})).text
    lines = log.splitlines()
    assert lines[-1] == "# reason: cancel by admin", log
    assert lines[-2].startswith("# outcome: killed; exit status: none"), log
    assert sum(line.startswith("# outcome:") for line in lines) == 1, log


async def test_output_kept_by_an_attempt_that_had_moved_on_is_discarded(
    leader: InProcessLeader,
) -> None:
    """A node's report of a failed copy, its output kept for a retry sync, that came
    after its attempt ended (its node lost meanwhile, a cancel): nobody will copy that
    output, and it stayed on the node's disk (break round 29f). The node is told to
    delete it."""
    job_id = await submit(leader)
    async with FakeAgent.connect(leader.ws_url, leader.agent_token, "node1") as agent:
        ref = await started_then_cancelled(leader, agent, job_id)
        late = ChunkFinished(**ref, outcome="failed", reason="copy failed", kept_staged=True, seq=2)
        await agent.send(late)
        await agent.expect_ack(2)
        discard = await agent.expect(DiscardStaged)
        assert (discard.job_id, discard.chunk, discard.attempt) == tuple(ref.values())


async def test_stale_attempt_reports_are_ignored(leader: InProcessLeader) -> None:
    job_id = await submit(leader)
    async with FakeAgent.connect(leader.ws_url, leader.agent_token, "node1") as agent:
        assign = await agent.expect(AssignChunk)
        ref = {"job_id": job_id, "chunk": 0, "attempt": assign.attempt + 5}
        await agent.send(ChunkOutput(**ref, lines=["from the past"], seq=1))
        await agent.send(ChunkFinished(**ref, outcome="failed", exit_status="1", seq=2))
        await agent.expect_ack(2)  # acknowledged, so the agent forgets it ...
        chunk = leader.leader.scheduler.jobs[job_id].chunks[0]
        assert chunk.state == "assigned"  # ... but nothing changed
        assert chunk.errors == 0
        assert chunk_on_disk(leader, job_id, 0)["state"] == "assigned"
        assert not (leader.root / f"jobs/{job_id}/chunk-0000.attempt-6.log").exists()


async def test_malformed_messages_change_nothing(leader: InProcessLeader) -> None:
    job_id = await submit(leader)
    async with FakeAgent.connect(leader.ws_url, leader.agent_token, "node1") as agent:
        await agent.expect(AssignChunk)
        commits = leader.leader.store.commits
        before = chunk_on_disk(leader, job_id, 0)
        await agent.send_raw("{this is not json")
        await agent.send_raw(json.dumps({"type": "chunk_finished", "job_id": job_id}))
        await agent.send_raw(json.dumps({"type": "no_such_message"}))
        await agent.send_raw(b"\xff\xfe binary junk")
        # Nested deep enough to overflow the decoder, and still within a batch's size.
        await agent.send_raw('{"type": "heartbeat", "x": ' + "[" * 100_000 + "]" * 100_000 + "}")
        # Times that are no date: a chunk log's footer could not be written from them.
        ref = {"job_id": job_id, "chunk": 0, "attempt": 1, "seq": 5}
        far = {"outcome": "done", "started": 1.0, "finished": 1e300}
        await agent.send_raw(json.dumps({"type": "chunk_finished", **ref, **far}))
        await agent.send_raw(json.dumps({"type": "chunk_started", **ref, "pid": 1, "started": -1}))
        # The link is still up and in order: the next good message is acknowledged.
        await agent.send(AgentLog(lines=["still here"], seq=7))
        await agent.expect_ack(7)
        link = leader.leader.agents["node1"]
        assert link.ignored == 7
        assert leader.leader.store.commits == commits
        assert chunk_on_disk(leader, job_id, 0) == before
        assert leader.leader.scheduler.jobs[job_id].chunks[0].state == "assigned"


async def test_bad_token_and_wrong_protocol_are_refused(leader: InProcessLeader) -> None:
    for token, hello, expected in [
        ("wrong", AgentHello(name="n", slots=1), "unauthorized"),
        (
            leader.admin_token.replace("a", "b", 1) + "x",
            AgentHello(name="n", slots=1),
            "unauthorized",
        ),
        (leader.agent_token, AgentHello(name="n", slots=1, protocol=99), "protocol version 99"),
        (leader.agent_token, AgentHello(name="../evil", slots=1), "bad node name"),
    ]:
        async with connect(
            f"{leader.ws_url}/ws/agent", additional_headers={"Authorization": f"Bearer {token}"}
        ) as ws:
            await ws.send(encode(hello).decode())
            reply = leader_to_agent.decode(await ws.recv(decode=False))
            assert isinstance(reply, Refused)
            assert expected in reply.error
            await ws.wait_closed()
            assert ws.close_code in (1002, 1008)
    assert leader.leader.scheduler.nodes == {}


async def test_a_hello_claiming_more_than_a_node_can_hold_takes_nothing(
    leader: InProcessLeader,
) -> None:
    """Slots, tags and held attempts are bounded: one hello cannot take the whole queue."""
    job_id = await submit(leader, frames="1-400", chunk=1)
    many = [ChunkRef(job_id="nope", chunk=i, attempt=1) for i in range(MAX_SLOTS + 65)]
    for hello, field in [
        (AgentHello(name="huge", slots=10**18), "$.slots"),
        (AgentHello(name="huge", slots=MAX_SLOTS + 1), "$.slots"),
        (AgentHello(name="huge", slots=1, tags=[f"t{i}" for i in range(65)]), "$.tags"),
        (AgentHello(name="huge", slots=1, running=many), "$.running"),
        (AgentHello(name="huge", slots=1, finished=many), "$.finished"),
        # Near the megabyte a hello may take, counted before any item is checked.
        (AgentHello(name="huge", slots=1, tags=["t"] * 200_000), "$.tags"),
        (AgentHello(name="huge", slots=1, gpus=[GpuInfo(index=0, name="g")] * 30_000), "$.gpus"),
    ]:
        async with connect(
            f"{leader.ws_url}/ws/agent",
            additional_headers={"Authorization": f"Bearer {leader.agent_token}"},
            max_size=None,
        ) as ws:
            await ws.send(encode(hello).decode())
            reply = leader_to_agent.decode(await ws.recv(decode=False))
            assert isinstance(reply, Refused)
            assert field in reply.error
    assert leader.leader.scheduler.nodes == {}
    async with leader.http() as http:
        job = (await http.get(f"/api/jobs/{job_id}")).json()
    assert (job["job"]["state"], job["job"]["stats"]["chunks_running"]) == ("queued", 0)


async def test_viewer_token_cannot_be_an_agent(leader: InProcessLeader) -> None:
    viewer = leader.token("viewer", "val")
    async with connect(
        f"{leader.ws_url}/ws/agent", additional_headers={"Authorization": f"Bearer {viewer}"}
    ) as ws:
        await ws.send(encode(AgentHello(name="n", slots=1)).decode())
        reply = leader_to_agent.decode(await ws.recv(decode=False))
    assert isinstance(reply, Refused)
    assert "forbidden" in reply.error


async def test_agent_log_is_kept_and_served(leader: InProcessLeader) -> None:
    async with FakeAgent.connect(leader.ws_url, leader.agent_token, "node1") as agent:
        await agent.send(AgentLog(lines=["agent up", "slot 1 idle"], seq=1))
        await agent.expect_ack(1)
        async with leader.http() as http:
            text = (await http.get("/api/nodes/node1/log", params={"tail": 1})).text
            assert text == "slot 1 idle\n"
            nodes = (await http.get("/api/nodes")).json()
    # Written by the log writer's thread, off the loop: on disk a moment after the answer.
    on_disk = leader.root / "nodes/node1.log"
    expected = "agent up\nslot 1 idle\n"
    await wait_for(lambda: on_disk.exists() and on_disk.read_text() == expected, what=expected)
    assert [(n["name"], n["state"]) for n in nodes] == [("node1", "online")]


async def test_kept_output_past_what_a_hello_lists_is_discarded_too(
    leader: InProcessLeader,
) -> None:
    """A node that kept more failed copies than its hello lists (``MAX_KEPT_LISTED``)
    lists the rest after the Welcome: what no chunk waits for is deleted all the same,
    where it used to stay on the node's disk until its next hello."""
    async with FakeAgent.connect(leader.ws_url, leader.agent_token, "node1") as agent:
        assert agent.welcome is not None
        assert agent.welcome.kept_pages
        rest = [ChunkRef(job_id="0badc0de", chunk=n, attempt=1) for n in range(300)]
        await agent.send(KeptStaged(kept=rest))
        discards = [await agent.expect(DiscardStaged) for _ in rest]
    assert sorted(d.chunk for d in discards) == list(range(300))
    assert {(d.job_id, d.attempt) for d in discards} == {("0badc0de", 1)}


async def test_heartbeat_updates_the_node(leader: InProcessLeader) -> None:
    async with FakeAgent.connect(leader.ws_url, leader.agent_token, "node1") as agent:
        await agent.send(Heartbeat(cpu_percent=42.0, memory_percent=12.5, seq=1))
        await agent.expect_ack(1)
        node = leader.leader.scheduler.nodes["node1"]
        assert (node.cpu_percent, node.memory_percent) == (42.0, 12.5)


async def test_reconnect_within_the_lease_keeps_the_chunk(leader: InProcessLeader) -> None:
    job_id = await submit(leader)
    async with FakeAgent.connect(leader.ws_url, leader.agent_token, "node1") as agent:
        assign = await agent.expect(AssignChunk)
    # The link is gone but the node is not lost yet.
    assert leader.leader.scheduler.jobs[job_id].chunks[0].state == "assigned"
    running = [ChunkRef(job_id=job_id, chunk=0, attempt=assign.attempt)]
    async with FakeAgent.connect(
        leader.ws_url, leader.agent_token, "node1", running=running
    ) as agent:
        assert agent.welcome is not None
        assert agent.welcome.stale == []
        await run_chunk(agent, assign)
    assert leader.leader.scheduler.jobs[job_id].state == "done"


async def test_a_node_is_heard_until_its_welcome_is_written(
    leader: InProcessLeader, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An agent says nothing before it reads its Welcome. On a loaded leader a Welcome
    waited 3.6 s to be written, the tick declared the node lost meanwhile, and the
    chunks its hello listed as finished were rendered again elsewhere."""
    job_id = await submit(leader)
    farm = leader.leader
    async with FakeAgent.connect(leader.ws_url, leader.agent_token, "node1") as agent:
        assign = await agent.expect(AssignChunk)
    # The render ends while the link is down; the agent comes back with it finished.
    written = asyncio.Event()
    held: list[str] = []
    send_text = WebSocket.send_text

    async def slow_welcome(websocket: WebSocket, data: str) -> None:
        if '"welcome"' in data and not written.is_set():
            held.append(data)
            await written.wait()
        await send_text(websocket, data)

    monkeypatch.setattr(WebSocket, "send_text", slow_welcome)
    finished = [ChunkRef(job_id=job_id, chunk=0, attempt=assign.attempt)]
    back = FakeAgent.connect(leader.ws_url, leader.agent_token, "node1", finished=finished)
    coming_back = asyncio.create_task(back.__aenter__())
    await wait_for(lambda: bool(held), 10.0, "the Welcome written")
    clock = [farm.now()]
    farm.clock = lambda: clock[0]
    clock[0] += farm.config.node_timeout + 1.0  # the leader took that long to write it
    await farm.queue_tick()
    node = farm.scheduler.nodes["node1"]
    chunk = farm.scheduler.jobs[job_id].chunks[0]
    assert node.online, "lost while its Welcome waited"
    assert chunk.state == "assigned"
    written.set()
    agent = await coming_back
    try:
        await run_chunk(agent, assign)
    finally:
        await back.__aexit__(None, None, None)
    assert farm.scheduler.jobs[job_id].state == "done"
    assert len(chunk.attempts) == 1, "rendered again"


async def test_a_node_is_heard_when_its_frame_arrives_however_long_it_waits_for_its_turn(
    leader: InProcessLeader, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under floods a healthy node's frames waited up to 0.8 s for their turn of the loop;
    counted as silence, that had it declared lost while its agent kept sending."""
    farm = leader.leader
    async with FakeAgent.connect(leader.ws_url, leader.agent_token, "node1") as agent:
        node = farm.scheduler.nodes["node1"]
        turn = turns(asyncio.get_running_loop())
        waiting: list[Account] = []
        turned = asyncio.Event()

        async def share(account: Account, linked: Account | None = None) -> None:
            waiting.append(account)
            await turned.wait()

        monkeypatch.setattr(turn, "full", lambda: True)
        monkeypatch.setattr(turn, "share", share)
        clock = [farm.now()]
        farm.clock = lambda: clock[0]
        connected = clock[0]
        clock[0] += farm.config.node_timeout - 0.5
        await agent.send(Heartbeat(beat=1))
        await wait_for(lambda: bool(waiting), 10.0, "the heartbeat waiting for its turn")
        clock[0] = connected + farm.config.node_timeout + 1.0  # silent since it connected?
        await farm.queue_tick()
        assert node.online, "lost while its heartbeat waited for its turn"
        turned.set()
        assert isinstance(await agent.expect(LeaseRenewed), LeaseRenewed)


async def test_a_large_frame_waits_in_the_costly_line_even_as_its_links_first(
    leader: InProcessLeader, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Flooding links that were lost and came straight back had their first frames of
    80 kB (several ms of the loop each) go in the cheap line, ahead of healthy nodes'."""
    async with FakeAgent.connect(leader.ws_url, leader.agent_token, "flood") as agent:
        turn = turns(asyncio.get_running_loop())
        costly: list[bool] = []

        async def share(account: Account, linked: Account | None = None) -> None:
            costly.append(account.lately >= COSTLY)

        monkeypatch.setattr(turn, "full", lambda: True)
        monkeypatch.setattr(turn, "share", share)
        lines = ["x" * 100]
        outputs = [
            encode(ChunkOutput(job_id="j-nosuch", chunk=0, attempt=1, lines=lines, seq=n))
            for n in range(1, 601)
        ]
        assert len(encode_batch(outputs)) > LOOK_OVER_BYTES
        await agent.send_raw(encode_batch(outputs))
        await agent.expect_ack(600)
        await agent.send(Heartbeat(beat=1))
        await agent.expect(LeaseRenewed)
    assert costly[:1] == [True]


async def test_a_peer_that_does_not_read_batches_gets_one_ack_for_many_messages(
    leader: InProcessLeader,
) -> None:
    """Acks are cumulative for every peer: one a message, a link sending frames of a
    thousand numbered messages queued ten thousand and was closed as too far behind."""
    async with FakeAgent.connect(leader.ws_url, leader.agent_token, "node1") as agent:
        beats = [encode(Heartbeat(beat=0, seq=agent.next_seq())) for _ in range(1000)]
        await agent.send_raw(encode_batch(beats))
        acks = [await agent.expect(Ack)]
        while acks[-1].seq < 1000:
            acks.append(await agent.expect(Ack))
        assert len(acks) < 50, len(acks)  # one a group commit, not one a message
        assert all(frame == 1 for frame in agent.frames)  # never a batch


async def test_a_peer_that_does_not_read_batches_gets_one_renewal_for_many_heartbeats(
    leader: InProcessLeader,
) -> None:
    """Renewals are cumulative too: one a heartbeat, a link sending frames of a thousand
    heartbeats queued ten thousand frames and was closed as too far behind."""
    async with FakeAgent.connect(leader.ws_url, leader.agent_token, "node1") as agent:
        for frame in range(20):
            beats = [encode(Heartbeat(beat=frame * 1000 + n)) for n in range(1, 1001)]
            await agent.send_raw(encode_batch(beats))
        renewals = [await agent.expect(LeaseRenewed)]
        while renewals[-1].beat < 20_000:
            renewals.append(await agent.expect(LeaseRenewed))
        assert len(renewals) < 1000, len(renewals)  # a few a frame at most, not 20,000
        assert [r.beat for r in renewals] == sorted(r.beat for r in renewals)
        assert all(frame == 1 for frame in agent.frames)  # never a batch
        await agent.send(Heartbeat(beat=20_001))  # the link is still open, and answered
        assert (await agent.expect(LeaseRenewed)).beat == 20_001


class TestLostNode:
    @pytest.fixture
    def leader_config(self) -> LeaderConfig:
        return LeaderConfig(tick_interval=0.02, node_timeout=0.3)

    async def test_silent_node_is_lost_after_the_timeout(self, leader: InProcessLeader) -> None:
        job_id = await submit(leader)
        async with FakeAgent.connect(leader.ws_url, leader.agent_token, "node1") as agent:
            await agent.expect(AssignChunk)
        scheduler = leader.leader.scheduler
        chunk = scheduler.jobs[job_id].chunks[0]
        # The link closed: no new work for node1, but its chunk keeps the lease ...
        assert not scheduler.nodes["node1"].online
        # ... until the node has been silent for node_timeout.
        await wait_for(lambda: chunk.state in ("preempted", "queued"), 5.0, "node1 lost")
        async with leader.http() as http:
            events = (await http.get(f"/api/jobs/{job_id}/events")).text
        assert "lost" in events


async def test_two_chunks_back_to_back_on_two_slots(leader: InProcessLeader) -> None:
    job_id = await submit(leader, frames="1-8", chunk=2)
    async with FakeAgent.connect(leader.ws_url, leader.agent_token, "node1", slots=2) as agent:
        for _ in range(4):
            assign = await agent.expect(AssignChunk)
            await run_chunk_frames(agent, assign)
    assert leader.leader.scheduler.jobs[job_id].state == "done"


async def run_chunk_frames(agent: FakeAgent, assign: AssignChunk) -> None:
    ref = {"job_id": assign.job_id, "chunk": assign.chunk, "attempt": assign.attempt}
    await agent.send(ChunkStarted(**ref, pid=1, seq=agent.next_seq()))
    await agent.send(FramesWritten(**ref, frames=assign.frames, staged=False, seq=agent.next_seq()))
    seq = agent.next_seq()
    await agent.send(ChunkFinished(**ref, outcome="done", exit_status="0", seq=seq))
    await agent.expect_ack(seq)


async def test_frames_are_read_ahead_of_their_commits_so_a_heartbeat_is_not_held_back(
    leader: InProcessLeader, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An agent streaming its renders' output sends frames faster than a busy leader
    commits. Read one commit at a time, its heartbeat waited a commit turn for every
    frame before it: a healthy node's lease ran out and it killed its renders. Now
    up to FRAMES_AHEAD frames are read while the earlier ones wait, and no more."""
    from server import agent_link

    farm = leader.leader
    async with FakeAgent.connect(leader.ws_url, leader.agent_token, "node1") as agent:
        link = farm.agents["node1"]
        assert isinstance(link, AgentLink)
        read: list[object] = []
        handle_frame = link.handle_frame
        monkeypatch.setattr(
            link, "handle_frame", lambda messages: read.extend(messages) or handle_frame(messages)
        )
        with monkeypatch.context() as patch:
            patch.setattr(farm, "_apply_pending", lambda: None)  # nothing gets committed
            for n in range(5):
                await agent.send(AgentLog(lines=[f"output {n}"]))
            await agent.send(Heartbeat(beat=1))
            await wait_for(lambda: len(read) == 6, what="all six frames read")
        farm._apply_pending()
        assert (await agent.expect(LeaseRenewed)).beat == 1

        # Bounded: a flood waits in the agent's socket, not in the leader's memory.
        read.clear()
        with monkeypatch.context() as patch:
            patch.setattr(farm, "_apply_pending", lambda: None)
            for n in range(3 * agent_link.FRAMES_AHEAD):
                await agent.send(AgentLog(lines=[f"more output {n}"]))
            await wait_for(lambda: len(read) == agent_link.FRAMES_AHEAD)
            await asyncio.sleep(0.2)  # time for the link to read more, were it to
            assert len(read) == agent_link.FRAMES_AHEAD
        farm._apply_pending()
        await agent.send(Heartbeat(beat=2))
        assert (await agent.expect(LeaseRenewed)).beat == 2

        # A heartbeat at the end of each frame (applied at once) holds nothing back.
        await wait_for(lambda: not farm._pending, what="the flood committed")
        read.clear()
        with monkeypatch.context() as patch:
            patch.setattr(farm, "_apply_pending", lambda: None)
            for n in range(3 * agent_link.FRAMES_AHEAD):
                frame = [encode(AgentLog(lines=[f"last {n}"])), encode(Heartbeat(beat=10 + n))]
                await agent.send_raw(encode_batch(frame))
            await wait_for(lambda: len(read) >= 2 * agent_link.FRAMES_AHEAD)
            await asyncio.sleep(0.2)  # time for the link to read more, were it to
            assert len(read) == 2 * agent_link.FRAMES_AHEAD, "frames read past the bound"
        farm._apply_pending()


async def test_a_heartbeat_is_answered_while_the_group_commit_is_behind(
    leader: InProcessLeader, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A heartbeat stores nothing, so it does not wait for the reports queued before it:
    under a flood of 300 agents that queue was seconds long, and a healthy node with
    a 3.6 s lease lost it again and again and killed its renders."""
    farm = leader.leader
    async with FakeAgent.connect(leader.ws_url, leader.agent_token, "node1") as agent:
        monkeypatch.setattr(farm, "_apply_pending", lambda: None)  # nothing gets committed
        await agent.send(AgentLog(lines=["output"], seq=agent.next_seq()))
        await wait_for(lambda: len(farm._pending) >= 1, what="the report queued")
        await agent.send(Heartbeat(beat=3, cpu_percent=55.0))
        assert (await agent.expect(LeaseRenewed)).beat == 3
        assert farm.scheduler.nodes["node1"].cpu_percent == 55.0
        assert len(farm._pending) >= 1, "the report before it is still waiting"


async def test_a_node_is_heard_when_its_heartbeat_is_read_not_when_it_is_applied(
    leader: InProcessLeader,
) -> None:
    """Under a busy leader a heartbeat waits in the group commit; stamped when applied,
    that wait delayed seeing a dead node by as much (twice node_timeout under a flood)."""
    farm = leader.leader
    async with FakeAgent.connect(leader.ws_url, leader.agent_token, "node1"):
        clock = [farm.now()]
        farm.clock = lambda: clock[0]
        link = farm.agents["node1"]
        assert isinstance(link, AgentLink)
        heard = clock[0]
        applied = link.handle(Heartbeat(beat=1))  # read now, applied on the loop's next turn
        clock[0] += 5.0  # the leader got to it five seconds later
        await applied
        node = farm.scheduler.nodes["node1"]
        assert node.last_seen == heard
        # Silent for node_timeout from when it was heard: lost.
        clock[0] = heard + farm.config.node_timeout + 0.5
        await farm.queue_tick()
        assert not node.online


async def test_a_lost_node_is_not_brought_back_by_a_heartbeat_on_its_old_link(
    leader: InProcessLeader,
) -> None:
    """Frozen past node_timeout with its link open, a thawed agent's heartbeat renews
    no lease (its chunks have moved): the link is closed and only a hello brings it back."""
    job_id = await submit(leader)
    farm = leader.leader
    async with FakeAgent.connect(leader.ws_url, leader.agent_token, "node1") as agent:
        await agent.expect(AssignChunk)
        clock = [farm.now()]
        farm.clock = lambda: clock[0]
        clock[0] += farm.config.node_timeout + 1.0  # frozen
        await farm.queue_tick()
        node = farm.scheduler.nodes["node1"]
        assert not node.online
        await agent.send(Heartbeat(beat=5))  # thawed
        answers: list[object] = []

        async def read_until_closed() -> None:
            async with asyncio.timeout(10):
                while True:
                    answers.append(await agent.receive())

        with pytest.raises(ConnectionClosed) as closed:
            await read_until_closed()
        assert not any(isinstance(a, LeaseRenewed) for a in answers), "a lost node's lease renewed"
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == CLOSE_LOST
        assert not node.online
    assert farm.scheduler.jobs[job_id].chunks[0].state == "preempted"
    async with FakeAgent.connect(leader.ws_url, leader.agent_token, "node1"):
        assert node.online


async def test_each_heartbeat_is_answered_with_a_lease_renewal(leader: InProcessLeader) -> None:
    async with FakeAgent.connect(leader.ws_url, leader.agent_token, "node1") as agent:
        await agent.send(Heartbeat(beat=7))
        renewed = await agent.expect(LeaseRenewed)
        assert renewed.beat == 7
        assert agent.welcome is not None
        assert agent.welcome.lease < leader.leader.config.node_timeout


class TestLeaderStall:
    @pytest.fixture
    def leader_config(self) -> LeaderConfig:
        return LeaderConfig(tick_interval=0.02, node_timeout=0.5)

    async def test_a_blocked_event_loop_does_not_make_a_connected_node_lost(
        self, leader: InProcessLeader
    ) -> None:
        job_id = await submit(leader)
        farm = leader.leader
        async with FakeAgent.connect(leader.ws_url, leader.agent_token, "node1") as agent:
            await agent.expect(AssignChunk)
            await agent.send(Heartbeat(beat=1))
            await agent.expect(LeaseRenewed)
            runs = farm.metrics.events
            # A slow request holds the leader's loop for three node_timeouts.
            time.sleep(1.5)  # noqa: ASYNC251 - blocking the loop is the point
            # The ticks right after it run before the node could say anything.
            await wait_for(lambda: farm.metrics.events >= runs + 3, 5.0, "ticks after the stall")
            chunk = leader.leader.scheduler.jobs[job_id].chunks[0]
            assert chunk.state == "assigned"
            assert leader.leader.scheduler.nodes["node1"].online


class TestBusyLoop:
    @pytest.fixture
    def leader_config(self) -> LeaderConfig:
        return LeaderConfig(tick_interval=0.02, node_timeout=2.0)

    async def test_a_busy_loop_does_not_slow_the_silence_clock_of_a_frozen_node(
        self, leader: InProcessLeader
    ) -> None:
        """A loop that turns, however busy, reads heartbeats: its lateness is no stall."""
        farm = leader.leader
        busy = True

        async def keep_busy() -> None:
            while busy:  # every turn of the loop takes ~15 ms, every tick is that late
                time.sleep(0.015)  # noqa: ASYNC251 - a busy loop is the point
                await asyncio.sleep(0)

        async with FakeAgent.connect(leader.ws_url, leader.agent_token, "node1"):
            node = farm.scheduler.nodes["node1"]
            heard = node.last_seen
            hog = asyncio.get_running_loop().create_task(keep_busy())
            try:
                # It says nothing more (frozen): lost node_timeout after it was heard.
                await wait_for(lambda: not node.online, 10.0, "node1 lost")
                lost_after = farm.now() - heard
            finally:
                busy = False
                await hog
        # Crediting every late tick made this ~3.5 s (a slow clock), not 2 s.
        assert 2.0 <= lost_after < 2.8, lost_after


async def test_an_agent_that_reads_batches_gets_them_and_its_batches_are_applied_in_order(
    leader: InProcessLeader,
) -> None:
    job_id = await submit(leader, frames="1-4", chunk=1)
    async with FakeAgent.connect(
        leader.ws_url, leader.agent_token, "node1", slots=4, batches=True
    ) as agent:
        assert agent.welcome is not None
        assert agent.welcome.batches
        assigns = [await agent.expect(AssignChunk) for _ in range(4)]
        assert agent.frames[0] == 1  # the welcome travels alone
        assert 4 in agent.frames[1:]  # the four assignments in one frame
        reports: list[bytes] = []
        for assign in assigns:
            ref = {"job_id": job_id, "chunk": assign.chunk, "attempt": assign.attempt}
            now = time.time()
            reports.append(encode(ChunkStarted(**ref, pid=1, seq=agent.next_seq())))
            reports.append(
                encode(
                    ChunkFinished(
                        **ref,
                        outcome="done",
                        exit_status="0",
                        started=now,
                        finished=now,
                        seq=agent.next_seq(),
                    )
                )
            )
        # A batch with one bad message, or a second hello, is refused whole:
        # nothing of it is applied.
        await agent.send_raw(encode_batch([*reports[:2], b'{"type": "no_such_message"}']))
        hello = encode(AgentHello(name="node1", slots=4))
        await agent.send_raw(encode_batch([reports[0], hello, reports[1]]))
        await agent.send_raw(encode_batch(reports))
        await agent.expect_ack(8)
        job = leader.leader.scheduler.jobs[job_id]
        assert [c.state for c in job.chunks] == ["done"] * 4
        assert all(len(c.attempts) == 1 for c in job.chunks)
        assert leader.leader.agents["node1"].ignored == 2


async def test_a_batch_is_acknowledged_once_for_its_highest_committed_number(
    leader: InProcessLeader, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Acks are cumulative: a frame of reports committed together gets one Ack, for the
    # last of them. (A loaded machine let the group budget cut the batch in two groups,
    # rightly acknowledged as each was committed: not what this test is about.)
    monkeypatch.setattr("server.group_commit.GROUP_BUDGET", math.inf)
    job_id = await submit(leader, frames="1-2", chunk=1)
    async with FakeAgent.connect(
        leader.ws_url, leader.agent_token, "node1", slots=2, batches=True
    ) as agent:
        assigns = [await agent.expect(AssignChunk) for _ in range(2)]
        reports: list[bytes] = []
        for assign in assigns:
            ref = {"job_id": job_id, "chunk": assign.chunk, "attempt": assign.attempt}
            now = time.time()
            reports.append(encode(ChunkStarted(**ref, pid=1, seq=agent.next_seq())))
            reports.append(
                encode(
                    ChunkFinished(
                        **ref,
                        outcome="done",
                        exit_status="0",
                        started=now,
                        finished=now,
                        seq=agent.next_seq(),
                    )
                )
            )
        await agent.send_raw(encode_batch(reports))
        ack = await agent.expect(Ack)
        assert ack.seq == 4
        assert not [m for m in agent.inbox if isinstance(m, Ack)]
        job = leader.leader.scheduler.jobs[job_id]
        assert [c.state for c in job.chunks] == ["done"] * 2


async def test_the_leader_does_not_inflate_compressed_frames(leader: InProcessLeader) -> None:
    # A few compressed bytes could become a frame of a thousand messages.
    async with connect(
        f"{leader.ws_url}/ws/agent",
        additional_headers={"Authorization": f"Bearer {leader.agent_token}"},
        compression="deflate",
    ) as ws:
        assert ws.response is not None
        assert "Sec-WebSocket-Extensions" not in ws.response.headers


def slow_report(applied: list[int], number: int) -> Callable[[float], Changes]:
    """A step that takes the leader 5 ms and notes that it was applied."""

    def apply(now: float) -> Changes:
        time.sleep(0.005)  # noqa: ASYNC251 - a busy leader is the point
        applied.append(number)
        return Changes()

    return apply


async def test_a_hello_is_welcomed_ahead_of_the_reports_waiting_in_the_group_commit(
    leader: InProcessLeader, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a restart a farm's resent reports fill the group commit; a hello behind
    them waited so long that its agent's lease lapsed and it killed its renders."""
    from server import group_commit

    monkeypatch.setattr(group_commit, "GROUP_BUDGET", 0.0)  # one step a group
    farm = leader.leader
    applied: list[int] = []
    backlog = [farm.submit(slow_report(applied, i), dispatch=False) for i in range(300)]
    async with FakeAgent.connect(leader.ws_url, leader.agent_token, "node1") as agent:
        assert agent.welcome is not None
        assert len(applied) < 100, f"welcomed only after {len(applied)} of 300 reports"
    await asyncio.gather(*backlog)
    assert applied == list(range(300)), "the reports kept their order"


async def test_a_closed_link_is_recorded_ahead_of_the_backlog_without_applying_it_at_once(
    leader: InProcessLeader, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A link's close applied every report waiting first, in one turn of the loop
    (170-240 ms while a restarted leader's agents reconnected)."""
    from server import group_commit

    monkeypatch.setattr(group_commit, "GROUP_BUDGET", 0.0)  # one step a group
    farm = leader.leader
    applied: list[int] = []
    async with FakeAgent.connect(leader.ws_url, leader.agent_token, "node1"):
        node = farm.scheduler.nodes["node1"]
        backlog = [farm.submit(slow_report(applied, i), dispatch=False) for i in range(100)]
    await wait_for(lambda: not node.online, 10.0, "the disconnect recorded")
    assert len(applied) < 50, f"the disconnect waited for {len(applied)} of 100 reports"
    await asyncio.gather(*backlog)
    assert applied == list(range(100))


async def test_a_burst_of_hellos_is_registered_in_groups_with_the_loop_free_between(
    leader: InProcessLeader, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A farm's agents all say hello at once after a leader restart. Each hello was
    registered and committed on its own in the turn it was read: 300 of them held the
    loop for ~0.5 s. They now go through the group commit like reports, and each agent
    still gets its Welcome before the work its own registration made possible."""
    from server import group_commit

    monkeypatch.setattr(group_commit, "GROUP_BUDGET", 0.0)  # one step a group
    job_id = await submit(leader, frames="1-4", chunk=1)
    farm = leader.leader
    order: list[str] = []
    node_connected = farm.scheduler.node_connected

    def connected(hello: AgentHello, now: float) -> Any:
        if not order:
            asyncio.get_running_loop().call_soon(lambda: order.append("other work"))
        order.append(hello.name)
        return node_connected(hello, now)

    monkeypatch.setattr(farm.scheduler, "node_connected", connected)
    names = [f"node{i}" for i in range(4)]
    sockets = [
        await connect(
            f"{leader.ws_url}/ws/agent",
            additional_headers={"Authorization": f"Bearer {leader.agent_token}"},
        )
        for _ in names
    ]
    try:
        for ws, name in zip(sockets, names, strict=True):
            await ws.send(encode(AgentHello(name=name, slots=1)).decode())
        # Held for a moment, the loop then finds the four hellos in one turn.
        time.sleep(0.3)  # noqa: ASYNC251 - blocking the loop is the point
        first = [leader_to_agent.decode(await ws.recv()) for ws in sockets]
        assigned = [leader_to_agent.decode(await ws.recv()) for ws in sockets]
    finally:
        for ws in sockets:
            await ws.close()
    assert sorted(n for n in order if n != "other work") == names
    assert 0 < order.index("other work") < len(order) - 1, "the loop was free between hellos"
    assert [type(message).__name__ for message in first] == ["Welcome"] * 4
    assert all(isinstance(message, AssignChunk) for message in assigned)
    assert {message.job_id for message in assigned if isinstance(message, AssignChunk)} == {job_id}


async def test_after_a_restart_a_node_not_heard_yet_is_given_the_time_the_leader_was_busy(
    tmp_path: Path,
) -> None:
    """A restarted leader busy with a farm's reconnections declared lost, at start-up +
    node_timeout, nodes whose connections it had not even accepted yet, and their
    finished work was rendered again. Its lateness is not held against them; once a
    node has said hello it is judged like any other."""
    async with leader_in_process(tmp_path) as first:
        job_id = await submit(first)
        async with FakeAgent.connect(first.ws_url, first.agent_token, "node1") as agent:
            await agent.expect(AssignChunk)
    async with leader_in_process(tmp_path) as second:
        farm = second.leader
        clock = [farm.now()]
        farm.clock = lambda: clock[0]
        clock[0] += farm.config.node_timeout + 1.0
        await farm.queue_tick(busy=3.0)  # its ticks came 3 s late in all: not lost
        assert farm.scheduler.nodes["node1"].running
        clock[0] += 3.0
        await farm.queue_tick()  # node_timeout of silence the leader could have heard: lost
        assert not farm.scheduler.nodes["node1"].running
        assert farm.scheduler.jobs[job_id].chunks[0].state == "preempted"


async def test_after_a_restart_nodes_not_back_yet_are_heard_while_others_keep_coming_back(
    tmp_path: Path,
) -> None:
    """Under a heavier load a restarted leader accepted 30 connections a second, on time
    for its ticks: node_timeout passed with hundreds still queued. While nodes keep
    coming back, those not back yet are heard as of the last one."""
    async with leader_in_process(tmp_path) as first:
        job_id = await submit(first, frames="1-2", chunk=1)
        async with (
            FakeAgent.connect(first.ws_url, first.agent_token, "node1") as one,
            FakeAgent.connect(first.ws_url, first.agent_token, "node2") as two,
        ):
            await one.expect(AssignChunk)
            await two.expect(AssignChunk)
    async with leader_in_process(tmp_path) as second:
        farm = second.leader
        clock = [farm.now()]
        farm.clock = lambda: clock[0]
        timeout = farm.config.node_timeout
        clock[0] += timeout - 1.0
        async with FakeAgent.connect(second.ws_url, second.agent_token, "node2"):
            back = clock[0]
            clock[0] += 2.0  # node_timeout since start-up, 2 s since node2 came back
            await farm.queue_tick()
            assert farm.scheduler.nodes["node1"].running, "lost while the farm came back"
            clock[0] = back + timeout + 1.0
            await farm.queue_tick()
            assert not farm.scheduler.nodes["node1"].running
        # node1's chunk moved once it was lost (node2 came back without its own).
        assert [c.state for c in farm.scheduler.jobs[job_id].chunks] == ["preempted"] * 2


async def test_after_a_restart_nodes_trickling_back_keep_a_dead_node_only_so_long(
    tmp_path: Path,
) -> None:
    """Each node coming back counted for those not back yet with no end: restored nodes
    returning one by one (a rolling reboot) kept a dead node's chunks from moving for
    as long as they kept coming. That credit ends RESTORE_TIMEOUTS × node_timeout after
    start-up."""
    from server.leader import RESTORE_TIMEOUTS

    names = ["node1", "node2", "node3"]
    async with leader_in_process(tmp_path) as first:
        await submit(first, frames="1-3", chunk=1)
        async with contextlib.AsyncExitStack() as stack:
            for name in names:
                agent = await stack.enter_async_context(
                    FakeAgent.connect(first.ws_url, first.agent_token, name)
                )
                await agent.expect(AssignChunk)
    async with leader_in_process(tmp_path) as second:
        farm = second.leader
        clock = [farm.now()]
        start = clock[0]
        farm.clock = lambda: clock[0]
        timeout = farm.config.node_timeout
        until = start + RESTORE_TIMEOUTS * timeout
        clock[0] = start + timeout - 1.0
        async with FakeAgent.connect(second.ws_url, second.agent_token, "node2"):
            pass
        clock[0] = until + 1.0  # still coming back, past the end of the credit
        async with FakeAgent.connect(second.ws_url, second.agent_token, "node3"):
            pass
        clock[0] = until + timeout - 1.0
        await farm.queue_tick()
        assert farm.scheduler.nodes["node1"].running, "lost before node_timeout of silence"
        clock[0] = until + timeout + 1.0  # node3 came back only timeout - 2 s ago
        await farm.queue_tick()
        assert not farm.scheduler.nodes["node1"].running, "the dead node still holds its chunk"


def node_on_disk(leader: InProcessLeader, name: str) -> dict[str, Any]:
    db = sqlite3.connect(leader.data / "farm.db")
    try:
        row = db.execute("SELECT data FROM nodes WHERE name = ?", (name,)).fetchone()
    finally:
        db.close()
    node: dict[str, Any] = json.loads(row[0])
    return node


async def test_after_a_restart_farm_nodes_says_when_each_node_was_last_heard(
    tmp_path: Path,
) -> None:
    """`farm nodes` showed every node not back yet as seen when the leader restarted
    ("0s ago" for one gone for a day). A node's last contact is now stored: a closed
    link's with the next commit (none of its own), every node's at the leader's stop."""
    async with leader_in_process(tmp_path) as first:
        farm = first.leader
        hour_ago = farm.now() - 3600.0
        clock = [hour_ago]
        farm.clock = lambda: clock[0]
        async with FakeAgent.connect(first.ws_url, first.agent_token, "gone") as agent:
            clock[0] = hour_ago + 100.0
            await agent.send(Heartbeat(beat=1))
            await agent.expect(LeaseRenewed)
        await wait_for(lambda: not farm.scheduler.nodes["gone"].online)
        assert node_on_disk(first, "gone")["last_seen"] == hour_ago  # its hello's row
        await submit(first)  # a commit made anyway takes the closed link's contact along
        assert node_on_disk(first, "gone")["last_seen"] == hour_ago + 100.0
        clock[0] = hour_ago + 200.0
        stays = FakeAgent.connect(first.ws_url, first.agent_token, "idle")
        idle = await stays.__aenter__()
        clock[0] = hour_ago + 300.0
        await idle.send(Heartbeat(beat=1))
        await idle.expect(LeaseRenewed)
    await stays.__aexit__(None, None, None)  # connected until the leader stopped
    async with leader_in_process(tmp_path) as second:
        async with second.http() as http:
            nodes = {n["name"]: n for n in (await http.get("/api/nodes")).json()}
        assert nodes["gone"]["state"] == "offline"
        assert nodes["gone"]["last_seen"] == hour_ago + 100.0
        assert nodes["idle"]["last_seen"] == hour_ago + 300.0  # written at the stop
        # Its silence clock is the leader's own, as before: not lost for the hour it was not.
        assert second.leader.scheduler.nodes["gone"].last_seen > hour_ago + 3000.0


async def test_a_killed_leader_knows_within_a_minute_when_an_idle_node_was_last_heard(
    tmp_path: Path,
) -> None:
    """Heartbeats commit nothing, and a node's contact was written only with its other
    changes or at the leader's stop: after a kill -9, `farm nodes` said a node idle (and
    heard every second) until the crash was last seen at its hello, hours before (break
    round 29e). Every ``CONTACTS_EVERY`` a tick now writes them: what a kill finds."""
    # Its silence is not what is tested: long enough for the clock's jumps below.
    config = LeaderConfig(node_timeout=10 * CONTACTS_EVERY)
    async with leader_in_process(tmp_path, config) as first:
        farm = first.leader
        start = farm.now()
        clock = [start]
        farm.clock = lambda: clock[0]
        async with FakeAgent.connect(first.ws_url, first.agent_token, "idle") as idle:
            clock[0] = start + 30.0
            await idle.send(Heartbeat(beat=1))
            await idle.expect(LeaseRenewed)
            clock[0] = start + 1.0 + CONTACTS_EVERY
            await farm.queue_tick()
            assert node_on_disk(first, "idle")["last_seen"] == start + 30.0
            clock[0] = start + 40.0 + CONTACTS_EVERY
            await idle.send(Heartbeat(beat=2))
            await idle.expect(LeaseRenewed)
            await farm.queue_tick()
            assert node_on_disk(first, "idle")["last_seen"] == start + 30.0, "once a minute"


async def test_a_link_flooding_bad_frames_gets_a_few_warnings_and_a_count(
    leader: InProcessLeader, caplog: pytest.LogCaptureFixture
) -> None:
    """A break round's junk links wrote one warning per frame, 350 a second; the log now
    says the first few and, once the link closes, how many more there were."""
    with caplog.at_level(logging.WARNING, logger="farmtui.leader.agents"):
        async with FakeAgent.connect(leader.ws_url, leader.agent_token, "node1") as agent:
            for n in range(40):
                await agent.send_raw(f'{{"type": "no_such_message", "n": {n}}}')
            await agent.send(Heartbeat(beat=1))
            assert (await agent.expect(LeaseRenewed)).beat == 1  # read in order, link open
            assert leader.leader.agents["node1"].ignored == 40
        await wait_for(lambda: any("more like that" in m for m in caplog.messages))
    ignored = [m for m in caplog.messages if m.startswith("node node1: ignored a message")]
    assert len(ignored) == repeated_warnings.BURST
    assert f"node node1: {40 - repeated_warnings.BURST} more like that" in "\n".join(
        caplog.messages
    )


@pytest.mark.parametrize("size", ["over a batch", "over what the leader reads"])
async def test_a_frame_longer_than_a_batch_closes_the_link_unread_and_changes_nothing(
    leader: InProcessLeader, size: str
) -> None:
    """Decoding one frame of 3.8 MB of short lines held the leader's loop 40 ms to a
    second, and reading such frames only to refuse them 100-200 ms at a time. An agent's
    messages each fit in a batch (``agent.report_size``): a longer frame closes its link
    unread (past ``MAX_FRAME_READ_BYTES`` before it is even read), even one that would
    have been valid. The node is not lost for it: it may say hello again."""
    job_id = await submit(leader)
    lines = 300 if size == "over a batch" else 4_000
    big = encode(ChunkOutput(job_id=job_id, chunk=0, attempt=1, lines=["x" * 1000] * lines))
    assert len(big) > (MAX_BATCH_FRAME_BYTES if lines == 300 else MAX_FRAME_READ_BYTES)
    async with FakeAgent.connect(leader.ws_url, leader.agent_token, "node1") as agent:
        await agent.expect(AssignChunk)
        commits = leader.leader.store.commits

        async def send_then_read() -> None:
            # The leader may close from the frame's header while 4 MB are still being
            # written, and then the send itself raises.
            await agent.send_raw(big)
            await agent.expect(LeaseRenewed)

        with pytest.raises(ConnectionClosed) as closed:
            await send_then_read()
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == 1009
        if lines == 300:
            assert f"a frame of {len(big):,} bytes is over" in closed.value.rcvd.reason
    assert leader.leader.store.commits == commits
    chunk = leader.leader.scheduler.jobs[job_id].chunks[0]
    assert (chunk.state, chunk.node, chunk.attempt) == ("assigned", "node1", 1)  # not moved
    async with FakeAgent.connect(leader.ws_url, leader.agent_token, "node1") as again:
        await again.send(Heartbeat(beat=1))
        assert (await again.expect(LeaseRenewed)).beat == 1


async def test_a_nodes_words_reach_the_logs_people_tail_as_plain_text(
    leader: InProcessLeader, caplog: pytest.LogCaptureFixture
) -> None:
    """A node's reason and exit status went byte for byte into events.log, the chunk
    log's footer and the leader's own log: a reason of ``ESC]0;...`` retitled the
    terminal of whoever ran ``tail -f`` on them, ``ESC[2J`` cleared it."""
    job_id = await submit(leader, retries=0)
    evil = "\x1b]0;PWNED\x07\x1b[2J\x9b31mboom\u202e" + "x" * 5000
    async with FakeAgent.connect(leader.ws_url, leader.agent_token, "node1") as agent:
        assign = await agent.expect(AssignChunk)
        ref = {"job_id": job_id, "chunk": assign.chunk, "attempt": assign.attempt}
        await agent.send(ChunkStarted(**ref, pid=1, command=["render"], seq=1))
        now = time.time()
        finished = ChunkFinished(
            **ref, outcome="failed", exit_status="\x1b[2J", reason=evil, started=now,
            finished=now, seq=2,
        )  # fmt: skip
        with caplog.at_level(logging.INFO, logger="farmtui.leader"):
            await agent.send(finished)
            await agent.expect_ack(2)
    async with leader.http() as http:
        detail = (await http.get(f"/api/jobs/{job_id}")).json()
        log = (await http.get(f"/api/jobs/{job_id}/logs", params={"chunk": 0})).text
        events = (await http.get(f"/api/jobs/{job_id}/events")).text
    written = {
        "events.log": (leader.root / f"jobs/{job_id}/events.log").read_text(),
        "the chunk log": (leader.root / assign.log_path).read_text(),
        "the leader's log": caplog.text,
        "the REST events": events,
        "the REST chunk log": log,
    }
    for where, text in written.items():
        assert "PWNED" in text, where  # it is there, as text
        assert not set(text) & {"\x1b", "\x07", "\x9b", "\u202e"}, where
        assert "x" * 2001 not in text, where  # cut, not a node's flood
    assert "\\x1b]0;PWNED\\x07" in written["events.log"]
    attempt = detail["chunks"][0]["attempts"][-1]
    assert attempt["outcome"] == "failed"
    assert attempt["exit_status"] == "\\x1b[2J"


async def render_forty_lines(agent: FakeAgent, job_id: str) -> tuple[AssignChunk, list[str]]:
    """Take the job's chunk and report it started and 40 lines of output, acknowledged;
    the assignment and the lines."""
    assign = await agent.expect(AssignChunk)
    ref = {"job_id": job_id, "chunk": assign.chunk, "attempt": assign.attempt}
    await agent.send(ChunkStarted(**ref, pid=1, command=["render"], seq=1))
    lines = [f"line {n} of the render's output" for n in range(40)]
    await agent.send(ChunkOutput(**ref, lines=lines, seq=2))
    await agent.expect_ack(2)
    return assign, lines


async def test_a_log_too_long_to_serve_says_it_was_cut(
    leader: InProcessLeader, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``farm logs`` of a chunk log over the limit began mid-line and did not say that
    the start was left out."""
    monkeypatch.setattr("server.api_logs.MAX_LOG_BYTES", 200)
    job_id = await submit(leader)
    async with FakeAgent.connect(leader.ws_url, leader.agent_token, "node1") as agent:
        assign, lines = await render_forty_lines(agent, job_id)
    async with leader.http() as http:
        log = (await http.get(f"/api/jobs/{job_id}/logs", params={"chunk": 0})).text
    first, *rest = log.splitlines()
    assert first == (
        "# farmtui: only the last 200 bytes of this log are served; "
        f"all of it is {assign.log_path} in the sync root"
    )
    assert rest
    assert all(line in lines for line in rest)  # whole lines only
    assert rest[-1] == lines[-1]
