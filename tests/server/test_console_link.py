"""``/ws/console``: snapshot, live deltas, requests with replies, task output."""

from __future__ import annotations

import asyncio
import gc
import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus

from farmtui.protocol import (
    MAX_CONSOLE_MESSAGE_BYTES,
    AssignChunk,
    ChunkOutput,
    ChunkProgress,
    ChunkStarted,
    ConsoleHello,
    ConsoleMessage,
    Event,
    FetchNodeLog,
    FetchTaskOutput,
    JobsChanged,
    JobsRemoved,
    JobWatched,
    LeaderToConsoleMessage,
    NodeLog,
    NodesChanged,
    Reply,
    RunJobAction,
    SetPriority,
    Snapshot,
    TaskOutput,
    WatchJob,
    encode,
    leader_to_console,
)
from tests.helpers.fake_agent import FakeAgent
from tests.helpers.leader import InProcessLeader, wait_for
from tests.server.test_agent_link import render_forty_lines

M = TypeVar("M", bound=LeaderToConsoleMessage)

SPEC: dict[str, Any] = {
    "name": "shot",
    "frames": "1-4",
    "chunk": 2,
    "renderer": "generic",
    "argv": ["render"],
}


class Console:
    """A scripted console; messages not asked for yet wait in ``inbox``."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.request_id = 0
        self.inbox: list[LeaderToConsoleMessage] = []

    async def request(self, message: ConsoleMessage) -> Reply:
        self.request_id += 1
        message.request_id = self.request_id
        await self.ws.send(encode(message).decode())
        wanted = self.request_id
        return await self.expect(Reply, lambda m: m.request_id == wanted)

    async def expect(self, kind: type[M], where: Any = None) -> M:
        def wanted(message: LeaderToConsoleMessage) -> bool:
            return isinstance(message, kind) and (where is None or where(message))

        for index, message in enumerate(self.inbox):
            if wanted(message):
                return self.inbox.pop(index)  # type: ignore[return-value]
        async with asyncio.timeout(10):
            while True:
                message = leader_to_console.decode(await self.ws.recv(decode=False))
                if wanted(message):
                    return message  # type: ignore[return-value]
                self.inbox.append(message)


@asynccontextmanager
async def console(leader: InProcessLeader, token: str | None = None) -> AsyncIterator[Console]:
    async with connect(
        f"{leader.ws_url}/ws/console",
        additional_headers={"Authorization": f"Bearer {token or leader.admin_token}"},
    ) as ws:
        await ws.send(encode(ConsoleHello()).decode())
        yield Console(ws)


async def submit(leader: InProcessLeader, **changes: Any) -> str:
    async with leader.http() as http:
        response = await http.post("/api/jobs", json={**SPEC, **changes})
    assert response.status_code == 201, response.text
    job_id: str = response.json()["id"]
    return job_id


async def test_snapshot_then_live_jobs_changed(leader: InProcessLeader) -> None:
    first = await submit(leader, name="first")
    async with console(leader) as c:
        snapshot = await c.expect(Snapshot)
        assert (snapshot.user, snapshot.role) == ("admin", "admin")
        assert [j.id for j in snapshot.jobs] == [first]
        second = await submit(leader, name="second")
        changed = await c.expect(JobsChanged, lambda m: any(j.id == second for j in m.jobs))
        assert changed.jobs[-1].name == "second"
        event = await c.expect(Event, lambda m: m.event.job_id == second)
        assert "submitted" in event.event.text


async def test_requests_get_replies_with_rest_permissions(leader: InProcessLeader) -> None:
    job_id = await submit(leader)
    async with console(leader) as c:
        await c.expect(Snapshot)
        reply = await c.request(RunJobAction(action="pause", job_ids=[job_id]))
        assert reply.ok, reply.error
        changed = await c.expect(JobsChanged, lambda m: m.jobs[0].state == "paused")
        assert changed.jobs[0].id == job_id
        reply = await c.request(RunJobAction(action="pause", job_ids=["nope"]))
        assert not reply.ok
        assert reply.error
        assert "unknown job nope" in reply.error
        reply = await c.request(RunJobAction(action="delete", job_ids=[job_id]))
        assert reply.ok
        removed = await c.expect(JobsRemoved)
        assert removed.job_ids == [job_id]
    viewer = leader.token("viewer", "val")
    alice = leader.token("user", "alice")
    job_id = await submit(leader)
    async with console(leader, viewer) as c:
        snapshot = await c.expect(Snapshot)
        assert snapshot.role == "viewer"
        reply = await c.request(RunJobAction(action="cancel", job_ids=[job_id]))
        assert not reply.ok
    async with console(leader, alice) as c:
        await c.expect(Snapshot)
        reply = await c.request(SetPriority(job_id=job_id, priority=1))
        assert not reply.ok
        assert reply.error
        assert "admin" in reply.error
    assert leader.leader.scheduler.jobs[job_id].state == "queued"
    assert leader.leader.scheduler.jobs[job_id].priority == 50


async def test_watch_job_and_follow_task_output(leader: InProcessLeader) -> None:
    job_id = await submit(leader)
    async with (
        console(leader) as c,
        FakeAgent.connect(leader.ws_url, leader.agent_token, "node1") as agent,
    ):
        await c.expect(Snapshot)
        assert (await c.request(WatchJob(job_id=job_id))).ok
        watched = await c.expect(JobWatched)
        assert watched.detail.job.id == job_id
        assign = await agent.expect(AssignChunk)
        ref = {"job_id": job_id, "chunk": assign.chunk, "attempt": assign.attempt}
        await agent.send(ChunkStarted(**ref, pid=1, command=["render"], seq=1))
        await agent.send(ChunkOutput(**ref, lines=["line one"], seq=2))
        await agent.expect_ack(2)
        reply = await c.request(FetchTaskOutput(job_id=job_id, chunk=assign.chunk))
        assert reply.ok
        first = await c.expect(TaskOutput, lambda m: not m.append)
        assert first.attempt == assign.attempt
        assert "line one" in first.lines
        assert first.lines[0].startswith("# farmtui")
        await agent.send(ChunkOutput(**ref, lines=["line two", "line three"], seq=3))
        more = await c.expect(TaskOutput, lambda m: m.append)
        assert more.lines == ["line two", "line three"]
        nodes = await c.request(FetchNodeLog(node="node1"))
        assert nodes.ok
        assert isinstance(await c.expect(NodeLog), NodeLog)


async def test_nodes_changed_when_an_agent_connects(leader: InProcessLeader) -> None:
    async with console(leader) as c:
        await c.expect(Snapshot)
        async with FakeAgent.connect(leader.ws_url, leader.agent_token, "node7"):
            changed = await c.expect(NodesChanged)
        assert [n.name for n in changed.nodes] == ["node7"]


@pytest.mark.parametrize(("token", "status"), [("wrong", 401), ("agent", 403)])
async def test_console_handshake_refused(leader: InProcessLeader, token: str, status: int) -> None:
    value = leader.agent_token if token == "agent" else token
    with pytest.raises(InvalidStatus) as info:
        async with connect(
            f"{leader.ws_url}/ws/console", additional_headers={"Authorization": f"Bearer {value}"}
        ):
            pass
    assert info.value.response.status_code == status


async def test_token_in_query_for_clients_without_headers(leader: InProcessLeader) -> None:
    async with connect(f"{leader.ws_url}/ws/console?token={leader.admin_token}") as ws:
        await ws.send(encode(ConsoleHello()).decode())
        message = leader_to_console.decode(await ws.recv(decode=False))
    assert isinstance(message, Snapshot)


@pytest.mark.parametrize("gap", [0.0, 0.002, 0.006])
async def test_following_a_chunk_twice_in_a_row_shows_every_line_once(
    leader: InProcessLeader, gap: float
) -> None:
    """The console asks for a chunk's output on every selection: lines keep streaming
    meanwhile, and what it shows must be the log, in order, nothing lost or repeated."""
    async with leader.http() as http:
        body = {"name": "follow", "frames": "1", "argv": ["echo"]}
        job_id = (await http.post("/api/jobs", json=body)).json()["id"]
    async with FakeAgent.connect(leader.ws_url, leader.agent_token, "streamer") as agent:
        assign = await agent.expect(AssignChunk)
        attempt = assign.attempt
        await agent.send(
            ChunkStarted(job_id=job_id, chunk=0, attempt=attempt, pid=1, seq=agent.next_seq())
        )
        await agent.expect_ack(agent.seq)
        sent = 0
        streaming = True

        async def stream() -> None:
            nonlocal sent
            while streaming:
                lines = [f"L{sent + k}" for k in range(5)]
                sent += 5
                await agent.send(ChunkOutput(job_id=job_id, chunk=0, attempt=attempt, lines=lines))
                await asyncio.sleep(0.001)

        streamer = asyncio.create_task(stream())
        await wait_for(lambda: sent > 200, 10.0, "some output")
        shown: list[str] = []
        async with connect(
            f"{leader.ws_url}/ws/console",
            additional_headers={"Authorization": f"Bearer {leader.admin_token}"},
            max_size=None,
        ) as ws:
            await ws.send(encode(ConsoleHello()).decode())

            async def receive() -> None:
                while True:
                    message = leader_to_console.decode(await ws.recv(decode=False))
                    if isinstance(message, TaskOutput):
                        shown[:] = [*shown, *message.lines] if message.append else message.lines

            receiver = asyncio.create_task(receive())
            for _ in range(2):
                await ws.send(encode(FetchTaskOutput(job_id=job_id, chunk=0, follow=True)).decode())
                await asyncio.sleep(gap)
            await wait_for(lambda: sent > 600, 10.0, "more output")
            streaming = False
            await streamer
            await agent.send(
                ChunkProgress(job_id=job_id, chunk=0, attempt=attempt, seq=agent.next_seq())
            )
            await agent.expect_ack(agent.seq)  # every line before it is applied
            await wait_for(lambda: shown[-1:] == [f"L{sent - 1}"], 10.0, "the last line shown")
            receiver.cancel()
    numbers = [int(line[1:]) for line in shown if line.startswith("L")]
    assert numbers == list(range(numbers[0], sent)), "a line was lost or shown twice"


async def test_a_closed_consoles_link_is_freed_without_the_cycle_collector(
    leader: InProcessLeader,
) -> None:
    """The leader freezes what lives through young collections (``server.heap``): a closed
    link held in a reference cycle stayed until a walk of everything, ~18 KB a console."""
    gc.disable()
    try:
        async with console(leader) as first:
            await first.expect(Snapshot)
            (link,) = leader.leader.consoles
            gone = weakref.ref(link)
            del link
        await wait_for(lambda: not leader.leader.consoles)
        await wait_for(lambda: gone() is None)
    finally:
        gc.enable()


async def test_a_console_frame_longer_than_any_message_is_refused_unread(
    leader: InProcessLeader,
) -> None:
    """A console's messages are short; megabytes of one would hold the leader's loop
    while it decoded them. The console is told, and its link goes on."""
    job_id = await submit(leader)
    async with console(leader) as c:
        await c.expect(Snapshot)
        padded = encode(SetPriority(request_id=7, job_id=job_id, priority=90))
        padded = padded[:-1] + b', "pad": "' + b"x" * MAX_CONSOLE_MESSAGE_BYTES + b'"}'
        await c.ws.send(padded.decode())
        refused = await c.expect(Reply, lambda m: m.request_id == 0)
        assert not refused.ok
        assert f"over {MAX_CONSOLE_MESSAGE_BYTES:,}" in (refused.error or "")
        assert leader.leader.scheduler.jobs[job_id].priority != 90  # nothing changed
        reply = await c.request(SetPriority(job_id=job_id, priority=90))
        assert reply.ok
    assert leader.leader.scheduler.jobs[job_id].priority == 90


async def test_task_output_of_a_log_too_long_to_serve_says_it_was_cut(
    leader: InProcessLeader, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The console's Task Output of a chunk log over the limit began mid-output, its
    command line gone, and said nothing (break round 27a); ``farm logs`` said so."""
    monkeypatch.setattr("server.joblogs.TAIL_BYTES", 300)
    job_id = await submit(leader)
    async with (
        console(leader) as c,
        FakeAgent.connect(leader.ws_url, leader.agent_token, "node1") as agent,
    ):
        await c.expect(Snapshot)
        assign, lines = await render_forty_lines(agent, job_id)
        assert (await c.request(FetchTaskOutput(job_id=job_id, chunk=assign.chunk))).ok
        shown = (await c.expect(TaskOutput, lambda m: not m.append)).lines
    assert shown[0] == (
        "# farmtui: only the last 300 bytes of this log are served; "
        f"all of it is {assign.log_path} in the sync root"
    )
    assert all(line in lines for line in shown[1:])
    assert shown[-1] == lines[-1]
