"""``/ws/agent``: one render node's link to the leader.

The agent says hello (protocol version, token, slots, chunks it still runs);
the leader answers ``Welcome`` or ``Refused``. Every later message is decoded
with ``decode_checked`` (a bad one is logged and ignored: it changes nothing),
handed to the scheduler through ``Leader.run``, and acknowledged with ``Ack``
only after what it caused is committed. A closed link does not make the node
lost: the scheduler's tick does that after ``node_timeout``, so an agent may
reconnect within its lease and carry on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re

from starlette.websockets import WebSocket

from farmtui.protocol import (
    PROTOCOL_VERSION,
    Ack,
    AgentHello,
    AgentLog,
    AgentToLeader,
    ChunkFinished,
    ChunkOutput,
    ChunkProgress,
    ChunkRef,
    ChunkStarted,
    ChunkTimedOut,
    FramesWritten,
    Heartbeat,
    LeaderToAgentMessage,
    ProtocolError,
    Refused,
    Welcome,
    agent_to_leader,
    decode_checked,
    encode,
)
from server.auth import AGENTS, bearer_token
from server.leader import Leader
from server.links import SendQueue, close_websocket, receive_data
from server.model import Changes

log = logging.getLogger("farmtui.leader.agents")

HELLO_TIMEOUT = 10.0
# An agent this far behind on reading is dead or stuck.
SEND_QUEUE_LIMIT = 10_000
_NODE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")

# Close codes: 1008 policy violation (token), 1002 protocol error, 4000 replaced.
CLOSE_POLICY = 1008
CLOSE_PROTOCOL = 1002
CLOSE_REPLACED = 4000


class AgentLink:
    """One connected agent: routes its messages and carries the leader's to it."""

    def __init__(self, leader: Leader, websocket: WebSocket, name: str) -> None:
        self.leader = leader
        self.websocket = websocket
        self.name = name
        self.out = SendQueue(websocket, f"agent {name}", SEND_QUEUE_LIMIT)
        self.ignored = 0

    def send(self, message: LeaderToAgentMessage) -> None:
        self.out.send(message)

    def handle(self, message: AgentToLeader) -> None:
        """Apply one message; acknowledge it once its effects are committed."""
        leader = self.leader
        scheduler = leader.scheduler
        node = self.name
        match message:
            case Heartbeat(cpu_percent=cpu, memory_percent=memory):
                leader.run(lambda now: scheduler.node_heartbeat(node, cpu, memory, now))
            case ChunkStarted(job_id=job_id, chunk=chunk, attempt=attempt):
                if leader.attempt_of(node, job_id, chunk, attempt) is not None:
                    leader.joblogs.chunk_started(
                        job_id, chunk, attempt, node, message.command, leader.now()
                    )
                leader.run(
                    lambda now: scheduler.chunk_started(node, job_id, chunk, attempt, now),
                    dispatch=False,
                )
            case ChunkOutput(job_id=job_id, chunk=chunk, attempt=attempt, lines=lines):
                record = leader.attempt_of(node, job_id, chunk, attempt)
                if record is not None:
                    leader.output((job_id, chunk, attempt), lines)
                    if not record.alive:
                        leader.run(
                            lambda now: scheduler.chunk_alive(node, job_id, chunk, attempt, now),
                            dispatch=False,
                        )
                    else:
                        leader.joblogs.flush()
            case ChunkProgress(job_id=job_id, chunk=chunk, attempt=attempt):
                record = leader.attempt_of(node, job_id, chunk, attempt)
                if record is not None and not record.alive:
                    leader.run(
                        lambda now: scheduler.chunk_alive(node, job_id, chunk, attempt, now),
                        dispatch=False,
                    )
            case FramesWritten(job_id=job_id, chunk=chunk, attempt=attempt):
                record = leader.attempt_of(node, job_id, chunk, attempt)
                alive = record is not None and record.alive
                frames, staged = message.frames, message.staged

                def written(now: float) -> Changes:
                    changes = Changes()
                    if not alive:
                        changes.merge(scheduler.chunk_alive(node, job_id, chunk, attempt, now))
                    return changes.merge(
                        scheduler.frames_written(node, job_id, chunk, attempt, frames, staged, now)
                    )

                leader.run(written, dispatch=False)
            case ChunkTimedOut(job_id=job_id, chunk=chunk, attempt=attempt):
                kind, elapsed = message.kind, message.elapsed
                leader.run(
                    lambda now: scheduler.chunk_timed_out(
                        node, job_id, chunk, attempt, kind, elapsed, now
                    ),
                    dispatch=False,
                )
            case ChunkFinished(job_id=job_id, chunk=chunk, attempt=attempt):
                if leader.attempt_of(node, job_id, chunk, attempt) is not None:
                    leader.joblogs.chunk_finished(message, node, leader.now())
                leader.run(lambda now: scheduler.chunk_finished(node, message, now))
            case AgentLog(lines=lines):
                leader.nodelogs.append(node, lines)
            case AgentHello():
                log.warning("node %s said hello twice; ignored", node)
        if message.seq > 0:
            self.send(Ack(seq=message.seq))


async def agent_endpoint(websocket: WebSocket) -> None:
    """Serve one agent connection from hello to close."""
    leader: Leader = websocket.app.state.leader
    await websocket.accept()
    try:
        data = await asyncio.wait_for(receive_data(websocket), HELLO_TIMEOUT)
    except TimeoutError:
        await refuse(websocket, f"no hello within {HELLO_TIMEOUT:.0f} s", CLOSE_PROTOCOL)
        return
    if data is None:
        return
    principal = leader.tokens.lookup(bearer_token(websocket.headers, websocket.query_params))
    if principal is None:
        await refuse(websocket, "unauthorized: missing or unknown agent token", CLOSE_POLICY)
        return
    if principal.role not in AGENTS:
        await refuse(
            websocket, f"forbidden: role {principal.role} cannot run an agent", CLOSE_POLICY
        )
        return
    try:
        hello = decode_checked(agent_to_leader, data)
    except ProtocolError as exc:
        await refuse(websocket, f"bad hello: {exc}", CLOSE_PROTOCOL)
        return
    if not isinstance(hello, AgentHello):
        await refuse(websocket, "the first message must be hello", CLOSE_PROTOCOL)
        return
    if hello.protocol != PROTOCOL_VERSION:
        await refuse(
            websocket,
            f"protocol version {hello.protocol} is not supported; this leader speaks "
            f"{PROTOCOL_VERSION}",
            CLOSE_PROTOCOL,
        )
        return
    if not _NODE_NAME.match(hello.name) or hello.slots < 0:
        await refuse(
            websocket,
            f"bad node name {hello.name!r} or slots {hello.slots} (names: letters, digits, . _ -)",
            CLOSE_PROTOCOL,
        )
        return

    link = AgentLink(leader, websocket, hello.name)
    previous = leader.agents.get(hello.name)
    if previous is not None and isinstance(previous, AgentLink):
        log.warning("node %s connected again; closing its previous link", hello.name)
        previous.out.close()
        asyncio.get_running_loop().create_task(
            close_websocket(previous.websocket, CLOSE_REPLACED, "replaced by a new connection")
        )
    leader.agents[hello.name] = link
    config = leader.config

    def connect(now: float) -> Changes:
        changes, stale = leader.scheduler.node_connected(hello, now)
        # Welcome goes out first; the assignments this connection makes possible follow it.
        link.send(welcome(leader, hello.name, stale))
        return changes

    try:
        leader.run(connect)
    except Exception as exc:
        log.exception("node %s could not register", hello.name)
        await refuse(websocket, f"leader error: {exc}", 1011)
        _forget(leader, link)
        return
    if hello.seq > 0:
        link.send(Ack(seq=hello.seq))
    log.info(
        "node %s connected (%d slots, agent %s, heartbeat %.1fs)",
        hello.name,
        hello.slots,
        hello.version or "?",
        config.heartbeat_interval,
    )
    try:
        await serve(link)
    finally:
        _forget(leader, link)
        await link.out.drain()
        log.info("node %s disconnected", hello.name)


async def serve(link: AgentLink) -> None:
    while not link.out.closed:
        data = await receive_data(link.websocket)
        if data is None:
            return
        try:
            message = decode_checked(agent_to_leader, data)
        except ProtocolError as exc:
            link.ignored += 1
            log.warning("node %s: ignored a message: %s", link.name, str(exc)[:300])
            continue
        try:
            link.handle(message)
        except Exception:
            link.ignored += 1
            log.exception("node %s: %s failed", link.name, type(message).__name__)


def welcome(leader: Leader, name: str, stale: list[ChunkRef]) -> Welcome:
    return Welcome(
        node=name,
        heartbeat_interval=leader.config.heartbeat_interval,
        sync_root=str(leader.root),
        root_id=leader.root_id,
        lease=leader.config.node_timeout,
        stale=stale,
    )


def _forget(leader: Leader, link: AgentLink) -> None:
    """Drop a closed link; unless a newer link replaced it, the node gets no new work."""
    if leader.agents.get(link.name) is link:
        del leader.agents[link.name]
        name = link.name
        try:
            leader.run(lambda now: leader.scheduler.node_disconnected(name, now))
        except Exception:
            log.exception("node %s: could not record the disconnect", name)


async def refuse(websocket: WebSocket, error: str, code: int) -> None:
    log.warning("agent refused: %s", error)
    with contextlib.suppress(Exception):  # the peer may be gone already
        await websocket.send_text(encode(Refused(error=error)).decode())
    await close_websocket(websocket, code, error)
