"""``/ws/console``: the operator console's live link.

After ``ConsoleHello`` the console gets a ``Snapshot``, then deltas after every
commit: changed jobs, removed jobs, changed nodes, and for the job it watches,
changed chunks and frames. Deltas are merged and sent at most
``console_updates_per_second`` times a second, and views are built when they
are sent, so a burst of a thousand chunk events costs one message. A console
that cannot keep up loses its queued messages and gets a fresh Snapshot
instead: it never slows the farm.

Requests (actions, priority, moves, patches, nodes) go through the same
checks as the REST API and are answered with ``Reply``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Coroutine
from contextvars import ContextVar
from typing import Any

import msgspec
from starlette.responses import Response
from starlette.websockets import WebSocket

from farmtui.protocol import (
    MAX_CONSOLE_MESSAGE_BYTES,
    PROTOCOL_VERSION,
    ROLE_HEADER,
    ApiError,
    BlockNode,
    ChunksChanged,
    ChunkView,
    ConsoleHello,
    ConsoleToLeader,
    Event,
    EventsFetched,
    Failures,
    FetchEvents,
    FetchFailures,
    FetchNodeLog,
    FetchTaskOutput,
    FramesChanged,
    FrameState,
    JobsChanged,
    JobsRemoved,
    JobView,
    JobWatched,
    MoveJob,
    NodeLog,
    NodesChanged,
    PatchJob,
    ProtocolError,
    Reply,
    RunChunkAction,
    RunJobAction,
    SetNodeEnabled,
    SetPriority,
    ShowArchived,
    Snapshot,
    TaskOutput,
    WatchJob,
    console_to_leader,
    decode_checked,
    encode,
)
from server import joblogs, operations
from server.announcements import CLOSE_REVOKED, OutputKey
from server.auth import bearer_token, hash_token
from server.errors import NotFound, RequestError, Unavailable
from server.joblogs import chunk_log_path
from server.leader import Leader
from server.links import close_websocket, receive_data
from server.model import Changes
from server.repeated_warnings import RepeatedWarnings
from server.rights import Principal, could, refusal
from server.views import MAX_PAGE_CHUNKS, ChunkPage

log = logging.getLogger("farmtui.leader.consoles")

# uvicorn's websockets-sansio protocol logs "ASGI callable returned without
# completing handshake." at ERROR after every denial response, though the
# client got it (Kludex/uvicorn#3138). Turning a bad token away is no error:
# that one line is dropped, and only for a connection this module denied (the
# log call runs in the denied connection's task, so it sees ``_denied``).
_denied: ContextVar[bool] = ContextVar("farmtui_console_denied", default=False)


class _DenialIsNoError(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not (
            _denied.get()
            and record.getMessage().startswith("ASGI callable returned without completing")
        )


logging.getLogger("uvicorn.error").addFilter(_DenialIsNoError())

HELLO_TIMEOUT = 10.0
# Queued events beyond which a console is resynced instead.
MAX_QUEUED = 2000
# Output lines kept per followed chunk between two sends.
MAX_PENDING_LINES = 5000
# History reads (failures, event logs) one console may have under way at once.
MAX_READS = 4


class ConsoleLink:
    """One console: what it has not been told yet, and the task that tells it."""

    # The hash of the token it connected with (``Leader.revoked``).
    token_hash = ""

    def __init__(
        self, leader: Leader, websocket: WebSocket, principal: Principal, include_archived: bool
    ) -> None:
        self.leader = leader
        self.websocket = websocket
        self.principal = principal
        self.include_archived = include_archived
        self.watched: str | None = None
        self.following: OutputKey | None = None
        # Followed chunks whose log tail is still being read (-> the latest read's
        # number): their live lines wait, and only the latest read is sent.
        self.tail_pending: dict[OutputKey, int] = {}
        self.tail_reads = 0
        self.readers: set[asyncio.Future[None]] = set()
        # Pending deltas, merged until the next send.
        self.jobs: set[str] = set()
        self.removed: set[str] = set()
        self.nodes: set[str] = set()
        self.chunks: set[int] = set()
        self.frames: dict[int, str] = {}
        self.output: dict[OutputKey, list[str]] = {}
        # Events may be dropped (a resync replaces them); answers to requests may not.
        self.events: deque[Event] = deque()
        self.answers: deque[msgspec.Struct] = deque()
        self.replies: deque[Reply] = deque()
        self.resync = True  # the first send is the Snapshot
        self.send_watched = False
        self.wake = asyncio.Event()
        self.wake.set()
        self.interval = 1.0 / leader.config.console_updates_per_second
        self.sent = 0
        self.resyncs = 0
        self.task: asyncio.Future[None] = asyncio.get_running_loop().create_task(self._sender())

    # --- what happened (called on the event loop, never blocks) --------------------
    def changed(self, changes: Changes) -> None:
        self.jobs |= changes.jobs
        self.removed |= changes.removed
        self.nodes |= changes.nodes | changes.readings
        watched = self.watched
        if watched is not None:
            self.chunks.update(index for job_id, index in changes.chunks if job_id == watched)
            for job_id, frames, state in changes.frames:
                if job_id == watched:
                    for frame in frames:
                        self.frames[frame] = state
            if watched in changes.refreshed:
                self.send_watched = True
            if watched in changes.removed:
                self.watched = None
                self.chunks.clear()
                self.frames.clear()
        if not self.resync:
            self.events.extend(Event(event=event) for event in changes.events)
            if len(self.events) > MAX_QUEUED:
                self._start_resync()
        self.wake.set()

    def close(self, code: int, reason: str) -> None:
        """Stop telling this console anything and close its link (the leader steps down)."""
        self.task.cancel()
        asyncio.get_running_loop().create_task(close_websocket(self.websocket, code, reason))

    def task_output(self, key: OutputKey, lines: list[str]) -> None:
        pending = self.output.setdefault(key, [])
        pending.extend(lines)
        if len(pending) > MAX_PENDING_LINES:
            del pending[: len(pending) - MAX_PENDING_LINES]
        self.wake.set()

    def post(self, message: msgspec.Struct) -> None:
        """Queue the answer to a request (task output, node log)."""
        self.answers.append(message)
        self.wake.set()

    def reply(self, request_id: int, error: str | None = None) -> None:
        self.replies.append(Reply(request_id=request_id, ok=error is None, error=error))
        self.wake.set()

    def farm_reloaded(self) -> None:
        """The farm was reloaded from the store after a failed commit: views this console
        was sent may show what was undone, so it gets a Snapshot again."""
        self._start_resync()

    def _start_resync(self) -> None:
        self.resyncs += 1
        self.resync = True
        self.events.clear()
        self.wake.set()

    # --- telling the console ------------------------------------------------------
    async def _sender(self) -> None:
        try:
            while True:
                await self.wake.wait()
                self.wake.clear()
                for message in self._collect():
                    await self.websocket.send_text(encode(message).decode())
                    self.sent += 1
                await asyncio.sleep(self.interval)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - a console gone mid-send
            log.debug("console %s: send failed: %s", self.principal.name, exc)

    def _collect(self) -> list[msgspec.Struct]:
        """Everything pending, as messages, built from the scheduler's current views."""
        scheduler = self.leader.scheduler
        out: list[msgspec.Struct] = []
        if self.resync:
            self.resync = False
            self.jobs.clear()
            self.removed.clear()
            self.nodes.clear()
            out.append(
                Snapshot(
                    user=self.principal.name,
                    role=self.principal.role,
                    jobs=scheduler.job_views(self.include_archived),
                    nodes=scheduler.node_views(),
                    default_retries=self.leader.config.retries,
                    default_retry_delay=self.leader.config.retry_delay,
                    default_retry_cap=self.leader.config.retry_cap,
                )
            )
            if self.watched is not None:
                self.send_watched = True
        if self.send_watched:
            self.send_watched = False
            self.chunks.clear()
            self.frames.clear()
            if self.watched is not None and self.watched in scheduler.jobs:
                # A huge job's first page: its other chunks arrive as they change.
                detail = scheduler.job_detail(self.watched, ChunkPage(MAX_PAGE_CHUNKS))
                out.append(JobWatched(detail=detail))
        removed = set(self.removed)
        changed: list[JobView] = []
        for job_id in self.jobs - removed:
            if job_id not in scheduler.jobs:
                removed.add(job_id)
                continue
            view = scheduler.job_view(job_id)
            if view.archived and not self.include_archived:
                removed.add(job_id)
            else:
                changed.append(view)
        self.jobs.clear()
        self.removed.clear()
        if removed:
            out.append(JobsRemoved(job_ids=sorted(removed)))
        if changed:
            changed.sort(key=lambda view: view.position)
            out.append(JobsChanged(jobs=changed))
        if self.nodes:
            names = self.nodes
            out.append(NodesChanged(nodes=[v for v in scheduler.node_views() if v.name in names]))
            self.nodes = set()
        watched = self.watched
        if watched is not None and watched in scheduler.jobs:
            if self.chunks:
                views: list[ChunkView] = [
                    scheduler.chunk_view(watched, index) for index in sorted(self.chunks)
                ]
                out.append(ChunksChanged(job_id=watched, chunks=views))
            by_state: dict[str, list[int]] = {}
            for frame, state in self.frames.items():
                by_state.setdefault(state, []).append(frame)
            for state, frames in by_state.items():
                frame_state: FrameState = state  # type: ignore[assignment]
                out.append(FramesChanged(job_id=watched, frames=sorted(frames), state=frame_state))
        self.chunks.clear()
        self.frames.clear()
        out.extend(self.events)
        self.events.clear()
        out.extend(self.answers)
        self.answers.clear()
        for key, lines in list(self.output.items()):
            if key in self.tail_pending:
                continue  # sent after the tail they follow
            del self.output[key]
            job_id, chunk, attempt = key
            if lines:
                out.append(
                    TaskOutput(
                        job_id=job_id, chunk=chunk, attempt=attempt, lines=lines, append=True
                    )
                )
        out.extend(self.replies)
        self.replies.clear()
        return out

    async def stop(self) -> None:
        for future in (self.task, *self.readers):
            future.cancel()
        await asyncio.gather(self.task, *self.readers, return_exceptions=True)
        # A cancelled task keeps its CancelledError, whose traceback holds the sender's
        # frame and so this link, which held the task: a cycle that only a full garbage
        # collection frees, and the leader freezes what lives through young ones
        # (``server.heap``), so every closed console stayed until a walk of everything.
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        self.task = done

    # --- requests -----------------------------------------------------------------
    async def handle(self, message: ConsoleToLeader) -> None:
        """Serve one request; every request gets a Reply (a change's once it is committed,
        and the next request is read after it)."""
        try:
            await self._handle(message)
        except RequestError as exc:
            self.reply(message.request_id, str(exc))
        else:
            self.reply(message.request_id)

    async def _handle(self, message: ConsoleToLeader) -> None:
        leader = self.leader
        who = self.principal
        match message:
            case ConsoleHello(include_archived=include_archived):
                self.include_archived = include_archived
                self._start_resync()
            case ShowArchived(enabled=enabled):
                self.include_archived = enabled
                self._start_resync()
            case WatchJob(job_id=job_id):
                if job_id is not None:
                    operations.job_or_404(leader, job_id)
                self.watched = job_id
                self.send_watched = job_id is not None
                self.chunks.clear()
                self.frames.clear()
            case RunJobAction(action=action, job_ids=job_ids):
                await operations.job_action(leader, who, action, job_ids)
            case RunChunkAction(action=action, job_id=job_id, chunks=chunks):
                await operations.chunk_action(leader, who, job_id, action, chunks)
            case SetPriority(job_id=job_id, priority=priority):
                await operations.set_priority(leader, who, job_id, priority)
            case MoveJob(job_id=job_id, where=where, before=before):
                await operations.move(leader, who, job_id, where, before)
            case PatchJob(job_id=job_id, patch=patch):
                await operations.patch(leader, who, job_id, patch)
            case SetNodeEnabled(node=node, enabled=enabled):
                await operations.set_node_enabled(leader, who, node, enabled)
            case FetchTaskOutput():
                self._fetch_output(message)
            case FetchNodeLog(node=node, tail=tail):
                if node not in leader.scheduler.nodes:
                    raise NotFound(f"unknown node {node}")
                self._room_to_read()
                self._in_background(self._send_node_log(node, tail))
            case BlockNode(job_id=job_id, node=node, blocked=blocked):
                await operations.block_node(leader, who, job_id, node, blocked)
            case FetchFailures(limit=limit):
                self._room_to_read()
                self._in_background(self._send_failures(limit))
            case FetchEvents(job_id=job_id, limit=limit):
                self._room_to_read()
                if job_id is not None:
                    operations.job_or_404(leader, job_id)
                # The read is made inside the task: a link closed before the task runs
                # leaves no coroutine behind that was never awaited.
                self._in_background(self._send_events(job_id, limit))

    def _fetch_output(self, request: FetchTaskOutput) -> None:
        leader = self.leader
        job_id, index = request.job_id, request.chunk
        operations.job_or_404(leader, job_id)
        chunk = leader.chunk(job_id, index)
        if chunk is None:
            raise NotFound(f"job {job_id} has no chunk {index}")
        attempt = chunk.attempt if request.attempt is None else request.attempt
        if self.following is not None:
            leader.unfollow(self)
            self.following = None
        if not attempt:
            self.post(TaskOutput(job_id=job_id, chunk=index, attempt=0, lines=[], append=False))
            return
        key = (job_id, index, attempt)
        # Read on the log writer thread after every line written so far; lines
        # that arrive meanwhile are held and sent after the tail, so none is
        # lost or shown twice. Lines held before now are in the file this read
        # sees: they go, and so does an earlier read of the same log.
        path = chunk_log_path(job_id, index, attempt)
        tail = leader.joblogs.tail(path, joblogs.TAIL_BYTES, say_cut=True)
        self.output.pop(key, None)
        if request.follow:
            self.following = key
            leader.follow(key, self)
        self.tail_reads += 1
        self.tail_pending[key] = self.tail_reads
        reader = asyncio.ensure_future(self._send_tail(key, self.tail_reads, tail))
        self.readers.add(reader)
        reader.add_done_callback(self.readers.discard)

    def _room_to_read(self) -> None:
        """A console has at most MAX_READS reads under way, so one that asks faster
        than the disk answers cannot queue up the log thread's work."""
        if len(self.readers) >= MAX_READS:
            raise Unavailable(f"{MAX_READS} reads are already under way; ask again when one ends")

    def _in_background(self, read: Coroutine[Any, Any, None]) -> None:
        """A read that may wait on the log thread: the link keeps serving meanwhile."""
        reader = asyncio.ensure_future(read)
        self.readers.add(reader)
        reader.add_done_callback(self.readers.discard)

    async def _send_failures(self, limit: int) -> None:
        leader = self.leader
        try:
            failures = await leader.failures.newest_with_errors(leader.joblogs, limit)
        except OSError as exc:
            log.warning("cannot read the failed attempts' logs: %s", exc)
            failures = leader.failures.newest(limit)
        self.post(Failures(failures=failures))

    async def _send_node_log(self, node: str, tail: int) -> None:
        try:
            lines = await self.leader.nodelogs.tail(node, tail)
        except OSError as exc:
            log.warning("cannot read the log of node %s: %s", node, exc)
            lines = self.leader.nodelogs.kept(node, tail)  # those since the leader started
        self.post(NodeLog(node=node, lines=lines))

    async def _send_events(self, job_id: str | None, limit: int) -> None:
        history = self.leader.history
        read = history.latest(limit) if job_id is None else history.of_job(job_id, limit)
        try:
            found = await read
        except OSError as exc:
            log.warning("cannot read the event log of %s: %s", job_id or "the farm", exc)
            found = []
        self.post(EventsFetched(job_id=job_id, events=found))

    async def _send_tail(
        self, key: OutputKey, read: int, tail: asyncio.Future[list[str] | None]
    ) -> None:
        job_id, index, attempt = key
        try:
            lines = await tail
        except OSError as exc:
            log.warning("cannot read the log of %s chunk %d: %s", job_id, index, exc)
            lines = None
        if self.tail_pending.get(key) != read:
            return  # asked again since: that read has all of this one and more
        del self.tail_pending[key]
        self.post(
            TaskOutput(job_id=job_id, chunk=index, attempt=attempt, lines=lines or [], append=False)
        )


async def console_endpoint(websocket: WebSocket) -> None:
    """Serve one console connection from hello to close."""
    leader: Leader = websocket.app.state.leader
    standby = leader.refusal()
    if standby is not None:
        # 503 before the upgrade: a console with several leader URLs tries the next one.
        _denied.set(True)
        await websocket.send_denial_response(
            Response(
                msgspec.json.encode(ApiError(error=standby)),
                status_code=503,
                media_type="application/json",
                headers={ROLE_HEADER: "standby"},
            )
        )
        return
    bearer = bearer_token(websocket.headers, websocket.query_params)
    principal = leader.tokens.lookup(bearer)
    if principal is None or not could(principal, "read"):
        status, error = (
            (401, "missing, unknown or revoked token")
            if principal is None
            else (403, refusal(principal, "read") or "forbidden")
        )
        _denied.set(True)
        await websocket.send_denial_response(
            Response(
                msgspec.json.encode(ApiError(error=error)),
                status_code=status,
                media_type="application/json",
            )
        )
        return
    await websocket.accept()
    try:
        data = await asyncio.wait_for(receive_data(websocket), HELLO_TIMEOUT)
    except TimeoutError:
        await close_websocket(websocket, 1002, "no hello")
        return
    if data is None:
        return
    try:
        hello = decode_console(data)
    except ProtocolError as exc:
        await _refuse(websocket, f"bad hello: {exc}")
        return
    if not isinstance(hello, ConsoleHello):
        await _refuse(websocket, "the first message must be hello")
        return
    if hello.protocol != PROTOCOL_VERSION:
        await _refuse(
            websocket,
            f"protocol version {hello.protocol} is not supported; this leader speaks "
            f"{PROTOCOL_VERSION}",
        )
        return
    link = ConsoleLink(leader, websocket, principal, hello.include_archived)
    link.token_hash = hash_token(bearer or "")  # closed if that token is revoked
    if leader.tokens.lookup(bearer) is None:
        # Revoked while its hello was awaited: ``Leader.revoked`` closed only the
        # consoles registered then, and this one had its rights checked before.
        await close_websocket(websocket, CLOSE_REVOKED, "its token was revoked")
        return
    leader.consoles.add(link)
    log.info("console of %s (%s) connected", principal.name, principal.role)
    bad_frames = RepeatedWarnings(log, f"console {principal.name}")
    try:
        while True:
            data = await receive_data(websocket)
            if data is None or link.task.done():
                return
            try:
                message = decode_console(data)
            except ProtocolError as exc:
                bad_frames.warn(f"ignored a message: {str(exc)[:300]}")
                link.reply(0, str(exc)[:300])
                continue
            try:
                await link.handle(message)
            except Exception as exc:
                # The reason is in the leader's log; it may hold server paths.
                log.exception("console %s: %s failed", principal.name, type(message).__name__)
                link.reply(message.request_id, f"leader error: {type(exc).__name__}")
    finally:
        leader.consoles.discard(link)
        leader.unfollow(link)
        await link.stop()
        bad_frames.flush()
        log.info("console of %s disconnected", principal.name)


def decode_console(data: str | bytes) -> ConsoleToLeader:
    """A console's message; a frame longer than any is refused before it is decoded."""
    if len(data) > MAX_CONSOLE_MESSAGE_BYTES:
        raise ProtocolError(f"message of {len(data):,} bytes is over {MAX_CONSOLE_MESSAGE_BYTES:,}")
    return decode_checked(console_to_leader, data)


async def _refuse(websocket: WebSocket, error: str) -> None:
    with contextlib.suppress(Exception):  # the peer may be gone already
        await websocket.send_text(encode(Reply(request_id=0, ok=False, error=error)).decode())
    await close_websocket(websocket, 1002, error)
