"""A batch's frame stays within ``MAX_BATCH_FRAME_BYTES``; a longer one is refused unread."""

from __future__ import annotations

import pytest

from agent.link import _Frame
from farmtui.protocol import (
    MAX_BATCH_BYTES,
    MAX_BATCH_FRAME_BYTES,
    MAX_BATCH_MESSAGES,
    MAX_FRAME_READ_BYTES,
    MAX_NODE_GPUS,
    MAX_PREFETCH,
    MAX_SLOTS,
    MAX_TAGS,
    AgentHello,
    AgentLog,
    ChunkRef,
    GpuInfo,
    Heartbeat,
    KillChunk,
    LeaseRenewed,
    ProtocolError,
    RunningRef,
    agent_to_leader,
    agent_to_leader_batch,
    decode_batch,
    encode,
    leader_to_agent,
    leader_to_agent_batch,
)
from server.links import SendQueue


class Socket:
    """What a writer sends, frame by frame (the agent's and the leader's APIs both)."""

    def __init__(self) -> None:
        self.frames: list[str] = []

    async def send(self, text: str) -> None:
        self.frames.append(text)

    async def send_text(self, text: str) -> None:
        self.frames.append(text)


# Messages of sizes that fill a batch to within a byte or two of its limit.
SIZES = [1, 2, 3, 50, 999, 4_000, 65_000, 130_000]


def enough(size: int) -> int:
    """Messages of ``size`` for three batches or more (by bytes or by count)."""
    return min(3 * MAX_BATCH_BYTES // size + 3, 3 * MAX_BATCH_MESSAGES)


@pytest.mark.parametrize("size", SIZES)
async def test_the_agents_batches_stay_within_the_limit_and_are_read(size: int) -> None:
    socket = Socket()
    frame = _Frame(socket, batches=True)  # type: ignore[arg-type]
    for n in range(enough(size)):
        await frame.add(AgentLog(lines=["x" * (size + n % 3)]))
    await frame.flush()
    assert len(socket.frames) >= 3
    for text in socket.frames:
        assert len(text.encode()) <= MAX_BATCH_FRAME_BYTES
        assert decode_batch(agent_to_leader, agent_to_leader_batch, text)


@pytest.mark.parametrize("size", SIZES)
async def test_the_leaders_batches_stay_within_the_limit_and_are_read(size: int) -> None:
    socket = Socket()
    out = SendQueue(socket, "node1", limit=10_000, batches=True)  # type: ignore[arg-type]
    out.send(LeaseRenewed(beat=0))  # the welcome's place: it travels alone
    for n in range(enough(size)):
        out.send(KillChunk(job_id="j1", chunk=n, attempt=1, reason="x" * (size + n % 3)))
        out.ack(n + 1)
    await out.drain()
    assert len(socket.frames) >= 3
    for text in socket.frames:
        assert len(text.encode()) <= MAX_BATCH_FRAME_BYTES
        assert decode_batch(leader_to_agent, leader_to_agent_batch, text)


def test_a_batch_longer_than_any_peer_builds_is_refused_before_it_is_decoded() -> None:
    """Decoding 3.8 MB of heartbeats, only to count them, took the leader's loop tens
    of milliseconds a frame."""
    beat = encode(Heartbeat(beat=1))
    junk = b"[" + b",".join([beat] * (3_800_000 // (len(beat) + 1))) + b"]"
    for data in (junk, junk.decode()):
        # Not "a batch of N messages is over 1000": that is found only by decoding it.
        with pytest.raises(ProtocolError, match=f"bytes is over {MAX_BATCH_FRAME_BYTES}"):
            decode_batch(agent_to_leader, agent_to_leader_batch, data)


def test_the_largest_hello_a_node_may_send_is_read() -> None:
    """The leader reads no frame over ``MAX_FRAME_READ_BYTES``: a hello with every GPU,
    tag and held chunk a node may list, in four-byte characters, is within it."""
    wide = "\U0001f600"
    held = [ChunkRef(job_id="0123abcd", chunk=999_999, attempt=1000)] * (MAX_SLOTS + MAX_PREFETCH)
    # A render time of the most digits a float of the bound may print.
    running = RunningRef(
        job_id="0123abcd", chunk=999_999, attempt=1000, rendered_for=31535999.123456789
    )
    hello = AgentHello(
        name="n" * 64,
        slots=MAX_SLOTS,
        tags=[wide * 64] * MAX_TAGS,
        version=wide * 64,
        running=[running] * len(held),
        finished=held,
        agent_id="a" * 64,
        os="linux",
        gpus=[GpuInfo(index=n, name=wide * 128, memory=81920) for n in range(MAX_NODE_GPUS)],
        prefetch=MAX_PREFETCH,
    )
    data = encode(hello)
    assert len(data) <= MAX_FRAME_READ_BYTES, len(data)
    assert agent_to_leader.decode(data) == hello
