"""A scripted agent over a real WebSocket, for leader tests.

It speaks the wire protocol and nothing else: the test decides what it
reports and when::

    async with FakeAgent.connect(farm.ws_url, farm.agent_token, "node1", slots=1) as agent:
        assign = await agent.expect(AssignChunk)
        await agent.send(ChunkStarted(job_id=..., chunk=0, attempt=1, pid=1, seq=1))
        await agent.expect_ack(1)
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TypeVar

from websockets.asyncio.client import ClientConnection, connect

from farmtui.protocol import (
    Ack,
    AgentHello,
    AgentMessage,
    ChunkRef,
    LeaderToAgentMessage,
    RunningRef,
    Welcome,
    decode_batch,
    encode,
    leader_to_agent,
    leader_to_agent_batch,
)

M = TypeVar("M", bound=LeaderToAgentMessage)

RECEIVE_TIMEOUT = 10.0


class FakeAgent:
    def __init__(self, ws: ClientConnection, name: str) -> None:
        self.ws = ws
        self.name = name
        self.welcome: Welcome | None = None
        # Everything received that a test has not asked for yet, in order.
        self.inbox: list[LeaderToAgentMessage] = []
        self.seq = 0
        # Messages in each frame received, in order (a batch is one frame).
        self.frames: list[int] = []

    @classmethod
    @asynccontextmanager
    async def connect(
        cls,
        ws_url: str,
        token: str,
        name: str,
        slots: int = 1,
        running: list[ChunkRef] | None = None,
        tags: list[str] | None = None,
        finished: list[ChunkRef] | None = None,
        batches: bool = False,
        os: str = "linux",
    ) -> AsyncIterator[FakeAgent]:
        async with connect(
            f"{ws_url}/ws/agent",
            additional_headers={"Authorization": f"Bearer {token}"},
            open_timeout=RECEIVE_TIMEOUT,
        ) as ws:
            agent = cls(ws, name)
            await agent.send(
                AgentHello(
                    name=name,
                    slots=slots,
                    running=[
                        RunningRef(job_id=r.job_id, chunk=r.chunk, attempt=r.attempt)
                        for r in running or []
                    ],
                    finished=finished or [],
                    tags=tags or [],
                    batches=batches,
                    os=os,
                )
            )
            agent.welcome = await agent.expect(Welcome)
            yield agent

    def next_seq(self) -> int:
        self.seq += 1
        return self.seq

    async def send(self, message: AgentMessage) -> None:
        await self.ws.send(encode(message).decode())

    async def send_raw(self, data: str | bytes) -> None:
        await self.ws.send(data)

    async def _frame(self) -> list[LeaderToAgentMessage]:
        data = await self.ws.recv(decode=False)
        messages: list[LeaderToAgentMessage] = decode_batch(
            leader_to_agent, leader_to_agent_batch, data
        )
        self.frames.append(len(messages))
        return messages

    async def receive(self) -> LeaderToAgentMessage:
        if not self.inbox:
            self.inbox.extend(await self._frame())
        return self.inbox.pop(0)

    async def expect(self, kind: type[M]) -> M:
        """The first message of this type; others received meanwhile stay in the inbox."""
        for index, message in enumerate(self.inbox):
            if isinstance(message, kind):
                return self.inbox.pop(index)  # type: ignore[return-value]
        async with asyncio.timeout(RECEIVE_TIMEOUT):
            while True:
                self.inbox.extend(await self._frame())
                for index, message in enumerate(self.inbox):
                    if isinstance(message, kind):
                        return self.inbox.pop(index)  # type: ignore[return-value]

    async def expect_ack(self, seq: int) -> Ack:
        while True:
            ack = await self.expect(Ack)
            if ack.seq >= seq:
                return ack
