"""Webhooks reach their endpoints without holding up the farm; slow consoles never slow it."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from farmtui.protocol import AssignChunk, ChunkFinished, ChunkStarted, EventView, FramesWritten
from server.auth import Principal
from server.config import LeaderConfig
from server.console_link import MAX_QUEUED, ConsoleLink
from server.model import Changes
from tests.helpers.fake_agent import FakeAgent
from tests.helpers.leader import InProcessLeader, leader_in_process, wait_for


class Receiver:
    """A webhook endpoint on loopback that records what it is sent."""

    def __init__(self) -> None:
        self.received: list[tuple[str, dict[str, Any]]] = []
        self.url = ""

    async def hook(self, request: Request) -> Response:
        self.received.append((request.url.path, msgspec.json.decode(await request.body())))
        return Response(status_code=204)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    hooks = Receiver()
    app = Starlette(routes=[Route("/{name}", hooks.hook, methods=["POST"])])
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    hooks.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    server = uvicorn.Server(uvicorn.Config(app, log_config=None, lifespan="off"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    await wait_for(lambda: server.started, 10.0, "the webhook receiver")
    yield hooks
    server.should_exit = True
    await task
    sock.close()


async def test_done_notification_goes_to_both_webhooks(tmp_path: Path, receiver: Receiver) -> None:
    config = LeaderConfig(webhook=f"{receiver.url}/leader")
    async with leader_in_process(tmp_path, config) as farm:
        async with farm.http() as http:
            response = await http.post(
                "/api/jobs",
                json={"frames": "1", "argv": ["render"], "webhook": f"{receiver.url}/job"},
            )
        job_id = response.json()["id"]
        async with FakeAgent.connect(farm.ws_url, farm.agent_token, "node1") as agent:
            assign = await agent.expect(AssignChunk)
            ref = {"job_id": job_id, "chunk": assign.chunk, "attempt": assign.attempt}
            await agent.send(ChunkStarted(**ref, pid=1, seq=1))
            await agent.send(FramesWritten(**ref, frames=[1], staged=False, seq=2))
            await agent.send(ChunkFinished(**ref, outcome="done", exit_status="0", seq=3))
            await agent.expect_ack(3)
        await wait_for(lambda: len(receiver.received) >= 2, 10.0, "two webhook POSTs")
        await asyncio.to_thread(farm.leader.logwriter.wait, 10.0)  # the logs are on disk
        events = (farm.root / f"jobs/{job_id}/events.log").read_text()
    paths = sorted(path for path, _ in receiver.received)
    assert paths == ["/job", "/leader"]
    for _, body in receiver.received:
        assert body["job_id"] == job_id
        assert body["kind"] == "done"
        assert body["job"]["state"] == "done"
    assert "notification done" in events


async def test_a_dead_webhook_does_not_hold_up_the_farm(tmp_path: Path) -> None:
    dead = socket.socket()
    dead.bind(("127.0.0.1", 0))
    dead.listen(0)  # accepts the connection, never answers
    config = LeaderConfig(
        webhook=f"http://127.0.0.1:{dead.getsockname()[1]}/x", webhook_timeout=0.3
    )
    try:
        async with leader_in_process(tmp_path, config) as farm, farm.http() as http:
            job = (await http.post("/api/jobs", json={"frames": "1", "argv": ["r"]})).json()
            began = time.monotonic()
            await http.post("/api/jobs/actions", json={"action": "complete", "ids": [job["id"]]})
            assert time.monotonic() - began < 1.0
    finally:
        dead.close()


class StuckWebSocket:
    """A console that never reads: every send blocks forever."""

    def __init__(self) -> None:
        self.sent = 0

    async def send_text(self, data: str) -> None:
        self.sent += 1
        if self.sent > 1:
            await asyncio.Event().wait()


async def test_a_stuck_console_is_resynced_not_waited_for(leader: InProcessLeader) -> None:
    hub = leader.leader
    websocket = StuckWebSocket()
    link = ConsoleLink(hub, websocket, Principal("val", "viewer"), False)  # type: ignore[arg-type]
    await wait_for(lambda: websocket.sent == 1, 5.0, "the snapshot")
    try:
        for number in range(3 * MAX_QUEUED):
            changes = Changes()
            changes.events.append(EventView(time=0.0, level="info", text=f"event {number}"))
            changes.jobs.add(f"job{number % 10}")
            link.changed(changes)
        # Bounded: the backlog was dropped for a resync, and pending jobs merge.
        assert len(link.events) <= MAX_QUEUED
        assert link.resyncs >= 1
        assert len(link.jobs) <= 10
    finally:
        await link.stop()
