"""A fake leader for console tests: a real WebSocket server that speaks ``/ws/console``.

It keeps a few jobs at different priorities and some nodes, applies every
console request to its own state and answers with ``Reply`` plus the change
messages the real leader would send (``JobsChanged``, ``JobWatched`` ...). It
refuses cross-group moves and priority changes by non-admins like the real
leader, streams ``FramesChanged`` and ``TaskOutput`` on demand, and can be
stopped and restarted on the same port to test reconnection.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator

import msgspec
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from farmtui.protocol import (
    AttemptView,
    BlockNode,
    ChunkRef,
    ChunksChanged,
    ChunkView,
    ConsoleHello,
    ConsoleToLeader,
    Event,
    EventsFetched,
    EventView,
    Failures,
    FailureView,
    FetchEvents,
    FetchFailures,
    FetchNodeLog,
    FetchTaskOutput,
    FramesChanged,
    FrameState,
    JobDetail,
    JobsChanged,
    JobSpec,
    JobsRemoved,
    JobState,
    JobStats,
    JobView,
    JobWatched,
    LeaderToConsole,
    MoveJob,
    NodeLog,
    NodesChanged,
    NodeView,
    PatchJob,
    Reply,
    Role,
    RunChunkAction,
    RunJobAction,
    SetNodeEnabled,
    SetPriority,
    ShowArchived,
    Snapshot,
    TaskOutput,
    Timeouts,
    WatchJob,
    console_to_leader,
    encode,
)

T0 = 1_700_000_000.0  # fixed clock so screenshots do not change
TOKEN = "test-token"
BLOCK_SECONDS = 3600.0  # how long an operator's block lasts, as the leader's OPERATOR_BLOCK

# The one job (j1) shows every frame state, in this layout.
J1_LAYOUT: list[tuple[range, FrameState]] = [
    (range(1, 31), "done"),
    (range(31, 36), "staged"),
    (range(36, 41), "assigned"),
    (range(41, 46), "failed"),
    (range(46, 51), "held"),
    (range(51, 56), "excluded"),
    (range(56, 101), "unassigned"),
]

JOB_STATE_OF_ACTION: dict[str, JobState] = {
    "pause": "paused",
    "resume": "queued",
    "hold": "holding",
    "unhold": "queued",
    "cancel": "cancelled",
    "complete": "done",
    "requeue": "queued",
}


def _job(
    job_id: str,
    name: str,
    owner: str,
    state: JobState,
    priority: int,
    frames: int,
    chunk: int,
    done: int,
    failed: int = 0,
    archived: bool = False,
) -> JobView:
    chunks_total = -(-frames // chunk)
    return JobView(
        id=job_id,
        name=name,
        owner=owner,
        state=state,
        priority=priority,
        position=0,
        frames=f"1-{frames}",
        chunk=chunk,
        renderer="blender",
        archived=archived,
        created=T0,
        started=T0 + 60 if state != "queued" else None,
        stats=JobStats(
            frames_total=frames,
            frames_done=done,
            frames_failed=failed,
            chunks_total=chunks_total,
            chunks_done=done // chunk,
            chunks_running=1 if state == "rendering" else 0,
            chunks_failed=-(-failed // chunk),
            mean_render=42.0 if done else None,
            p90_render=61.0 if done else None,
            etr=(frames - done) * 4.0 if state in ("rendering", "queued") else None,
        ),
        spec=JobSpec(
            name=name,
            frames=f"1-{frames}",
            chunk=chunk,
            priority=priority,
            renderer="blender",
            scene=f"/proj/{name}.blend",
            output=f"renders/{name}/frame_####.png",
            scout="1,50,100" if job_id == "j1" else None,
            tags=["gpu"] if priority < 50 else [],
            max_running=4 if job_id == "j1" else 0,
            timeouts=Timeouts(max_render=3600.0, on_timeout="requeue"),
            retries=3,
            owner=owner,
        ),
    )


def default_jobs() -> list[JobView]:
    return [
        _job("j1", "shot_010_comp", "alice", "rendering", 10, 100, 10, 30),
        _job("j2", "shot_020_light", "bob", "queued", 50, 50, 5, 0),
        _job("j3", "shot_030_fx", "carol", "failed", 50, 20, 5, 10, failed=5),
        _job("j4", "shot_040_anim", "alice", "paused", 50, 30, 10, 10),
        _job("j5", "turntable", "dave", "done", 80, 24, 8, 24),
        _job("j6", "old_preview", "bob", "done", 50, 10, 10, 10, archived=True),
    ]


def default_nodes() -> list[NodeView]:
    return [
        NodeView(
            name="node-a",
            state="online",
            slots=4,
            running=[ChunkRef(job_id="j1", chunk=3, attempt=1)],
            cpu_count=16,
            memory_total=64 * 2**30,
            cpu_percent=87.0,
            memory_percent=41.0,
            last_seen=T0,
        ),
        NodeView(
            name="node-b",
            state="online",
            slots=2,
            cpu_count=8,
            memory_total=32 * 2**30,
            cpu_percent=3.0,
            memory_percent=12.0,
            last_seen=T0,
        ),
        NodeView(
            name="node-c",
            state="disabled",
            slots=2,
            cpu_count=8,
            memory_total=32 * 2**30,
            last_seen=T0,
        ),
    ]


def frame_states_for(job: JobView) -> dict[int, FrameState]:
    total = job.stats.frames_total
    if job.id == "j1":
        return {f: state for frames, state in J1_LAYOUT for f in frames}
    states: dict[int, FrameState] = {}
    for f in range(1, total + 1):
        if f <= job.stats.frames_done:
            states[f] = "done"
        elif f <= job.stats.frames_done + job.stats.frames_failed:
            states[f] = "failed"
        else:
            states[f] = "unassigned"
    return states


def chunks_for(job: JobView, frames: dict[int, FrameState]) -> list[ChunkView]:
    chunks: list[ChunkView] = []
    numbers = sorted(frames)
    for index, start in enumerate(range(0, len(numbers), job.chunk), start=1):
        own = numbers[start : start + job.chunk]
        states = {frames[f] for f in own}
        if states == {"done"}:
            state, node = "done", "node-a"
        elif "failed" in states:
            state, node = "failed", "node-b"
        elif "assigned" in states or "staged" in states:
            state, node = "assigned", "node-a"
        elif states <= {"held"}:
            state, node = "held", None
        elif states <= {"excluded"}:
            state, node = "excluded", None
        else:
            state, node = "queued", None
        started = T0 + 100 * index if node else None
        finished = started + 42 if started and state in ("done", "failed") else None
        # As the real leader: a done chunk lists the attempt that rendered it.
        attempts = (
            [
                AttemptView(
                    number=1, node="node-a", started=started, finished=finished, outcome="done"
                )
            ]
            if state == "done" and started is not None
            else []
        )
        chunks.append(
            ChunkView(
                index=index,
                frames=own,
                state=state,  # type: ignore[arg-type]
                node=node,
                attempt=1 if node else 0,
                errors=1 if state == "failed" else 0,
                started=started,
                finished=finished,
                attempts=attempts,
            )
        )
    return chunks


class FakeLeader:
    """See the module docstring."""

    def __init__(self, role: Role = "admin", user: str = "alice", token: str = TOKEN) -> None:
        self.role = role
        self.user = user
        self.token = token
        self.port = 0
        self.jobs: dict[str, JobView] = {job.id: job for job in default_jobs()}
        self.queue: list[str] = list(self.jobs)
        self.nodes: dict[str, NodeView] = {node.name: node for node in default_nodes()}
        self.frames: dict[str, dict[int, FrameState]] = {}
        self.chunks: dict[str, dict[int, ChunkView]] = {}
        self.node_logs: dict[str, list[str]] = {
            name: [f"{name}: agent started", f"{name}: connected to leader"] for name in self.nodes
        }
        self.received: list[ConsoleToLeader] = []
        # The farm's event log, oldest first (FetchEvents; ``add_event`` appends and sends).
        self.history: list[EventView] = []
        self.clients: dict[ServerConnection, dict[str, object]] = {}
        self.connections = 0
        self._server: Server | None = None
        self._reposition()

    # -- server --------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self._server = await serve(
            self._handle,
            "127.0.0.1",
            self.port,
            process_request=self._check_token,
            close_timeout=0.5,
        )
        sock = next(iter(self._server.sockets))
        self.port = sock.getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            try:
                await asyncio.wait_for(self._server.wait_closed(), 2)
            except TimeoutError:
                # A client whose event loop is gone never answers the close handshake.
                for ws in list(self.clients):
                    ws.transport.abort()
                await self._server.wait_closed()
            self._server = None
            self.clients.clear()

    def _check_token(self, connection: ServerConnection, request: Request) -> Response | None:
        if request.path != "/ws/console":
            return connection.respond(404, "not found\n")
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            return Response(401, "Unauthorized", Headers(), b"no or wrong token\n")
        return None

    async def _handle(self, ws: ServerConnection) -> None:
        raw = await ws.recv()
        hello = console_to_leader.decode(raw)
        assert isinstance(hello, ConsoleHello)
        self.received.append(hello)
        client: dict[str, object] = {"archived": hello.include_archived, "follow": None}
        self.clients[ws] = client
        self.connections += 1
        await self._send(ws, self.snapshot(hello.include_archived))
        try:
            async for data in ws:
                message = console_to_leader.decode(data)
                self.received.append(message)
                await self._apply(ws, client, message)
        except Exception:  # noqa: BLE001 - a test leader: the client went away
            pass
        finally:
            self.clients.pop(ws, None)

    async def _send(self, ws: ServerConnection, message: LeaderToConsole) -> None:
        with contextlib.suppress(Exception):
            await ws.send(encode(message).decode())

    async def broadcast(self, message: LeaderToConsole) -> None:
        for ws in list(self.clients):
            await self._send(ws, message)

    # -- state ---------------------------------------------------------------

    def dispatch_order(self) -> list[str]:
        """Active jobs by priority then queue order; archived ones after, out of the queue."""
        return sorted(
            self.queue, key=lambda job_id: (self.jobs[job_id].archived, self.jobs[job_id].priority)
        )

    def _reposition(self) -> list[JobView]:
        changed = []
        for position, job_id in enumerate(self.dispatch_order()):
            job = self.jobs[job_id]
            if job.position != position:
                self.jobs[job_id] = msgspec.structs.replace(job, position=position)
                changed.append(self.jobs[job_id])
        return changed

    def snapshot(self, include_archived: bool = False) -> Snapshot:
        jobs = [
            self.jobs[job_id]
            for job_id in self.dispatch_order()
            if include_archived or not self.jobs[job_id].archived
        ]
        return Snapshot(user=self.user, role=self.role, jobs=jobs, nodes=list(self.nodes.values()))

    def detail(self, job_id: str) -> JobDetail:
        job = self.jobs[job_id]
        frames = self.frames.setdefault(job_id, frame_states_for(job))
        chunks = self.chunks.setdefault(job_id, {c.index: c for c in chunks_for(job, frames)})
        return JobDetail(
            job=job,
            chunks=list(chunks.values()),
            frame_states={str(f): s for f, s in frames.items()},
        )

    def set_job(self, job_id: str, **changes: object) -> JobView:
        self.jobs[job_id] = msgspec.structs.replace(self.jobs[job_id], **changes)
        return self.jobs[job_id]

    # -- requests --------------------------------------------------------------

    async def _reply(self, ws: ServerConnection, request_id: int, error: str | None = None) -> None:
        await self._send(ws, Reply(request_id=request_id, ok=error is None, error=error))

    async def _apply(
        self, ws: ServerConnection, client: dict[str, object], message: ConsoleToLeader
    ) -> None:
        match message:
            case RunJobAction():
                await self._job_action(ws, message)
            case SetPriority():
                if self.role != "admin":
                    await self._reply(ws, message.request_id, "only admins can set priority")
                    return
                self.set_job(message.job_id, priority=message.priority)
                self.queue.remove(message.job_id)
                self.queue.append(message.job_id)
                changed = self._reposition()
                job = self.jobs[message.job_id]
                await self.broadcast(JobsChanged(jobs=[job, *[j for j in changed if j != job]]))
                await self._reply(ws, message.request_id)
            case MoveJob():
                error = self._move(message)
                if error is None:
                    await self.broadcast(JobsChanged(jobs=self._reposition()))
                await self._reply(ws, message.request_id, error)
            case PatchJob():
                job = self.jobs[message.job_id]
                patch = message.patch
                spec = job.spec
                for field in ("timeouts", "retries", "max_running", "tags"):
                    value = getattr(patch, field)
                    if value is not None:
                        spec = msgspec.structs.replace(spec, **{field: value})
                await self.broadcast(JobsChanged(jobs=[self.set_job(job.id, spec=spec)]))
                await self._reply(ws, message.request_id)
            case SetNodeEnabled():
                if self.role != "admin":
                    await self._reply(ws, message.request_id, "only admins can change nodes")
                    return
                node = self.nodes[message.node]
                node = msgspec.structs.replace(
                    node, state="online" if message.enabled else "disabled"
                )
                self.nodes[node.name] = node
                await self.broadcast(NodesChanged(nodes=[node]))
                await self._reply(ws, message.request_id)
            case WatchJob():
                client["watch"] = message.job_id
                if message.job_id in self.jobs:
                    await self._send(ws, JobWatched(detail=self.detail(message.job_id)))
                await self._reply(ws, message.request_id)
            case RunChunkAction():
                await self._chunk_action(ws, message)
            case FetchTaskOutput():
                # Like the real leader: no attempt named means the chunk's latest;
                # attempt 0 (never dispatched) has no output.
                self.detail(message.job_id)
                chunk = self.chunks[message.job_id][message.chunk]
                attempt = chunk.attempt if message.attempt is None else message.attempt
                key = (message.job_id, message.chunk, attempt)
                client["follow"] = key if message.follow and attempt else None
                lines = self.output_of(*key) if attempt else []
                await self._send(
                    ws,
                    TaskOutput(
                        job_id=message.job_id, chunk=message.chunk, attempt=attempt, lines=lines
                    ),
                )
                await self._reply(ws, message.request_id)
            case FetchNodeLog():
                lines = self.node_logs.get(message.node)
                if lines is None:
                    await self._reply(ws, message.request_id, f"no node {message.node}")
                    return
                await self._send(ws, NodeLog(node=message.node, lines=list(lines)))
                await self._reply(ws, message.request_id)
            case ShowArchived():
                client["archived"] = message.enabled
                archived = [j for j in self.jobs.values() if j.archived]
                if message.enabled:
                    await self._send(ws, JobsChanged(jobs=archived))
                else:
                    await self._send(ws, JobsRemoved(job_ids=[j.id for j in archived]))
                await self._reply(ws, message.request_id)
            case FetchFailures():
                await self._reply(ws, message.request_id)
                await self._send(ws, Failures(failures=self.failures()[: message.limit]))
            case FetchEvents(job_id=job_id):
                if job_id is not None and job_id not in self.jobs:
                    await self._reply(ws, message.request_id, f"no job {job_id}")
                    return
                await self._reply(ws, message.request_id)
                events = [e for e in self.history if job_id is None or e.job_id == job_id]
                await self._send(ws, EventsFetched(job_id=job_id, events=events[-message.limit :]))
            case BlockNode():
                await self._block_node(ws, message)
            case _:
                await self._reply(ws, message.request_id, "not supported by the fake leader")

    async def _block_node(self, ws: ServerConnection, message: BlockNode) -> None:
        """Like the real leader: the job's view changes and an event says so."""
        if message.job_id not in self.jobs or message.node not in self.nodes:
            await self._reply(ws, message.request_id, f"unknown job or node {message.node}")
            return
        blocked = dict(self.jobs[message.job_id].blocked_nodes)
        was = message.node in blocked
        if message.blocked:
            blocked[message.node] = T0 + BLOCK_SECONDS
        else:
            blocked.pop(message.node, None)
        await self.broadcast(
            JobsChanged(jobs=[self.set_job(message.job_id, blocked_nodes=blocked)])
        )
        if was != message.blocked:
            word = "blocked for this job" if message.blocked else "may render this job again"
            await self.add_event(f"node {message.node} {word}", message.job_id, self.user)
        await self._reply(ws, message.request_id)

    def failures(self) -> list[FailureView]:
        """Every failed attempt of every job's chunks, newest first (as ``farm failures``)."""
        found: list[FailureView] = []
        for job_id, job in self.jobs.items():
            self.detail(job_id)
            for chunk in self.chunks[job_id].values():
                attempts = list(chunk.attempts)
                if not attempts and chunk.state == "failed":
                    attempts = [
                        AttemptView(
                            number=chunk.attempt,
                            node=chunk.node or "",
                            started=chunk.started or T0,
                            finished=chunk.finished,
                            outcome="failed",
                            exit_status="1",
                        )
                    ]
                for attempt in attempts:
                    if attempt.outcome not in ("failed", "timeout"):
                        continue
                    found.append(
                        FailureView(
                            job_id=job_id,
                            job_name=job.name,
                            chunk=chunk.index,
                            frames=f"{chunk.frames[0]}-{chunk.frames[-1]}",
                            node=attempt.node,
                            attempt=attempt.number,
                            finished=attempt.finished or T0,
                            outcome=attempt.outcome,
                            reason=f"exit {attempt.exit_status}",
                            error_line=f"Error: chunk {chunk.index} ran out of memory",
                            chunk_state=chunk.state,
                        )
                    )
        found.sort(key=lambda f: f.finished, reverse=True)
        return found

    async def add_event(
        self, text: str, job_id: str | None = None, actor: str | None = None, at: float = T0
    ) -> EventView:
        """Record an event in the farm's log and send it to the consoles, live."""
        event = EventView(time=at, level="info", text=text, job_id=job_id, actor=actor)
        self.history.append(event)
        await self.broadcast(Event(event=event))
        return event

    async def _job_action(self, ws: ServerConnection, message: RunJobAction) -> None:
        unknown = [job_id for job_id in message.job_ids if job_id not in self.jobs]
        if unknown:
            await self._reply(ws, message.request_id, f"no such job: {', '.join(unknown)}")
            return
        if message.action == "delete":
            for job_id in message.job_ids:
                del self.jobs[job_id]
                self.queue.remove(job_id)
            await self.broadcast(JobsRemoved(job_ids=message.job_ids))
            await self.broadcast(JobsChanged(jobs=self._reposition()))
            await self._reply(ws, message.request_id)
            return
        changed = []
        for job_id in message.job_ids:
            action = message.action
            if action in JOB_STATE_OF_ACTION:
                changed.append(self.set_job(job_id, state=JOB_STATE_OF_ACTION[action]))
            elif action in ("archive", "unarchive"):
                changed.append(self.set_job(job_id, archived=action == "archive"))
            elif action in ("review", "unreview"):
                changed.append(self.set_job(job_id, reviewed=action == "review"))
            elif action in ("retry-failed", "retry-sync"):
                job = self.jobs[job_id]
                stats = msgspec.structs.replace(job.stats, frames_failed=0, chunks_failed=0)
                changed.append(self.set_job(job_id, state="queued", stats=stats))
        await self.broadcast(JobsChanged(jobs=changed))
        await self._reply(ws, message.request_id)

    def _move(self, message: MoveJob) -> str | None:
        job = self.jobs.get(message.job_id)
        if job is None:
            return f"no such job: {message.job_id}"
        group = [
            j
            for j in self.dispatch_order()
            if self.jobs[j].priority == job.priority and not self.jobs[j].archived
        ]
        i = group.index(job.id)
        if message.before is not None:
            other = self.jobs.get(message.before)
            if other is None:
                return f"no such job: {message.before}"
            if other.priority != job.priority:
                return (
                    f"refused: {job.name} has priority {job.priority} and {other.name} "
                    f"{other.priority}; moves stay within a priority group"
                )
            target = message.before
            self.queue.remove(job.id)
            self.queue.insert(self.queue.index(target), job.id)
            return None
        where = message.where or "bottom"
        if where == "up" and i > 0:
            anchor, after = group[i - 1], False
        elif where == "down" and i < len(group) - 1:
            anchor, after = group[i + 1], True
        elif where == "top" and i > 0:
            anchor, after = group[0], False
        elif where == "bottom" and i < len(group) - 1:
            anchor, after = group[-1], True
        else:
            return None
        self.queue.remove(job.id)
        self.queue.insert(self.queue.index(anchor) + (1 if after else 0), job.id)
        return None

    async def _chunk_action(self, ws: ServerConnection, message: RunChunkAction) -> None:
        self.detail(message.job_id)
        chunks = self.chunks[message.job_id]
        frames = self.frames[message.job_id]
        new_chunk_state = {
            "retry": "queued",
            "hold": "held",
            "set-failed": "failed",
            "set-done": "done",
            "exclude": "excluded",
        }[message.action]
        frame_state: FrameState = {  # type: ignore[assignment]
            "queued": "unassigned",
            "held": "held",
            "failed": "failed",
            "done": "done",
            "excluded": "excluded",
        }[new_chunk_state]
        changed_chunks = []
        changed_frames: list[int] = []
        for index in message.chunks:
            chunk = msgspec.structs.replace(chunks[index], state=new_chunk_state)
            chunks[index] = chunk
            changed_chunks.append(chunk)
            for f in chunk.frames:
                frames[f] = frame_state
                changed_frames.append(f)
        await self.broadcast(ChunksChanged(job_id=message.job_id, chunks=changed_chunks))
        await self.broadcast(
            FramesChanged(job_id=message.job_id, frames=changed_frames, state=frame_state)
        )
        await self._reply(ws, message.request_id)

    # -- pushed by tests ---------------------------------------------------------

    async def stream_frames(self, job_id: str, frames: list[int], state: FrameState) -> None:
        self.detail(job_id)
        for f in frames:
            self.frames[job_id][f] = state
        await self.broadcast(FramesChanged(job_id=job_id, frames=frames, state=state))

    @staticmethod
    def output_of(job_id: str, chunk: int, attempt: int) -> list[str]:
        """What a chunk attempt printed; attempts after the first say which they are."""
        named = f" attempt {attempt}" if attempt > 1 else ""
        return [f"chunk {chunk} of {job_id}{named}: line {i}" for i in range(3)]

    async def retry_chunk(self, job_id: str, index: int, outcome: str = "failed") -> ChunkView:
        """Give a chunk one more attempt: the current one ends with ``outcome`` on node-b,
        the new one runs on node-a. Sent to the consoles as ``ChunksChanged``."""
        self.detail(job_id)
        chunk = self.chunks[job_id][index]
        attempts = list(chunk.attempts) or [
            AttemptView(number=n, node=chunk.node or "node-b", started=T0)
            for n in range(1, chunk.attempt + 1)
        ]
        if attempts:
            attempts[-1] = msgspec.structs.replace(
                attempts[-1], node="node-b", outcome=outcome, exit_status="1", finished=T0 + 50
            )
        number = chunk.attempt + 1
        attempts.append(AttemptView(number=number, node="node-a", started=T0 + 60))
        chunk = msgspec.structs.replace(
            chunk, attempt=number, attempts=attempts, state="assigned", node="node-a"
        )
        self.chunks[job_id][index] = chunk
        await self.broadcast(ChunksChanged(job_id=job_id, chunks=[chunk]))
        return chunk

    async def emit_output(self, lines: list[str]) -> None:
        """Append lines to whatever task output each console follows."""
        for ws, client in list(self.clients.items()):
            follow = client.get("follow")
            if isinstance(follow, tuple):
                job_id, chunk, attempt = follow
                await self._send(
                    ws,
                    TaskOutput(
                        job_id=job_id, chunk=chunk, attempt=attempt, lines=lines, append=True
                    ),
                )

    def count(self, kind: type) -> int:
        return sum(1 for message in self.received if isinstance(message, kind))

    def last(self, kind: type) -> ConsoleToLeader:
        return next(m for m in reversed(self.received) if isinstance(m, kind))


@contextlib.contextmanager
def leader_in_thread(**kwargs: object) -> Iterator[FakeLeader]:
    """Run a FakeLeader on its own event loop in a thread (for snap_compare, tmux)."""
    loop = asyncio.new_event_loop()
    leader = FakeLeader(**kwargs)  # type: ignore[arg-type]
    ready = threading.Event()

    def run() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(leader.start())
        ready.set()
        loop.run_forever()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    ready.wait(10)
    try:
        yield leader
    finally:
        asyncio.run_coroutine_threadsafe(leader.stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


__all__ = ["FakeLeader", "leader_in_thread", "TOKEN", "T0"]
