"""The agent's WebSocket link to the leader: hello, heartbeats, outbox, lease.

The link connects to ``ws(s)://host:port/ws/agent`` with the agent token,
says ``AgentHello`` and waits for ``Welcome``. It then resends whatever the
outbox still holds, streams new messages in the order the supervisor made
them, and hands the leader's commands to the supervisor. A lost connection
is retried forever with exponential backoff and jitter; a refused token
(HTTP 401/403 or ``Refused``) stops the agent with a one-line error.

Several leaders (``--leader URL1,URL2``: leaders on one PostgreSQL, one of
them active): each connect tries the next URL in turn, at once, for a standby
refuses with ``Refused(retry=True)``, a dead leader with a closed port; the
backoff applies only once a whole round found no active leader. A link that
was up and broke goes on with the next URL first, so the leader that just
died is tried last.

The lease: every heartbeat is numbered, and the leader answers those it has
processed with ``LeaseRenewed`` (for the latest of them, when several wait to
be written: the renewal is cumulative). The agent's lease then lasts
``Welcome.lease`` seconds from the moment it *sent* that heartbeat (or the
hello, for the Welcome), never from when the answer arrived, so it always
ends before the leader's ``node_timeout`` (counted from when the leader heard
that heartbeat or a later message) can run out. Every chunk's supervisor
holds the lease's deadline and kills its tree when it passes: a frozen or
cut-off agent loses its chunks before the leader may move them elsewhere.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import ssl
import sys
import time
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psutil
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from agent.agent_log import LogStream
from agent.copy_records import CopyRecords
from agent.errors import LeaderBusy, LeaderRefused
from agent.outbox import Outbox, is_reliable
from agent.report_size import fit
from agent.staging import CopyToSyncRoot, UploadToLeader, sync_root_visible
from agent.supervisor import Storage, Supervisor
from farmtui.protocol import (
    MAX_BATCH_BYTES,
    MAX_BATCH_MESSAGES,
    MAX_MESSAGE_BYTES,
    Ack,
    AgentHello,
    AgentLog,
    AgentToLeader,
    AssignChunk,
    ChunkFinished,
    ChunkRef,
    DiscardStaged,
    GpuInfo,
    Heartbeat,
    KeptStaged,
    KillChunk,
    LeaderToAgent,
    LeaseRenewed,
    ProtocolError,
    Refused,
    UpdateTimeouts,
    Welcome,
    decode_batch,
    decode_checked,
    encode,
    encode_batch,
    leader_to_agent,
    leader_to_agent_batch,
    platform_os,
)
from farmtui.protocol.records import MAX_KEPT_LISTED
from farmtui.renderers import TOKENS

log = logging.getLogger("farmtui.agent.link")

# Test only: the OS this agent names in its hello instead of its own, so a test
# on one machine can see what the leader's path mapping sends a node of another
# ("windows", "darwin", "linux"). Never set it on a real node.
CLAIM_OS_VARIABLE = "FARMTUI_TEST_CLAIM_OS"


def agent_os() -> str:
    """The OS this agent tells the leader (``AgentHello.os``)."""
    return os.environ.get(CLAIM_OS_VARIABLE) or platform_os(sys.platform)


BACKOFF_MIN = 0.2
BACKOFF_MAX = 5.0
LOG_FLUSH_SECONDS = 1.0
# How long closing a link may wait for the leader's close frame (a frozen leader sends none).
CLOSE_TIMEOUT = 1.0
# Best-effort messages kept while the leader is away; older ones are dropped.
BEST_EFFORT_LIMIT = 10_000


def websocket_url(leader: str) -> str:
    """``http://host:7878`` -> ``ws://host:7878/ws/agent`` (https -> wss)."""
    parts = urlsplit(leader if "://" in leader else f"http://{leader}")
    scheme = {"http": "ws", "https": "wss", "ws": "ws", "wss": "wss"}.get(parts.scheme)
    if scheme is None or not parts.netloc:
        raise ValueError(
            f"leader URL {leader!r} must look like http://host:port or https://host:port"
        )
    return urlunsplit((scheme, parts.netloc, parts.path.rstrip("/") + "/ws/agent", "", ""))


def http_url(leader: str) -> str:
    parts = urlsplit(leader if "://" in leader else f"http://{leader}")
    scheme = {"ws": "http", "wss": "https"}.get(parts.scheme, parts.scheme)
    return urlunsplit((scheme, parts.netloc, parts.path.rstrip("/"), "", ""))


class LeaderLink:
    """Owns the connection to the leader and everything the agent sends on it."""

    def __init__(
        self,
        *,
        leader: str | Sequence[str],
        token: str,
        name: str,
        slots: int,
        tags: list[str],
        outbox: Outbox,
        log_stream: LogStream | None = None,
        version: str = "",
        ssl_context: ssl.SSLContext | None = None,
        clock: Callable[[], float] = time.monotonic,
        gpus: list[GpuInfo] | None = None,
        gpu_only: bool = False,
        prefetch: int = 0,
    ) -> None:
        given = [leader] if isinstance(leader, str) else list(leader)
        if not given:
            raise ValueError("no leader URL")
        # Every leader's URL; ``leader`` and ``url`` are the one in use (or tried) now.
        self.leaders = [http_url(url) for url in given]
        self._sockets = [websocket_url(url) for url in given]
        self.leader = self.leaders[0]
        self.url = self._sockets[0]
        self.token = token
        self.name = name
        self.slots = slots
        self.tags = tags
        self.gpus = gpus or []
        self.gpu_only = gpu_only
        self.prefetch = prefetch
        self.outbox = outbox
        self.log_stream = log_stream
        self.version = version
        self.ssl_context = ssl_context
        self.clock = clock
        self.supervisor: Supervisor | None = None
        self.welcome: Welcome | None = None
        self.last_contact = clock()
        # The link the watchdog is closing (a silent leader's), and close tasks in flight.
        self._closing: object | None = None
        self._background: set[asyncio.Task[None]] = set()
        # The lease's end on the monotonic clock (shared by every process here).
        self.lease_until = 0.0
        # The lease whose end was logged (``_watch``): once a lapse.
        self._lapse_told = -1.0
        self._beat = 0
        self._beat_sent: dict[int, float] = {}
        self._queue: deque[AgentToLeader] = deque()
        self._best_effort = 0
        self._wakeup = asyncio.Event()
        self._ws: ClientConnection | None = None
        self._sent_seq = 0
        self._welcomed = False
        # The node's kept outputs its last hello could not list (``KeptStaged``).
        self._kept_rest: list[ChunkRef] = []
        # Set at each Ack: what ``reported`` waits on.
        self._acked = asyncio.Event()
        # The agent is going (``say_stopping``): said again after each hello.
        self.stopping = False

    # ------------------------------------------------------------------ sending

    def send(self, message: AgentToLeader) -> None:
        """Queue a message; reliable ones are numbered and persisted in the outbox first.

        A message too big for a batch goes as several, or shortened (``fit``): the
        leader would refuse it unread.
        """
        for part in fit(message):
            if is_reliable(part):
                self.outbox.add(part)
            else:
                self._best_effort += 1
                if self._best_effort > BEST_EFFORT_LIMIT:
                    self._drop_oldest_best_effort()
            self._queue.append(part)
        self._wakeup.set()

    def _drop_oldest_best_effort(self) -> None:
        for index, queued in enumerate(self._queue):
            if not is_reliable(queued):
                del self._queue[index]
                self._best_effort -= 1
                return

    async def _resend_outbox(self, ws: ClientConnection, below: int | None = None) -> None:
        await self.outbox.synced()
        frame = _Frame(ws, self._batches())
        for message in self.outbox.pending():
            if message.seq <= self._sent_seq:
                continue
            if below is not None and message.seq >= below:
                break
            await frame.add(message)
            self._sent_seq = message.seq
        await frame.flush()

    async def _sender(self, ws: ClientConnection) -> None:
        while True:
            # What is queued now goes out together (one frame when the leader reads batches).
            frame = _Frame(ws, self._batches())
            while self._queue:
                message = self._queue[0]
                if is_reliable(message):
                    # Anything the queue lost (or never had: a restart) goes first, in order.
                    if message.seq > self._sent_seq + 1:
                        await frame.flush()
                        await self._resend_outbox(ws, below=message.seq)
                    if message.seq > max(self._sent_seq, self.outbox.acked):
                        if message.seq > self.outbox.synced_seq:
                            # On disk before the leader may see it (the outbox's promise).
                            await self.outbox.synced()
                        await frame.add(message)
                        self._sent_seq = message.seq
                else:
                    await frame.add(message)
                    self._best_effort -= 1
                self._queue.popleft()
            await frame.flush()
            self._wakeup.clear()
            if not self._queue:  # (what came while the frame went out is not left waiting)
                await self._wakeup.wait()

    # ------------------------------------------------------------------ stopping

    def say_stopping(self) -> None:
        """Tell the leader this agent is going (nothing more is dispatched to it), now and
        after any reconnection (a hello makes the node a taker again)."""
        self.stopping = True
        if self._ws is not None:
            self.send(Heartbeat(stopping=True))

    async def reported(self) -> bool:
        """Wait, while connected, until the leader has acknowledged every report, those
        made while waiting too (chunks it sent meanwhile, refused); whether it has. What
        it has not, the outbox keeps for the next start."""
        while self.outbox.acked < self.outbox.last_seq and self._ws is not None:
            self._acked.clear()
            await self._acked.wait()
        return self.outbox.acked >= self.outbox.last_seq

    def _batches(self) -> bool:
        return self.welcome is not None and self.welcome.batches

    # ------------------------------------------------------------------ receiving

    def _handle(self, message: LeaderToAgent) -> None:
        supervisor = self.supervisor
        assert supervisor is not None
        match message:
            case AssignChunk():
                # Not at INFO: its start (or its wait for a slot) is the chunk's next line,
                # and each line was a few % of a short chunk's cost here (``agent_profile``).
                log.debug(
                    "assigned %s chunk %d attempt %d (frames %s)",
                    message.job_id,
                    message.chunk,
                    message.attempt,
                    ",".join(map(str, message.frames[:20])),
                )
                supervisor.assign(message)
            case KillChunk(job_id=job, chunk=chunk, attempt=attempt, reason=reason) if (
                message.waiting_only
            ):
                if supervisor.withdraw((job, chunk, attempt), reason or "taken back by the leader"):
                    log.info("chunk %s.%d.%d taken back before it started", job, chunk, attempt)
            case KillChunk(job_id=job, chunk=chunk, attempt=attempt, reason=reason):
                if not supervisor.kill((job, chunk, attempt), reason or "killed by the leader"):
                    log.info(
                        "kill for %s chunk %d attempt %d: not running here", job, chunk, attempt
                    )
            case UpdateTimeouts(job_id=job, chunk=chunk, attempt=attempt):
                supervisor.update_timeouts((job, chunk, attempt), message.timeouts)
            case DiscardStaged(job_id=job, chunk=chunk, attempt=attempt):
                supervisor.discard_staged(job, chunk, attempt)
            case LeaseRenewed(beat=beat):
                sent = self._beat_sent.get(beat)
                for older in [b for b in self._beat_sent if b <= beat]:
                    del self._beat_sent[older]
                if sent is not None:
                    self._extend_lease(sent)
            case Ack(seq=seq):
                self.outbox.ack(seq)
                self._acked.set()
            case Refused(error=error, retry=retry):
                raise (LeaderBusy if retry else LeaderRefused)(
                    f"the leader refused this agent: {error}"
                )
            case Welcome():
                log.warning("unexpected second Welcome ignored")

    async def _receiver(self, ws: ClientConnection) -> None:
        async for data in ws:
            self.last_contact = self.clock()
            try:
                messages = decode_batch(leader_to_agent, leader_to_agent_batch, data)
            except ProtocolError as exc:
                log.error("ignored a message from the leader: %s", exc)
                continue
            for message in messages:
                self._handle(message)

    # ------------------------------------------------------------------ periodic

    def _extend_lease(self, sent: float) -> None:
        """The leader processed what we sent at ``sent``: the lease lasts from then."""
        assert self.welcome is not None
        assert self.supervisor is not None
        until = sent + self.welcome.lease
        if until > self.lease_until:
            self.lease_until = until
            self.supervisor.renew_lease(until)

    async def _heartbeats(self, ws: ClientConnection, interval: float) -> None:
        psutil.cpu_percent(interval=None)  # the first reading is meaningless
        while True:
            self._beat += 1
            # Queued now, sent a moment later: the lease counts from the earlier time.
            self._beat_sent[self._beat] = self.clock()
            if len(self._beat_sent) > 64:  # answers that never came
                del self._beat_sent[min(self._beat_sent)]
            self.send(
                Heartbeat(
                    cpu_percent=psutil.cpu_percent(interval=None),
                    memory_percent=psutil.virtual_memory().percent,
                    beat=self._beat,
                )
            )
            # A pong proves the leader is there; a callback rather than wait_for,
            # whose 3.11 version can swallow a cancellation that races the pong.
            pong = asyncio.ensure_future(await ws.ping())
            pong.add_done_callback(self._pong)
            await asyncio.sleep(interval)

    def _pong(self, future: asyncio.Future[float]) -> None:
        if not future.cancelled() and future.exception() is None:
            self.last_contact = self.clock()

    async def _log_forwarder(self) -> None:
        while self.log_stream is not None:
            if lines := self.log_stream.drain():
                self.send(AgentLog(lines=lines))
            await asyncio.sleep(LOG_FLUSH_SECONDS)

    async def lease_watchdog(self, poll: float = 0.1) -> None:
        """Kill every chunk once the lease has run out; reconnect when the leader is silent.

        Each chunk's supervisor process enforces the same deadline by itself
        (it must: a frozen agent runs no watchdog); this is the second line.
        """
        while True:
            await asyncio.sleep(poll)
            supervisor = self.supervisor
            if self.welcome is None or supervisor is None:
                continue
            now = self.clock()
            if now > self.lease_until and supervisor.runs:
                killed, waiting = supervisor.lease_ran_out()
                if killed or waiting or self._lapse_told != self.lease_until:
                    # Once a lapse, and again for what it stops later. The renders' own
                    # supervisors stop them at the same moment, often first (nothing left
                    # to count). A finished render's copy is not killed: it waits.
                    self._lapse_told = self.lease_until
                    what = [f"killing {killed} chunk(s)"] if killed else []
                    if waiting:
                        what.append(f"{waiting} finished render(s) wait for it to deliver")
                    log.error(
                        "the lease ran out %.1f s ago (no answer from the leader): %s",
                        now - self.lease_until,
                        "; ".join(what) or "nothing is rendered nor delivered until it is back",
                    )
            silent = now - self.last_contact
            # A healthy leader speaks at least once a heartbeat (its LeaseRenewed).
            quiet_limit = max(0.5 * self.welcome.lease, 2.5 * self.welcome.heartbeat_interval)
            ws = self._ws
            if silent > quiet_limit and ws is not None and ws is not self._closing:
                log.warning("leader silent for %.1f s: reconnecting", silent)
                # Not awaited here: this loop must go on watching the lease while a
                # frozen leader fails to answer the close (CLOSE_TIMEOUT at most).
                self._closing = ws
                task = asyncio.get_running_loop().create_task(ws.close())
                self._background.add(task)
                task.add_done_callback(self._background.discard)

    # ------------------------------------------------------------------ connection

    def _hello(self) -> AgentHello:
        assert self.supervisor is not None
        running = self.supervisor.running()
        finished = [
            ChunkRef(job_id=m.job_id, chunk=m.chunk, attempt=m.attempt)
            for m in self.outbox.pending()
            if isinstance(m, ChunkFinished)
        ]
        # What the hello cannot list goes in pages after the Welcome, but what its
        # running and finished lists name: the leader settles those with them.
        kept = self.supervisor.kept_outputs()
        reported = {(ref.job_id, ref.chunk, ref.attempt) for ref in (*running, *finished)}
        self._kept_rest = [
            ref
            for ref in kept[MAX_KEPT_LISTED:]
            if (ref.job_id, ref.chunk, ref.attempt) not in reported
        ]
        return AgentHello(
            name=self.name,
            slots=self.slots,
            cpu_count=psutil.cpu_count() or 0,
            memory_total=psutil.virtual_memory().total,
            tags=self.tags,
            version=self.version,
            agent_id=self.supervisor.agent_id,
            batches=True,
            os=agent_os(),
            gpus=self.gpus,
            gpu_only=self.gpu_only,
            prefetch=self.prefetch,
            running=running,
            finished=finished,
            kept=kept[:MAX_KEPT_LISTED],
            tokens=sorted(TOKENS),
        )

    @staticmethod
    async def _sweep_copies(records: CopyRecords, root: Path) -> None:
        if removed := await asyncio.to_thread(records.sweep, root):
            log.info("removed %d copy(ies) a killed run of the agent left unfinished", removed)

    def _apply_welcome(self, welcome: Welcome) -> None:
        assert self.supervisor is not None
        self.welcome = welcome
        root = sync_root_visible(welcome.sync_root, welcome.root_id)
        if root is not None:
            records = self.supervisor.copy_records
            self.supervisor.storage = Storage(
                sync_root=root, delivery=CopyToSyncRoot(root, records)
            )
            log.info("welcomed as %s; writing to the shared sync root %s", welcome.node, root)
            # On a thread: the sync root may be a filer that hangs.
            task = asyncio.get_running_loop().create_task(self._sweep_copies(records, root))
            self._background.add(task)
            task.add_done_callback(self._background.discard)
        else:
            self.supervisor.storage = Storage(
                sync_root=None,
                delivery=UploadToLeader(self.leader, self.token, verify=self.ssl_context or True),
            )
            log.info("welcomed as %s; the sync root is not visible here: uploading", welcome.node)
        for ref in welcome.stale:
            self.supervisor.kill(
                (ref.job_id, ref.chunk, ref.attempt), "the leader no longer wants it"
            )
        # Renders that ended while the agent was down: delivered and reported now.
        self.supervisor.resume()
        if welcome.kept_pages and self._kept_rest:
            self.send(KeptStaged(kept=self._kept_rest))  # in pages (``report_size.fit``)
        self._kept_rest = []

    async def _session(self, ws: ClientConnection) -> None:
        hello_sent = self.clock()
        await ws.send(encode(self._hello()).decode())
        async with asyncio.timeout(30):
            first = decode_checked(leader_to_agent, await ws.recv())
        if isinstance(first, Refused):
            refused = LeaderBusy if first.retry else LeaderRefused
            raise refused(f"the leader refused this agent: {first.error}")
        if not isinstance(first, Welcome):
            raise ProtocolError(f"expected welcome, got {type(first).__name__}")
        self.last_contact = self.clock()
        self._apply_welcome(first)
        self._beat_sent.clear()
        self._extend_lease(hello_sent)
        self._ws = ws
        self._sent_seq = 0
        self._welcomed = True
        # Unacknowledged messages first, in order; the queue skips what this sent.
        await self._resend_outbox(ws)
        if self.stopping:  # a leader that restarted meanwhile heard a taker's hello
            self.send(Heartbeat(stopping=True))
        tasks = [
            asyncio.create_task(self._receiver(ws)),
            asyncio.create_task(self._sender(ws)),
            asyncio.create_task(self._heartbeats(ws, first.heartbeat_interval)),
        ]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()  # re-raise LeaderRefused, ConnectionClosed ...
        finally:
            self._ws = None
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    def _backoff_max(self) -> float:
        """The longest wait between tries: well inside the lease once it is known.

        A restarted leader waits node_timeout for each node to come back; an
        agent still backing off by then would find its finished chunks requeued.
        """
        if self.welcome is None:
            return BACKOFF_MAX
        return max(BACKOFF_MIN, min(BACKOFF_MAX, self.welcome.lease / 4))

    def _use(self, index: int) -> None:
        self.leader = self.leaders[index]
        self.url = self._sockets[index]

    async def run(self) -> None:
        """Stay connected forever; raises LeaderRefused when the leader says no."""
        backoff = BACKOFF_MIN
        count = len(self.leaders)
        index = 0
        failed = 0  # tries since a whole round (or a session) began
        # A handshake with a live leader takes milliseconds; with others to try, a
        # machine that is off must not hold the agent for long.
        open_timeout = 10 if count == 1 else 3
        background = [
            asyncio.create_task(self.lease_watchdog()),
            asyncio.create_task(self._log_forwarder()),
        ]
        try:
            while True:
                self._welcomed = False
                opened = False
                self._use(index)
                # Only pass ssl when given: ssl=None would turn TLS off for wss://.
                options: dict[str, Any] = {}
                if self.ssl_context is not None:
                    options["ssl"] = self.ssl_context
                try:
                    async with connect(
                        self.url,
                        additional_headers={"Authorization": f"Bearer {self.token}"},
                        open_timeout=open_timeout,
                        ping_interval=None,  # the heartbeat loop pings and tracks pongs itself
                        # A frozen leader never answers a close: leaving it must not take
                        # websockets' 10 s, while another leader may be moving our chunks.
                        close_timeout=CLOSE_TIMEOUT,
                        max_size=MAX_MESSAGE_BYTES,
                        # Compressing every small message cost the leader more CPU
                        # than a farm's network saves; batches already cut the frames.
                        compression=None,
                        proxy=None,
                        **options,
                    ) as ws:
                        opened = True
                        log.info("connected to %s", self.url)
                        await self._session(ws)
                except InvalidStatus as exc:
                    status = exc.response.status_code
                    if status in (401, 403):
                        raise LeaderRefused(
                            f"the leader refused the agent token (HTTP {status}) at {self.url}"
                        ) from None
                    log.warning("leader answered HTTP %d; retrying", status)
                except (
                    OSError,
                    ConnectionClosed,
                    InvalidHandshake,
                    TimeoutError,
                    ProtocolError,
                ) as exc:
                    # "lost" only for a link that was up (break round 33c: an agent that
                    # never reached its leader said "lost" at every try).
                    what = "link to %s lost: %s" if opened else "cannot reach the leader at %s: %s"
                    log.warning(what, self.url, exc or type(exc).__name__)
                except LeaderBusy as exc:
                    log.warning("%s; trying again", exc)
                if self._welcomed:
                    backoff = BACKOFF_MIN
                    failed = 0
                else:
                    failed += 1
                index = (index + 1) % count
                if count > 1 and (self._welcomed or failed < count):
                    continue  # the next leader, at once
                failed = 0
                delay = backoff * random.uniform(0.5, 1.0)
                backoff = min(backoff * 2, self._backoff_max())
                await asyncio.sleep(delay)
        finally:
            for task in background:
                task.cancel()
            await asyncio.gather(*background, return_exceptions=True)


class _Frame:
    """Messages for the leader gathered into one frame (a batch), or sent one by one."""

    def __init__(self, ws: ClientConnection, batches: bool) -> None:
        self.ws = ws
        self.batches = batches
        self.messages: list[bytes] = []
        self.size = 0

    async def add(self, message: AgentToLeader) -> None:
        data = encode(message)
        if not self.batches:
            await self.ws.send(data.decode())
            return
        full = len(self.messages) >= MAX_BATCH_MESSAGES
        if full or self.size + len(data) > MAX_BATCH_BYTES:
            await self.flush()
        self.messages.append(data)
        self.size += len(data) + 1

    async def flush(self) -> None:
        if self.messages:
            frame = encode_batch(self.messages)
            self.messages, self.size = [], 0
            await self.ws.send(frame.decode())
