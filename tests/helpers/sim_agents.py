"""Simulated render nodes: many agents as real WebSocket clients on one asyncio loop.

Each simulated agent speaks the real protocol of ``agent/link.py`` and
``farmtui/protocol/agent_messages.py``: ``AgentHello`` (name, slots, agent id), ``Welcome``,
numbered heartbeats at the leader's ``heartbeat_interval`` answered by
``LeaseRenewed``, seq-numbered reports answered by a cumulative ``Ack``. On
``AssignChunk`` it sends ``ChunkStarted`` then ``ChunkFinished(outcome="done")``
at once (or after ``render_seconds``), so the leader's cost per event is all
that limits the rate. As the real agent, it says it takes ``prefetch`` chunks
ahead of its slots (by default as many as the real agent's): one given while every
slot renders waits, and starts as a slot frees; a ``KillChunk`` with
``waiting_only`` takes back only a chunk that waits. Reports stay in a
per-agent outbox until acknowledged; a dropped link is reconnected and the
outbox sent again, as the real agent does.

A :class:`Swarm` of N agents × K slots shares one :class:`Tally` that checks
every assignment against every other: the same attempt on two agents, a chunk
held by two agents at once, a chunk assigned again after it was reported done
(all must stay 0), and counts what a node hears when the leader gives up on
it (a ``KillChunk`` saying "lost", ``Welcome.stale``, ``Refused``) and each
lapse of a lease (a real agent would have killed its renders then).

In a test (same loop as an in-process leader)::

    async with Swarm(leader.url, leader.agent_token, agents=3, slots=2) as swarm:
        await swarm.wait_completions(30, within=10)
    report = swarm.report()

From a benchmark, in a process of its own so the leader's CPU is measured alone::

    python -m tests.helpers.sim_agents --leader http://127.0.0.1:7878 \\
        --token-file data/agent.token --agents 300 --slots 4 --expect 100000 \\
        --cap 60 --out sim.json
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import random
import signal
import sys
import time
import uuid
from collections import Counter, deque
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import msgspec
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from agent.link import websocket_url
from farmtui.protocol import (
    MAX_BATCH_BYTES,
    MAX_BATCH_MESSAGES,
    MAX_MESSAGE_BYTES,
    Ack,
    AgentHello,
    AssignChunk,
    ChunkFinished,
    ChunkRef,
    ChunkStarted,
    DiscardStaged,
    GpuInfo,
    Heartbeat,
    KillChunk,
    LeaseRenewed,
    Refused,
    RunningRef,
    UpdateTimeouts,
    Welcome,
    decode_batch,
    encode,
    encode_batch,
    leader_to_agent,
    leader_to_agent_batch,
)
from farmtui.protocol.limits import default_prefetch

ChunkKey = tuple[str, int]
AttemptKey = tuple[str, int, int]

CONNECT_TIMEOUT = 30.0
CLOSE_TIMEOUT = 2.0
BACKOFF_MIN = 0.1
BACKOFF_MAX = 2.0
# Problems kept word for word in the report (the counts go on).
EXAMPLES = 20


class SimReport(msgspec.Struct, kw_only=True):
    """What a swarm saw, as one JSON document (times are ``time.time()``)."""

    agents: int
    slots: int
    started: float
    stopped: float
    # First AssignChunk anywhere, last acknowledged completion (None: none yet).
    first_assign: float | None = None
    last_completion: float | None = None
    assigned: int = 0
    # ChunkFinished(done) sent / acknowledged by the leader (committed there).
    finished_sent: int = 0
    completions: int = 0
    # Acknowledged completions per second, counted from first_assign.
    per_second: list[int] = []
    # Must be 0: the same attempt assigned to a second agent (or twice), a
    # chunk assigned while another agent holds it, a chunk assigned again after
    # it was reported done.
    attempt_on_two_agents: int = 0
    chunk_on_two_agents: int = 0
    rerendered: int = 0
    problems: list[str] = []
    # What the leader told nodes it had given up on them.
    kills: int = 0
    kill_reasons: dict[str, int] = {}
    told_lost: int = 0
    stale_in_welcome: int = 0
    refused: list[str] = []
    disconnects: int = 0
    reconnects: int = 0
    # Heartbeats and their LeaseRenewed: latency from send to renewal.
    heartbeats: int = 0
    renewals: int = 0
    renewal_p50: float | None = None
    renewal_p99: float | None = None
    renewal_max: float | None = None
    # A lease ran out before it was renewed (a real agent kills its renders).
    lease_lapses: int = 0
    # ChunkFinished sent -> its Ack (the leader's apply + commit, as a node sees it).
    ack_p50: float | None = None
    ack_p99: float | None = None
    ack_max: float | None = None
    heartbeat_interval: float | None = None
    lease: float | None = None
    # WebSocket frames and the messages in them, each way: how well each side batches.
    frames_in: int = 0
    messages_in: int = 0
    frames_out: int = 0
    messages_out: int = 0
    # Whether every expected completion arrived before the cap.
    finished: bool = False
    expect: int | None = None

    @property
    def rate(self) -> float | None:
        """Acknowledged completions per second, first assignment to last completion (or stop).

        None when there is no time to divide by (nothing assigned before the stop).
        """
        begin = self.first_assign if self.first_assign is not None else self.started
        end = self.last_completion if self.finished else self.stopped
        if end is None or end <= begin:
            return None
        return self.completions / (end - begin)

    @property
    def clean(self) -> bool:
        """No double assignment, no re-render, nobody told it was lost or refused."""
        return not (
            self.attempt_on_two_agents
            or self.chunk_on_two_agents
            or self.rerendered
            or self.told_lost
            or self.stale_in_welcome
            or self.refused
        )


def quantile(values: list[float], q: float) -> float | None:
    """Nearest-rank quantile (None for no values)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, int(q * len(ordered) + 0.999999) - 1))
    return ordered[rank]


@dataclass
class Tally:
    """Everything every agent of a swarm saw, checked across agents on each assignment."""

    first_assign: float | None = None
    last_completion: float | None = None
    assigned: int = 0
    finished_sent: int = 0
    completions: int = 0
    completion_times: list[float] = field(default_factory=list)
    ack_latencies: list[float] = field(default_factory=list)
    renewal_latencies: list[float] = field(default_factory=list)
    # (job, chunk) -> the agent holding it (assigned, not yet reported finished).
    holding: dict[ChunkKey, str] = field(default_factory=dict)
    # (job, chunk, attempt) -> the agent it was assigned to.
    attempts: dict[AttemptKey, str] = field(default_factory=dict)
    done_sent: set[ChunkKey] = field(default_factory=set)
    attempt_on_two_agents: int = 0
    chunk_on_two_agents: int = 0
    rerendered: int = 0
    problems: list[str] = field(default_factory=list)
    kill_reasons: Counter[str] = field(default_factory=Counter)
    told_lost: int = 0
    stale_in_welcome: int = 0
    refused: list[str] = field(default_factory=list)
    disconnects: int = 0
    reconnects: int = 0
    heartbeats: int = 0
    lease_lapses: int = 0
    heartbeat_interval: float | None = None
    lease: float | None = None
    frames_in: int = 0
    messages_in: int = 0
    frames_out: int = 0
    messages_out: int = 0
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def problem(self, text: str) -> None:
        if len(self.problems) < EXAMPLES:
            self.problems.append(text)

    def assigned_to(self, agent: str, message: AssignChunk) -> None:
        """Check one assignment against every agent's, then record it."""
        now = time.time()
        if self.first_assign is None:
            self.first_assign = now
        self.assigned += 1
        chunk: ChunkKey = (message.job_id, message.chunk)
        attempt: AttemptKey = (message.job_id, message.chunk, message.attempt)
        earlier = self.attempts.get(attempt)
        if earlier is not None:
            self.attempt_on_two_agents += 1
            self.problem(f"{attempt} assigned to {agent}, already assigned to {earlier}")
        holder = self.holding.get(chunk)
        if holder is not None:
            self.chunk_on_two_agents += 1
            self.problem(f"{chunk} assigned to {agent} while {holder} holds it")
        if chunk in self.done_sent:
            self.rerendered += 1
            self.problem(f"{chunk} assigned to {agent} after it was reported done")
        self.attempts[attempt] = agent
        self.holding[chunk] = agent

    def finished(self, message: ChunkFinished) -> None:
        self.holding.pop((message.job_id, message.chunk), None)
        if message.outcome == "done":
            self.finished_sent += 1
            self.done_sent.add((message.job_id, message.chunk))

    def completed(self, sent: float, now: float) -> None:
        self.completions += 1
        self.last_completion = now
        self.completion_times.append(now)
        self.ack_latencies.append(now - sent)
        self.changed.set()

    def killed(self, reason: str) -> None:
        self.kill_reasons[reason[:80]] += 1
        if "lost" in reason.lower():
            self.told_lost += 1

    def report(
        self, agents: int, slots: int, started: float, stopped: float, expect: int | None
    ) -> SimReport:
        per_second: list[int] = []
        if self.first_assign is not None:
            seconds = int(max(stopped, self.last_completion or 0) - self.first_assign) + 1
            per_second = [0] * seconds
            for moment in self.completion_times:
                per_second[min(seconds - 1, int(moment - self.first_assign))] += 1
        return SimReport(
            agents=agents,
            slots=slots,
            started=started,
            stopped=stopped,
            first_assign=self.first_assign,
            last_completion=self.last_completion,
            assigned=self.assigned,
            finished_sent=self.finished_sent,
            completions=self.completions,
            per_second=per_second,
            attempt_on_two_agents=self.attempt_on_two_agents,
            chunk_on_two_agents=self.chunk_on_two_agents,
            rerendered=self.rerendered,
            problems=list(self.problems),
            kills=sum(self.kill_reasons.values()),
            kill_reasons=dict(self.kill_reasons),
            told_lost=self.told_lost,
            stale_in_welcome=self.stale_in_welcome,
            refused=list(self.refused),
            disconnects=self.disconnects,
            reconnects=self.reconnects,
            heartbeats=self.heartbeats,
            renewals=len(self.renewal_latencies),
            renewal_p50=quantile(self.renewal_latencies, 0.5),
            renewal_p99=quantile(self.renewal_latencies, 0.99),
            renewal_max=max(self.renewal_latencies, default=None),
            lease_lapses=self.lease_lapses,
            ack_p50=quantile(self.ack_latencies, 0.5),
            ack_p99=quantile(self.ack_latencies, 0.99),
            ack_max=max(self.ack_latencies, default=None),
            heartbeat_interval=self.heartbeat_interval,
            lease=self.lease,
            frames_in=self.frames_in,
            messages_in=self.messages_in,
            frames_out=self.frames_out,
            messages_out=self.messages_out,
            finished=expect is not None and self.completions >= expect,
            expect=expect,
        )


@dataclass(slots=True)
class Pending:
    """A reliable report not yet acknowledged (the agent's outbox entry)."""

    seq: int
    data: str
    sent: float
    finished: ChunkFinished | None = None


class SimAgent:
    """One simulated node: its link, its outbox and its chunks, on a shared loop."""

    def __init__(
        self, swarm: Swarm, name: str, slots: int, render_seconds: float = 0.0, prefetch: int = 0
    ) -> None:
        self.swarm = swarm
        self.tally = swarm.tally
        self.name = name
        self.slots = slots
        self.prefetch = prefetch
        self.render_seconds = render_seconds
        self.agent_id = uuid.uuid4().hex
        self.outbox: deque[Pending] = deque()
        self.seq = itertools.count(1)
        self.beat = 0
        self.beat_sent: dict[int, float] = {}
        self.lease_until = 0.0
        self.lapsed = False
        # Chunks rendering here (render_seconds > 0): attempt -> its timer.
        self.running: dict[AttemptKey, asyncio.TimerHandle] = {}
        # Chunks rendering (in a slot), and those given ahead that wait for one.
        self.rendering = 0
        self.waiting: dict[AttemptKey, AssignChunk] = {}
        self.waited = 0  # chunks that were given ahead and waited for a slot
        self.ws: ClientConnection | None = None
        self.queue: deque[str] = deque()
        self.wakeup = asyncio.Event()
        self.welcome: Welcome | None = None
        self.welcomed = asyncio.Event()

    # ------------------------------------------------------------------ sending

    def _send(self, data: str) -> None:
        """Queue for the link; while there is none, only the outbox keeps reports."""
        if self.ws is not None:
            self.queue.append(data)
            self.wakeup.set()

    async def sender(self, ws: ClientConnection) -> None:
        batches = self.swarm.batches and self.welcome is not None and self.welcome.batches
        with contextlib.suppress(ConnectionClosed):
            while True:
                while self.queue:
                    self.tally.frames_out += 1
                    if not batches:
                        self.tally.messages_out += 1
                        await ws.send(self.queue.popleft())
                        continue
                    # As the real agent: what is queued goes in one frame.
                    batch = [self.queue.popleft()]
                    size = len(batch[0])
                    while (
                        self.queue
                        and len(batch) < MAX_BATCH_MESSAGES
                        and size + len(self.queue[0]) < MAX_BATCH_BYTES
                    ):
                        size += len(self.queue[0]) + 1
                        batch.append(self.queue.popleft())
                    self.tally.messages_out += len(batch)
                    await ws.send(encode_batch([data.encode() for data in batch]).decode())
                self.wakeup.clear()
                await self.wakeup.wait()

    def report(self, message: ChunkStarted | ChunkFinished) -> None:
        """Number a reliable report, keep it until acknowledged, send it."""
        message.seq = next(self.seq)
        data = encode(message).decode()
        finished = message if isinstance(message, ChunkFinished) else None
        if finished is not None:
            self.tally.finished(finished)
        self.outbox.append(Pending(message.seq, data, time.time(), finished))
        self._send(data)

    # ------------------------------------------------------------------ chunks

    def assign(self, message: AssignChunk) -> None:
        self.tally.assigned_to(self.name, message)
        if self.rendering < self.slots:
            self.start(message)
        else:
            self.waiting[(message.job_id, message.chunk, message.attempt)] = message
            self.waited += 1
            if len(self.waiting) > self.prefetch:
                self.tally.problem(f"{self.name}: {len(self.waiting)} chunks given ahead")

    def start(self, message: AssignChunk) -> None:
        key: AttemptKey = (message.job_id, message.chunk, message.attempt)
        now = time.time()
        self.rendering += 1
        self.report(
            ChunkStarted(
                job_id=message.job_id,
                chunk=message.chunk,
                attempt=message.attempt,
                pid=100_000 + message.chunk,
                command=message.argv,
            )
        )
        if self.render_seconds <= 0:
            self.finish(key, now, "done")
        else:
            loop = asyncio.get_running_loop()
            self.running[key] = loop.call_later(self.render_seconds, self.finish, key, now, "done")

    def finish(self, key: AttemptKey, started: float, outcome: str) -> None:
        timer = self.running.pop(key, None)
        if timer is not None:
            timer.cancel()
        self.rendering -= 1
        self.ended(key, started, outcome, "" if outcome == "done" else "killed by the leader")
        if self.waiting and self.rendering < self.slots:
            first = next(iter(self.waiting))
            self.start(self.waiting.pop(first))

    def ended(self, key: AttemptKey, started: float, outcome: str, reason: str) -> None:
        job_id, chunk, attempt = key
        self.report(
            ChunkFinished(
                job_id=job_id,
                chunk=chunk,
                attempt=attempt,
                outcome="done" if outcome == "done" else "killed",
                exit_status="0" if outcome == "done" else "SIGTERM",
                started=started,
                finished=time.time(),
                reason=reason,
            )
        )

    def kill(self, message: KillChunk) -> None:
        self.tally.killed(message.reason)
        key: AttemptKey = (message.job_id, message.chunk, message.attempt)
        if self.waiting.pop(key, None) is not None:
            self.ended(key, 0.0, "killed", message.reason)  # taken back before it started
        elif key in self.running and not message.waiting_only:
            self.finish(key, time.time(), "killed")

    # ------------------------------------------------------------------ receiving

    def acked(self, seq: int) -> None:
        now = time.time()
        while self.outbox and self.outbox[0].seq <= seq:
            pending = self.outbox.popleft()
            if pending.finished is not None and pending.finished.outcome == "done":
                self.tally.completed(pending.sent, now)

    def renewed(self, beat: int) -> None:
        sent = self.beat_sent.pop(beat, None)
        for older in [b for b in self.beat_sent if b < beat]:
            del self.beat_sent[older]
        if sent is None or self.welcome is None:
            return
        self.tally.renewal_latencies.append(time.time() - sent)
        self.lease_until = max(self.lease_until, sent + self.welcome.lease)
        self.lapsed = False

    def handle(self, data: str | bytes) -> None:
        self.tally.frames_in += 1
        for message in decode_batch(leader_to_agent, leader_to_agent_batch, data):
            self.tally.messages_in += 1
            self.handle_one(message)

    def handle_one(self, message: object) -> None:
        match message:
            case AssignChunk():
                self.assign(message)
            case Ack(seq=seq):
                self.acked(seq)
            case LeaseRenewed(beat=beat):
                self.renewed(beat)
            case KillChunk():
                self.kill(message)
            case Refused(error=error):
                self.tally.refused.append(f"{self.name}: {error}")
            case Welcome() | UpdateTimeouts() | DiscardStaged():
                pass

    async def heartbeats(self, interval: float) -> None:
        # Real nodes are not in step: the first beat comes at a random moment.
        await asyncio.sleep(random.uniform(0, interval))
        while True:
            now = time.time()
            if now > self.lease_until and not self.lapsed:
                self.lapsed = True
                self.tally.lease_lapses += 1
            self.beat += 1
            self.beat_sent[self.beat] = now
            if len(self.beat_sent) > 64:  # answers that never came
                del self.beat_sent[min(self.beat_sent)]
            self.tally.heartbeats += 1
            self._send(encode(Heartbeat(beat=self.beat)).decode())
            await asyncio.sleep(interval)

    # ------------------------------------------------------------------ connection

    def hello(self) -> AgentHello:
        finished = [p.finished for p in self.outbox if p.finished is not None]
        return AgentHello(
            name=self.name,
            slots=self.slots,
            prefetch=self.prefetch,
            agent_id=self.agent_id,
            version="sim",
            batches=self.swarm.batches,
            gpus=self.swarm.gpus,
            running=[
                RunningRef(job_id=j, chunk=c, attempt=a)
                for j, c, a in [*self.running, *self.waiting]
            ],
            finished=[
                ChunkRef(job_id=f.job_id, chunk=f.chunk, attempt=f.attempt) for f in finished
            ],
        )

    async def session(self, ws: ClientConnection) -> None:
        hello_sent = time.time()
        await ws.send(encode(self.hello()).decode())
        async with asyncio.timeout(CONNECT_TIMEOUT):
            first = leader_to_agent.decode(await ws.recv())
        if isinstance(first, Refused):
            self.tally.refused.append(f"{self.name}: {first.error}")
            return
        if not isinstance(first, Welcome):
            raise RuntimeError(f"{self.name}: expected welcome, got {type(first).__name__}")
        self.welcome = first
        self.tally.heartbeat_interval = first.heartbeat_interval
        self.tally.lease = first.lease
        self.tally.stale_in_welcome += len(first.stale)
        for ref in first.stale:
            self.tally.problem(f"{self.name}: welcome says stale {ref.job_id} {ref.chunk}")
        self.lease_until = max(self.lease_until, hello_sent + first.lease)
        self.ws = ws
        # What the leader has not acknowledged goes again, in order, with its number.
        self.queue = deque(pending.data for pending in self.outbox)
        self.welcomed.set()
        tasks = [
            asyncio.create_task(self.sender(ws)),
            asyncio.create_task(self.heartbeats(first.heartbeat_interval)),
        ]
        try:
            async for data in ws:
                self.handle(data)
        finally:
            self.ws = None
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def run(self) -> None:
        """Stay connected until cancelled; reconnect with backoff when the link drops."""
        backoff = min(BACKOFF_MIN, self.swarm.reconnect_max)
        url = websocket_url(self.swarm.leader)
        first = True
        while True:
            if not first:
                self.tally.reconnects += 1
            first = False
            try:
                async with connect(
                    url,
                    additional_headers={"Authorization": f"Bearer {self.swarm.token}"},
                    open_timeout=CONNECT_TIMEOUT,
                    close_timeout=CLOSE_TIMEOUT,
                    ping_interval=None,  # as the real agent: heartbeats prove the link
                    max_size=MAX_MESSAGE_BYTES,
                    compression=None if self.swarm.batches else "deflate",
                    proxy=None,
                ) as ws:
                    await self.session(ws)
                    backoff = min(BACKOFF_MIN, self.swarm.reconnect_max)
            except InvalidStatus as exc:
                self.tally.refused.append(f"{self.name}: HTTP {exc.response.status_code}")
                if exc.response.status_code in (401, 403):
                    return
            except (OSError, ConnectionClosed, InvalidHandshake, TimeoutError) as exc:
                self.tally.disconnects += 1
                self.tally.problem(f"{self.name}: link lost: {exc or type(exc).__name__}")
            await asyncio.sleep(backoff * random.uniform(0.5, 1.0))
            backoff = min(backoff * 2, self.swarm.reconnect_max)

    async def close(self) -> None:
        ws = self.ws
        if ws is not None:
            with contextlib.suppress(ConnectionClosed, OSError, TimeoutError):
                await ws.close()


class Swarm:
    """N simulated agents × K slots on this loop; an async context manager."""

    def __init__(
        self,
        leader: str,
        token: str,
        agents: int,
        slots: int,
        *,
        prefix: str = "sim",
        render_seconds: float = 0.0,
        reconnect_max: float = BACKOFF_MAX,
        batches: bool = True,
        gpus: int = 0,
        prefetch: int | None = None,
    ) -> None:
        self.leader = leader
        # GPUs each agent says it has (indices 0..gpus-1), for the scheduling rules.
        self.gpus = [GpuInfo(index=i, memory=8192) for i in range(gpus)]
        # Read and send batches (as the real agent does); False: one message a frame.
        self.batches = batches
        self.reconnect_max = reconnect_max
        self.token = token
        self.tally = Tally()
        self.agents = [
            SimAgent(
                self,
                f"{prefix}-{index:04d}",
                slots,
                render_seconds,
                default_prefetch(slots) if prefetch is None else prefetch,
            )
            for index in range(1, agents + 1)
        ]
        self.slots = slots
        self.started = 0.0
        self.stopped: float | None = None
        self.expect: int | None = None
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        self.started = time.time()
        self._tasks = [asyncio.create_task(agent.run()) for agent in self.agents]

    async def wait_welcomed(self) -> None:
        """Return once every agent has been welcomed (wrap it in ``asyncio.timeout``)."""
        await asyncio.gather(*(agent.welcomed.wait() for agent in self.agents))

    async def wait_completions(self, count: int, within: float) -> bool:
        """Wait until ``count`` completions are acknowledged; False after ``within`` seconds."""
        self.expect = count
        deadline = time.monotonic() + within
        while self.tally.completions < count:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self.tally.changed.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(left, 0.5)):
                    await self.tally.changed.wait()
            for task in self._tasks:
                if task.done() and not task.cancelled() and task.exception() is not None:
                    raise task.exception()  # type: ignore[misc]
        return True

    async def stop(self) -> None:
        if self.stopped is None:
            self.stopped = time.time()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await asyncio.gather(*(agent.close() for agent in self.agents))

    def report(self) -> SimReport:
        stopped = self.stopped if self.stopped is not None else time.time()
        return self.tally.report(len(self.agents), self.slots, self.started, stopped, self.expect)

    async def __aenter__(self) -> Swarm:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()


# --- the command line: a swarm in a process of its own ------------------------------------


async def run_swarm(args: argparse.Namespace, token: str) -> SimReport:
    swarm = Swarm(
        args.leader,
        token,
        args.agents,
        args.slots,
        prefix=args.prefix,
        render_seconds=args.render_seconds,
        batches=not args.no_batches,
        gpus=args.gpus,
        prefetch=args.prefetch,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await swarm.start()
    waiting = asyncio.create_task(swarm.wait_completions(args.expect or sys.maxsize, args.cap))
    stopping = asyncio.create_task(stop.wait())
    await asyncio.wait([waiting, stopping], return_when=asyncio.FIRST_COMPLETED)
    swarm.stopped = time.time()
    stopping.cancel()
    waiting.cancel()
    failure = None
    with contextlib.suppress(asyncio.CancelledError):
        failure = waiting.exception() if waiting.done() else None
    report = swarm.report()
    if args.expect is None:
        report.expect = None
    if failure is not None:
        report.problems.append(f"the swarm failed: {failure!r}")
    # The figures first: closing hundreds of links to a stalled leader may take a while.
    write_report(report, args.out)
    await swarm.stop()
    if failure is not None:
        raise failure
    return report


def write_report(report: SimReport, out: str | None) -> None:
    data = msgspec.json.encode(report)
    if out:
        temporary = Path(f"{out}.tmp")
        temporary.write_bytes(data)
        temporary.replace(out)
    else:
        sys.stdout.write(data.decode() + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--leader", required=True, help="http://host:port")
    parser.add_argument("--token-file", required=True, help="agent.token of the leader")
    parser.add_argument("--agents", type=int, default=10)
    parser.add_argument("--slots", type=int, default=4)
    parser.add_argument("--expect", type=int, help="stop after this many completions")
    parser.add_argument("--cap", type=float, default=60.0, help="stop after this many seconds")
    parser.add_argument("--prefix", default="sim", help="node names: PREFIX-0001 ...")
    parser.add_argument("--render-seconds", type=float, default=0.0)
    parser.add_argument(
        "--no-batches", action="store_true", help="one message a frame, compressed (as before)"
    )
    parser.add_argument("--gpus", type=int, default=0, help="GPUs each agent says it has")
    parser.add_argument(
        "--prefetch", type=int, help="chunks taken ahead of the slots (default: the agent's)"
    )
    parser.add_argument("--out", help="write the report (JSON) here instead of stdout")
    args = parser.parse_args(argv)
    token = Path(args.token_file).read_text(encoding="utf-8").strip()
    report = asyncio.run(run_swarm(args, token))
    return 0 if report.clean else 1


if __name__ == "__main__":
    raise SystemExit(main())
