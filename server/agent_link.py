"""``/ws/agent``: one render node's link to the leader.

The agent says hello (protocol version, token, slots, chunks it still runs);
the leader answers ``Welcome`` or ``Refused``. Who may be which node is
``server.rights``: a per-node agent token only its own name, the shared
``agent.token`` (and admins) any name no other agent holds. A refused hello
never costs the agent that holds the name its link. Every later frame (one
message, or a batch of them: ``protocol.encode_batch``) is decoded whole with
``decode_batch``; a bad frame (malformed, or with a second hello) is logged
in one line and ignored whole: it changes nothing. A frame longer than a
batch closes the link unread (no agent sends one). Each message is handed to
the leader's group commit (``Leader.submit``) and acknowledged with ``Ack``
only after what it caused is committed (a heartbeat, which stores nothing,
is applied at once and answered with ``LeaseRenewed``). A frame's messages go into the
group commit in order (with other agents' frames that came at the same
moment), and the link reads at most ``FRAMES_AHEAD`` frames ahead of their
commits, so an agent sending faster than the leader commits is held back
by its socket.
A closed link does not make the node lost: the scheduler's tick does that
after ``node_timeout``, so an agent may reconnect within its lease and carry
on.

A standby (``Leader.refusal``) answers every hello with ``Refused`` (retry:
the agent tries its next leader URL at once), naming the active leader. The
active leader grants leases (``Welcome``, ``LeaseRenewed``) only while its
own lease is held (``Leader.leases_allowed``), and a leader that steps down
closes every link.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections import deque

from starlette.websockets import WebSocket

from farmtui.protocol import (
    LOOK_OVER_BYTES,
    MAX_BATCH_FRAME_BYTES,
    MAX_BATCH_MESSAGES,
    MAX_MESSAGE_BYTES,
    PROTOCOL_VERSION,
    Ack,
    AgentHello,
    AgentToLeader,
    ChunkRef,
    Heartbeat,
    LeaderToAgentMessage,
    OsName,
    ProtocolError,
    Refused,
    Welcome,
    agent_to_leader,
    agent_to_leader_batch,
    decode_batch,
    decode_checked,
    encode,
    over_long_list,
)
from server.agent_reports import AgentReports, Step
from server.auth import bearer_token, hash_token
from server.errors import NoRoom, StoreError, Unauthorized
from server.leader import Leader
from server.links import SendQueue, close_websocket, receive_data
from server.model import Changes
from server.path_mapping import map_path, node_os
from server.repeated_warnings import RepeatedWarnings
from server.rights import NODE_NAME, could, node_refusal, refusal
from server.scheduler import NodeHeld
from server.turns import COSTLY, Account, turns

log = logging.getLogger("farmtui.leader.agents")

HELLO_TIMEOUT = 10.0
# Frames of one agent read while earlier ones wait for their commits (see ``serve``).
FRAMES_AHEAD = 16
BYTES_AHEAD = MAX_MESSAGE_BYTES
# Reports of one agent waiting for their commits: a batch's worth. Sixteen batches of a
# thousand from each of thirty links put half a million steps in the group commit, and
# every operator's action (``Leader.run``) applies what waits there before its own.
REPORTS_AHEAD = MAX_BATCH_MESSAGES
# An agent this far behind on reading is dead or stuck.
SEND_QUEUE_LIMIT = 10_000

# Close codes: 1008 policy violation (token), 1002 protocol error, 1009 a frame too big,
# 4000 replaced.
CLOSE_POLICY = 1008
CLOSE_PROTOCOL = 1002
CLOSE_TOO_BIG = 1009
CLOSE_REPLACED = 4000
# The node was declared lost while this link stayed open: say hello again.
CLOSE_LOST = 4001
# A standby's refusal: try again later (or at another leader).
CLOSE_STANDBY = 1013
# A link whose reports were refused for lack of room: how often it looks for room again,
# and how it is closed then (the agent reconnects and sends them again, in order).
ROOM_LOOK_EVERY = 1.0
CLOSE_ROOM = 1013


class AgentLink:
    """One connected agent: routes its messages and carries the leader's to it."""

    # The hash of the token it connected with (``Leader.revoked``).
    token_hash = ""

    def __init__(
        self,
        leader: Leader,
        websocket: WebSocket,
        name: str,
        *,
        batches: bool = False,
        held: bool = False,
        reads: Account | None = None,
    ) -> None:
        self.leader = leader
        self.websocket = websocket
        self.name = name
        # ``reads``: its reads' use of the loop. Its writes (an Ack a frame, mostly) wait
        # in the costly line while its reads are costly (``server.turns``).
        self.out = SendQueue(
            websocket, f"agent {name}", SEND_QUEUE_LIMIT, batches=batches, held=held, reads=reads
        )
        self.reports = AgentReports(leader, name, self._committed)
        self.ignored = 0
        self.bad_frames = RepeatedWarnings(log, f"node {name}")
        self.closing: asyncio.Task[None] | None = None
        # Set once a report was refused for lack of room (``_hold_back``).
        self.held_back: asyncio.Task[None] | None = None

    def send(self, message: LeaderToAgentMessage) -> None:
        self.out.send(message)

    def close(self, code: int, reason: str) -> None:
        """Stop sending and close the socket; ``serve`` then returns."""
        if self.closing is None:
            self.out.close()
            self.closing = asyncio.get_running_loop().create_task(
                close_websocket(self.websocket, code, reason)
            )

    def handle(self, message: AgentToLeader) -> asyncio.Future[None]:
        """Queue one message; acknowledge it once its effects are committed. The future
        is done once it is answered (committed, or failed: then not acknowledged).

        A heartbeat is answered with ``LeaseRenewed`` once it is processed: the
        agent's lease then runs from the moment it sent that heartbeat.
        """
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self._lost(message):
            future.cancel()
            return future
        step = self._take(message)
        if step.answered:
            future.set_result(None)
        else:
            step.frame = future
        return future

    def handle_frame(
        self, messages: list[AgentToLeader]
    ) -> tuple[asyncio.Future[None] | None, int]:
        """``handle`` for a frame's messages: the future of its last report still to be
        committed (done once that one is dealt with), if any, and how many of them are.

        One future a frame, not a message: each report is answered as its group lands
        (``agent_reports.Step``), so its Ack joins the assignments of that group in one
        frame.
        """
        last: Step | None = None
        reports = 0
        for message in messages:
            if self._lost(message):
                continue
            try:
                step = self._take(message)
            except Exception:
                self.ignored += 1
                log.exception("node %s: %s failed", self.name, type(message).__name__)
                continue
            if not step.answered:  # a heartbeat is applied at once: not one to wait for
                last = step
                reports += 1
        if last is None:
            return None, 0
        last.frame = asyncio.get_running_loop().create_future()
        return last.frame, reports

    def _lost(self, message: AgentToLeader) -> bool:
        """A heartbeat of a node lost meanwhile: it is not applied, and the link closes."""
        if isinstance(message, Heartbeat) and not self._node_online():
            # Frozen past node_timeout with its link open: its chunks have moved. A
            # renewed lease would let its trees run on beside their new attempts; its
            # hello settles them. Closed, the agent reconnects and says hello.
            if self.closing is None:
                log.warning("node %s was lost; closing its link to hear its hello", self.name)
                self.close(CLOSE_LOST, "this node was declared lost: say hello again")
            return True
        return False

    def _take(self, message: AgentToLeader) -> Step:
        """The message queued (or refused), as the step that is answered once committed."""
        if self.held_back is not None and message.seq > 0 and not isinstance(message, Heartbeat):
            # An earlier report was refused: this one comes again after it, in order.
            return self.reports.refuse(message, NoRoom("an earlier report waits for room"))
        return self.reports.queue(message)

    def heard(self) -> None:
        """A frame of its agent's arrived (``Scheduler.node_heard``), on its current link."""
        if self.leader.agents.get(self.name) is self:
            self.leader.scheduler.node_heard(self.name, self.leader.now())

    def _node_online(self) -> bool:
        node = self.leader.scheduler.nodes.get(self.name)
        return node is not None and node.online

    def _committed(self, message: AgentToLeader, exc: BaseException | None) -> None:
        """``message`` is committed (``exc`` None), or failed: acknowledge it, or not."""
        if isinstance(exc, NoRoom):
            if message.seq > 0:  # kept in the agent's outbox: it comes again
                self._hold_back()
            return
        if isinstance(exc, StoreError):
            # Not committed, so not acknowledged: close the link, and the agent
            # sends it again from its outbox when it reconnects.
            log.error(
                "node %s: %s not saved (%s); closing its link",
                self.name,
                type(message).__name__,
                exc,
            )
            self.close(1011, "a report could not be saved")
            return
        if exc is not None:
            self.ignored += 1
            log.error(
                "node %s: %s failed",
                self.name,
                type(message).__name__,
                exc_info=(type(exc), exc, exc.__traceback__),
            )
            return
        if self.out.closed:
            return  # after a failed commit nothing later is acknowledged either
        if (
            isinstance(message, Heartbeat)
            and message.beat > 0
            and self.leader.leases_allowed()
            and self._node_online()
        ):
            # Never past our own lease, nor to a node lost meanwhile: checked now, as it
            # is sent, not at the commit.
            self.out.renew(message.beat)  # cumulative: one a frame for all of them
        if message.seq > 0 and self.held_back is None:
            self.out.ack(message.seq)  # cumulative: one Ack a frame for all of them

    def _hold_back(self) -> None:
        """A report was refused for lack of room: keep the link, acknowledge nothing more.

        The agent keeps every report not acknowledged in its outbox. Its heartbeats
        are still answered, so its renders go on; once the leader has room again the
        link is closed, and the agent says hello and sends its reports again, in order.
        (Closed at once, as after a failed commit, the agent could not say hello while
        the disk was short, and its renders died with its lease.)
        """
        if self.held_back is None and not self.out.closed:
            log.warning("node %s: reports held back until the leader's disk has room", self.name)
            self.held_back = asyncio.get_running_loop().create_task(self._until_room())

    async def _until_room(self) -> None:
        # Looked for: room comes from outside (a file deleted, a checkpoint), no event says so.
        while self.leader.room_refusal() is not None and not self.out.closed:  # noqa: ASYNC110
            await asyncio.sleep(ROOM_LOOK_EVERY)
        if self.out.closed:
            return  # gone meanwhile: its next link's hello brings its reports
        log.info("node %s: room again; asking for its held reports", self.name)
        self.close(CLOSE_ROOM, "the leader has room again: send your reports again")


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
    standby = leader.refusal()
    if standby is not None:
        # Quietly: agents try every leader in turn, a standby hears from each often.
        log.debug("agent refused: %s", standby)
        await refuse(websocket, standby, CLOSE_STANDBY, retry=True, quiet=True)
        return
    bearer = bearer_token(websocket.headers, websocket.query_params)
    principal = leader.tokens.lookup(bearer)
    if principal is None:
        await refuse(
            websocket, "unauthorized: missing, unknown or revoked agent token", CLOSE_POLICY
        )
        return
    if not could(principal, "agent_link"):
        why = refusal(principal, "agent_link") or "forbidden"
        await refuse(websocket, f"forbidden: {why}", CLOSE_POLICY)
        return
    # Its reads' use of the loop from the hello on (``server.turns``). A hello may be up
    # to a megabyte (a thousand GPUs): a large one waits among the costly frames, so
    # links that reconnect with one again and again get at most half of the loop. A
    # small one (every node's, coming back) goes at once: until it is read its node is
    # not heard, and a wait behind flooding links would count against its node_timeout.
    account = Account()
    large = len(data) > LOOK_OVER_BYTES
    turn = turns(leader.running_loop())
    if large:
        account.lately = COSTLY
        if turn.full():
            await turn.share(account)
    began = time.thread_time()
    try:
        problem = over_long_list(data, AgentHello) if large else None
        if problem is not None:
            raise ProtocolError(f"malformed message: {problem}")
        hello = decode_checked(agent_to_leader, data)
    except ProtocolError as exc:
        turn.charge(account, time.thread_time() - began)
        await refuse(websocket, f"bad hello: {exc}", CLOSE_PROTOCOL)
        return
    turn.charge(account, time.thread_time() - began)
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
    if not NODE_NAME.fullmatch(hello.name) or hello.slots < 0:
        await refuse(
            websocket,
            f"bad node name {hello.name!r} or slots {hello.slots} (names: letters, digits, . _ -)",
            CLOSE_PROTOCOL,
        )
        return
    wrong_node = node_refusal(principal, hello.name)
    if wrong_node is not None:
        await refuse(websocket, f"forbidden: {wrong_node}", CLOSE_POLICY)
        return

    config = leader.config
    stale: list[ChunkRef] = []
    # Its messages wait until Welcome is written first (``SendQueue.open``).
    link = AgentLink(leader, websocket, hello.name, batches=hello.batches, held=True, reads=account)
    link.token_hash = hash_token(bearer or "")  # closed if that token is revoked

    def connect(now: float) -> Changes:
        if leader.tokens.lookup(bearer) is None:
            # Revoked while its hello waited (``Leader.revoked`` closes only links
            # registered): asked again as it registers, nothing changed yet.
            raise Unauthorized("unauthorized: its token was revoked")
        changes, unwanted = leader.scheduler.node_connected(hello, now)
        stale.extend(unwanted)
        # In place before this group's dispatch can give the node work: what it is
        # given waits in the held queue, behind the Welcome still to come.
        _register(leader, link)
        return changes

    try:
        # Through the group commit: a burst of hellos (a farm's agents after a leader
        # restart) is registered a few at a time, each group in one commit, not in one
        # long turn of the loop. Committed before Welcome: a refused hello (the name is
        # held by another agent, the disk is full) costs the holder nothing. Heard
        # meanwhile: the tick must not declare the node lost while its hello waits.
        # Ahead of the reports waiting: after a restart those are the farm's resent
        # outboxes, and behind them a hello waited 12 s, its agent's lease lapsing
        # and its renders killed. Reports of the node's previous link still waiting
        # are applied after it: this hello keeps the attempts it lists as running or
        # finished, and those reports then settle them as they would have.
        with leader.hello_waiting(hello.name, hello.agent_id):
            # Even with the disk short (small, and a node must be able to come back and
            # keep its lease; its reports then wait: ``AgentLink._hold_back``).
            await leader.submit(connect, ahead=True, needs_room=False)
    except Exception as exc:
        if leader.agents.get(hello.name) is link:
            del leader.agents[hello.name]  # the store was rolled back: it never connected
        link.out.close()  # held: nothing queued for it is written
        await _refuse_hello(websocket, hello.name, exc, config.node_timeout)
        return
    # Welcome, then the assignments this connection made possible.
    link.out.open(welcome(leader, hello.name, stale, node_os(hello.os)))
    if hello.seq > 0:
        link.send(Ack(seq=hello.seq))
    # Heard until its Welcome is written: the agent says nothing (no heartbeat, none
    # of its outbox's reports) before it reads it, so the wait is the leader's, not the
    # node's silence. On a loaded leader a Welcome waited 3.6 s, the tick declared
    # the node lost, and the chunks its hello listed as finished were rendered again.
    with leader.hello_waiting(hello.name, hello.agent_id):
        await link.out.first_written()
    log.info(
        "node %s connected (%d slots, agent %s, heartbeat %.1fs)",
        hello.name,
        hello.slots,
        hello.version or "?",
        config.heartbeat_interval,
    )
    try:
        await serve(link, account)
    finally:
        _forget(leader, link)
        await link.out.drain()
        link.bad_frames.flush()
        log.info("node %s disconnected", hello.name)


async def serve(link: AgentLink, account: Account) -> None:
    """Read the agent's frames until the link closes, a few frames ahead of their commits.

    At most ``FRAMES_AHEAD`` frames (``BYTES_AHEAD`` bytes of them, and
    ``REPORTS_AHEAD`` reports) wait for their commits: an agent that sends
    faster than the leader commits waits in its socket (and its kernel
    buffers), not in the leader's memory and event loop. More than one:
    reading a frame only once the one before was committed made a busy leader
    take one commit turn per frame, so an agent streaming its renders' output
    got its heartbeats answered many turns late, and a healthy node lost its
    lease and killed its renders.
    """
    ahead: deque[tuple[asyncio.Future[None], int, int]] = deque()
    bytes_ahead = reports_ahead = 0
    turn = turns(link.leader.running_loop())
    # ``account``: its reads' own, from its hello on. Not its writes': its cheap writes
    # (an Ack a group commit) would pass its costly reads off as cheap. (Its writes
    # do wait in the costly line while its reads are costly: ``AgentLink``.)
    while not link.out.closed:
        while ahead and (
            ahead[0][0].done()
            or len(ahead) >= FRAMES_AHEAD
            or bytes_ahead >= BYTES_AHEAD
            or reports_ahead >= REPORTS_AHEAD
        ):
            # Done or failed, it has been dealt with (``_committed``); only wait. Not
            # through asyncio.wait when it is done already: that still took the task off
            # the loop for a turn, once a frame.
            committed, size, reports = ahead.popleft()
            if not committed.done():
                await asyncio.wait([committed])
            bytes_ahead -= size
            reports_ahead -= reports
        data = await receive_data(link.websocket)
        if data is None:
            return
        if len(data) > MAX_BATCH_FRAME_BYTES:
            # An agent's messages each fit in a batch (``agent.report_size``): a longer frame
            # is not one, and is closed on unread. Decoding one of 3.8 MB of short lines held
            # the loop 40 ms to a second, and ignoring them only let the link send more:
            # thirty links of them had a healthy node's lease lapse either way.
            why = f"a frame of {len(data):,} bytes is over {MAX_BATCH_FRAME_BYTES:,}"
            log.warning("node %s: %s; closing its link", link.name, why)
            link.close(CLOSE_TOO_BIG, why)
            return
        # Its agent is alive now, however long the frame waits for its turn: a busy
        # leader's wait must not count as the node's silence.
        link.heard()
        if len(data) > LOOK_OVER_BYTES:
            # Costly, whatever the link's last frames cost: a flooding link that had just
            # reconnected (lost, closed, back) had its first frames of 80 kB take the
            # cheap line, ahead of healthy nodes'; a steady stream of such links kept
            # them waiting up to 0.8 s a frame.
            account.lately = max(account.lately, COSTLY)
        if turn.full():
            await turn.share(account)
        began = time.thread_time()
        try:
            last, reports = _handle_frame(link, data)
        finally:
            turn.charge(account, time.thread_time() - began)
        if last is not None:
            ahead.append((last, len(data), reports))
            bytes_ahead += len(data)
            reports_ahead += reports


def _handle_frame(link: AgentLink, data: str | bytes) -> tuple[asyncio.Future[None] | None, int]:
    """Decode and apply one frame: its last report still to be committed, if any, and
    how many of them are."""
    try:
        messages = decode_batch(agent_to_leader, agent_to_leader_batch, data)
        if any(isinstance(message, AgentHello) for message in messages):
            raise ProtocolError("hello is only valid as the first message")
    except ProtocolError as exc:
        link.ignored += 1
        link.bad_frames.warn(f"ignored a message: {str(exc)[:300]}")
        return None, 0
    return link.handle_frame(messages)


def welcome(leader: Leader, name: str, stale: list[ChunkRef], os_name: OsName) -> Welcome:
    """``sync_root`` as a node of ``os_name`` mounts it (the ``[[path_map]]`` rules)."""
    return Welcome(
        node=name,
        heartbeat_interval=leader.config.heartbeat_interval,
        sync_root=map_path(str(leader.root), leader.config.path_map, os_name),
        root_id=leader.root_id,
        lease=leader.config.agent_lease,
        stale=stale,
        batches=True,
        kept_pages=True,
    )


async def _refuse_hello(websocket: WebSocket, name: str, exc: Exception, lost_after: float) -> None:
    if isinstance(exc, NodeHeld):
        # The log names the holder's agent id; the answer must not: whoever
        # presents that id in a hello takes the name over.
        log.warning("node %s not registered: %s", name, exc)
        await refuse(
            websocket,
            f"node name {name} is held by another agent until it is lost "
            f"({lost_after:g} s of silence); is another machine using the same name?",
            1011,
            retry=True,
        )
    elif isinstance(exc, StoreError):
        log.warning("node %s not registered: %s", name, exc)
        await refuse(websocket, str(exc), 1011, retry=True)
    elif isinstance(exc, Unauthorized):
        log.warning("node %s not registered: %s", name, exc)
        await refuse(websocket, str(exc), CLOSE_POLICY)
    else:
        log.error("node %s could not register", name, exc_info=exc)
        await refuse(websocket, f"leader error: {type(exc).__name__}", 1011, retry=True)


def _register(leader: Leader, link: AgentLink) -> None:
    """Make ``link`` the node's link, closing the one it replaces."""
    previous = leader.agents.get(link.name)
    if previous is not None and isinstance(previous, AgentLink):
        log.warning("node %s connected again; closing its previous link", link.name)
        previous.out.close()
        asyncio.get_running_loop().create_task(
            close_websocket(previous.websocket, CLOSE_REPLACED, "replaced by a new connection")
        )
    leader.agents[link.name] = link


def _forget(leader: Leader, link: AgentLink) -> None:
    """Drop a closed link; unless a newer link replaced it, the node gets no new work.

    Through the group commit, ahead of what waits there, so no group dispatches
    to the node after its link closed; not at once (``run``), which first
    applied the whole backlog in one turn of the loop (170-240 ms stalls while
    a restarted leader's agents reconnected). The link's own reports still
    waiting are applied after it, the chunks they end credited as ever. A
    hello of the node's next link goes ahead too, behind this.
    """
    if leader.agents.get(link.name) is link:
        del leader.agents[link.name]
        name = link.name
        # Even with the disk short: no dispatch may go to a node whose link is gone.
        done = leader.submit(
            lambda now: leader.scheduler.node_disconnected(name, now),
            dispatch=False,
            ahead=True,
            needs_room=False,
        )
        done.add_done_callback(functools.partial(_disconnect_recorded, name))


def _disconnect_recorded(name: str, done: asyncio.Future[None]) -> None:
    if done.cancelled():
        return
    exc = done.exception()
    if exc is not None and not isinstance(exc, StoreError):  # commit() logged a StoreError
        log.error("node %s: could not record the disconnect", name, exc_info=exc)


async def refuse(
    websocket: WebSocket, error: str, code: int, *, retry: bool = False, quiet: bool = False
) -> None:
    if not quiet:
        log.warning("agent refused: %s", error)
    with contextlib.suppress(Exception):  # the peer may be gone already
        await websocket.send_text(encode(Refused(error=error, retry=retry)).decode())
    await close_websocket(websocket, code, error)
