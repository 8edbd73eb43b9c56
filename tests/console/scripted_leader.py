"""The real leader for the console's tests, on a fixed clock, with a scripted farm.

Nothing here decides anything: every move, action, priority, patch, block,
failure, event and view comes from the leader itself (``server.leader.Leader``
with its ``Scheduler``, ``server.views``, ``ConsoleLink``, store, job logs and
history). What this module adds is only what a screenshot needs and a live
farm cannot give: fixed job ids (``j1`` ...), a clock that stands still until
the script moves it, and agents' reports (chunk started, frames written,
finished, output lines, CPU readings) fed to the leader as events, as its
agent link would.

One uvicorn server per test worker runs in a thread (``LeaderThread``); each
test gets a fresh ``Leader`` on it (``ScriptedLeader``), with its own data
folder, swapped in as the app's leader. Starting one costs a few milliseconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
from starlette.applications import Starlette

import server.console_link
from farmtui.protocol import (
    AgentHello,
    ChunkFinished,
    ConsoleToLeader,
    GpuInfo,
    JobDetail,
    JobSpec,
    JobView,
    NodeView,
    Snapshot,
    Timeouts,
)
from server.config import LeaderConfig, LeaderSettings
from server.handshakes import LeaderServer
from server.leader import Leader
from server.main import uvicorn_config
from server.model import Changes

T = TypeVar("T")

T0 = 1_700_000_000.0  # the farm's first moment; its clock stands at NOW once scripted
NOW = T0 + 1000.0
CALL_TIMEOUT = 30.0
# Updates reach a console as fast as the test can read them; the script's clock jumps
# (a chunk renders in one step) never make a node lost.
CONFIG = LeaderConfig(console_updates_per_second=200.0, node_timeout=1e9)


class FarmClock:
    """The leader's clock: stands still unless the script moves it."""

    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class RecordingLink(server.console_link.ConsoleLink):
    """The real console link, noting each request it serves (what the console sent)."""

    async def handle(self, message: ConsoleToLeader) -> None:
        RECEIVED.setdefault(id(self.leader), []).append(message)
        await super().handle(message)


RECEIVED: dict[int, list[ConsoleToLeader]] = {}


class LeaderThread:
    """A uvicorn server on its own event loop and thread, for a whole test worker."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.loop = asyncio.new_event_loop()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self.sock = sock
        self.port: int = sock.getsockname()[1]
        settings = LeaderSettings(
            data=base / "boot" / "data", root=base / "boot" / "root", port=self.port, config=CONFIG
        )
        self.server = LeaderServer(uvicorn_config(settings, log_config=False))
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.serving = asyncio.run_coroutine_threadsafe(
            self.server.serve(sockets=[sock]), self.loop
        )
        self._wait_healthy()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def app(self) -> Starlette:
        app = self.server.config.loaded_app
        while not isinstance(app, Starlette):  # uvicorn wraps it in middleware
            app = app.app
        return app

    def _wait_healthy(self) -> None:
        import time

        deadline = time.monotonic() + 20
        while True:
            if self.serving.done():
                self.serving.result()  # the start-up error
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{self.url}/healthz", timeout=1.0).status_code == 200:
                    return
            if time.monotonic() > deadline:
                raise TimeoutError("the leader thread did not come up")
            time.sleep(0.02)  # between polls of a condition, not a wait for one

    def call(self, function: Callable[[], T]) -> T:
        """Run ``function`` on the leader's loop (where the leader lives) and return its result."""

        async def inside() -> T:
            return function()

        return self.wait(inside())

    def wait(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(CALL_TIMEOUT)

    def close(self) -> None:
        self.server.should_exit = True
        with contextlib.suppress(Exception):
            self.serving.result(CALL_TIMEOUT)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(CALL_TIMEOUT)
        self.loop.close()
        self.sock.close()


class ScriptedLeader:
    """A fresh real leader on the worker's server; see the module docstring."""

    def __init__(self, host: LeaderThread, data: Path) -> None:
        self.host = host
        self.clock = FarmClock()
        settings = LeaderSettings(
            data=data / "data", root=data / "root", port=host.port, config=CONFIG, clock=self.clock
        )
        self.leader: Leader = host.wait(self._start(settings))
        self.received = RECEIVED.setdefault(id(self.leader), [])
        self.token = self.leader.admin_token
        self._gate: Gate | None = None

    async def _start(self, settings: LeaderSettings) -> Leader:
        leader = Leader(settings)
        await leader.start()
        self.host.app.state.leader = leader
        return leader

    def close(self) -> None:
        if self._gate is not None:
            self.host.wait(self._gate.close())
        self.host.wait(self.leader.stop())
        RECEIVED.pop(id(self.leader), None)

    @property
    def url(self) -> str:
        """Where a console reaches this leader (through the gate, if one was opened)."""
        if self._gate is not None:
            return f"http://127.0.0.1:{self._gate.port}"
        return self.host.url

    # --- the leader's own entry points ---------------------------------------------
    def run(self, step: Callable[[float], Changes], *, dispatch: bool = True) -> Changes:
        """One event through ``Leader.run``: the scheduler, dispatch, commit, announce."""
        return self.host.call(lambda: self.leader.run(step, dispatch=dispatch))

    def call(self, function: Callable[[], T]) -> T:
        return self.host.call(function)

    def job(self, job_id: str) -> JobView:
        return self.call(lambda: self.leader.scheduler.job_view(job_id))

    def detail(self, job_id: str) -> JobDetail:
        return self.call(lambda: self.leader.scheduler.job_detail(job_id))

    def node(self, name: str) -> NodeView:
        view = self.call(lambda: self.leader.node_view(name))
        assert view is not None, name
        return view

    def order(self) -> list[str]:
        """Active jobs in the leader's dispatch order."""
        views = self.call(lambda: self.leader.scheduler.job_views(include_archived=False))
        return [view.id for view in views]

    def snapshot(self, include_archived: bool = False) -> Snapshot:
        """What the leader sends a console of the admin first."""
        scheduler = self.leader.scheduler
        return self.call(
            lambda: Snapshot(
                user="admin",
                role="admin",
                jobs=scheduler.job_views(include_archived),
                nodes=scheduler.node_views(),
            )
        )

    def event(self, level: str, text: str, actor: str | None = None) -> None:
        """A farm event, published as the leader publishes every event."""

        def step(now: float) -> Changes:
            changes = Changes()
            changes.event(now, level, text, None, actor)  # type: ignore[arg-type]
            return changes

        self.run(step, dispatch=False)

    def touch(self, job_id: str, **fields: Any) -> None:
        """Change a job's record outside the rules (a job from an older leader), and publish it."""

        def step(now: float) -> Changes:
            job = self.leader.scheduler.jobs[job_id]
            for name, value in fields.items():
                setattr(job, name, value)
            changes = Changes()
            changes.jobs.add(job_id)
            return changes

        self.run(step, dispatch=False)

    def user_token(self, name: str) -> str:
        return self.call(lambda: self.leader.tokens.create("user", name))

    def count(self, kind: type) -> int:
        return sum(1 for message in self.received if isinstance(message, kind))

    def last(self, kind: type) -> ConsoleToLeader:
        return next(m for m in reversed(self.received) if isinstance(m, kind))

    # --- what agents and operators would do -------------------------------------------
    def submit(self, job_id: str, name: str, owner: str, **spec: Any) -> None:
        spec.setdefault("renderer", "blender")
        spec.setdefault("scene", f"/proj/{name}.blend")
        spec.setdefault("output", f"renders/{name}/frame_####.png")
        job_spec = JobSpec(name=name, owner=owner, **spec)
        self.run(lambda now: self.leader.scheduler.submit(job_id, job_spec, owner, now))

    def connect(
        self,
        name: str,
        slots: int,
        cpu: float = 0.0,
        memory: float = 0.0,
        gpus: list[GpuInfo] | None = None,
        **hello: Any,
    ) -> None:
        """A node's agent says hello (then its first reading)."""
        agent = AgentHello(name=name, slots=slots, gpus=gpus or [], **hello)
        self.run(lambda now: self.leader.scheduler.node_connected(agent, now)[0])
        self.reading(name, cpu, memory)

    def reading(self, name: str, cpu: float, memory: float) -> None:
        self.run(lambda now: self.leader.scheduler.node_heartbeat(name, cpu, memory, now))

    def action(self, action: Any, job_ids: list[str], actor: str = "admin") -> None:
        self.run(lambda now: self.leader.scheduler.job_action(job_ids, action, actor, now))

    def chunk_action(self, job_id: str, action: Any, chunks: list[int]) -> None:
        self.run(
            lambda now: self.leader.scheduler.chunk_action(job_id, chunks, action, "admin", now)
        )

    def running(self, job_id: str, chunk: int) -> tuple[str, int]:
        """The node and attempt a dispatched chunk runs as."""
        view = self.call(lambda: self.leader.scheduler.chunk_view(job_id, chunk))
        assert view.state == "assigned", (job_id, chunk, view.state)
        assert view.node is not None
        return view.node, view.attempt

    def start(self, job_id: str, chunk: int, lines: int = 3) -> None:
        """The agent starts a dispatched chunk and prints ``lines`` lines."""
        node, attempt = self.running(job_id, chunk)
        self.run(lambda now: self.leader.scheduler.chunk_started(node, job_id, chunk, attempt, now))
        self.output(
            job_id, chunk, attempt, [output_line(job_id, chunk, attempt, i) for i in range(lines)]
        )

    def agent_log(self, node: str, lines: list[str]) -> None:
        """Lines of a node's own agent log, as its link would forward them."""
        self.call(lambda: self.leader.nodelogs.append(node, lines))

    def output(self, job_id: str, chunk: int, attempt: int, lines: list[str]) -> None:
        self.call(lambda: self.leader.output((job_id, chunk, attempt), lines))

    def stage(self, job_id: str, chunk: int, frames: list[int]) -> None:
        node, attempt = self.running(job_id, chunk)
        self.run(
            lambda now: self.leader.scheduler.frames_written(
                node, job_id, chunk, attempt, frames, True, now
            )
        )

    def finish(self, job_id: str, chunk: int, outcome: str = "done", took: float = 42.0) -> None:
        """The agent reports a started chunk ended after ``took`` seconds; the clock moves on."""
        node, attempt = self.running(job_id, chunk)
        started = self.clock.now
        self.clock.now += took
        if outcome != "done":
            self.output(job_id, chunk, attempt, [f"Error: chunk {chunk} ran out of memory"])
        report = ChunkFinished(
            job_id=job_id,
            chunk=chunk,
            attempt=attempt,
            outcome=outcome,  # type: ignore[arg-type]
            exit_status="0" if outcome == "done" else "1",
            started=started,
            finished=self.clock.now,
        )
        self.run(lambda now: self.leader.scheduler.chunk_finished(node, report, now))

    def render(self, job_id: str, chunk: int, outcome: str = "done", took: float = 42.0) -> None:
        self.start(job_id, chunk)
        self.finish(job_id, chunk, outcome, took)

    # --- the link ---------------------------------------------------------------
    def open_gate(self) -> None:
        """Consoles reach the leader through a gate that ``cut`` and ``mend`` (re)connect."""
        self._gate = self.host.wait(Gate.open(self.host.port))

    def cut(self) -> None:
        """The network between consoles and leader goes down (the leader runs on)."""
        assert self._gate is not None
        self.host.wait(self._gate.close())

    def mend(self) -> None:
        assert self._gate is not None
        self.host.wait(self._gate.reopen())

    def freeze(self, frozen: bool = True) -> None:
        """The leader says nothing any more, with every connection left open (or again)."""
        assert self._gate is not None
        self._gate.frozen = frozen


def output_line(job_id: str, chunk: int, attempt: int, i: int) -> str:
    """What attempt ``attempt`` of a chunk printed, line ``i``."""
    return f"chunk {chunk} of {job_id} attempt {attempt}: line {i}"


class Gate:
    """A TCP relay in front of the leader that can be cut and mended on the same port."""

    def __init__(self, target: int, port: int = 0) -> None:
        self.target = target
        self.port = port
        self.server: asyncio.Server | None = None
        self.writers: set[asyncio.StreamWriter] = set()
        # Frozen: connections stay open and everything sent is dropped (a SIGSTOPped leader).
        self.frozen = False

    @classmethod
    async def open(cls, target: int) -> Gate:
        gate = cls(target)
        await gate.reopen()
        return gate

    async def reopen(self) -> None:
        self.server = await asyncio.start_server(
            self._relay, "127.0.0.1", self.port, reuse_address=True
        )
        self.port = self.server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            for writer in list(self.writers):
                writer.transport.abort()
            await self.server.wait_closed()
            self.server = None

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target)
        self.writers |= {writer, up_writer}

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, ConnectionError):
                while data := await source.read(65536):
                    if not self.frozen:
                        sink.write(data)
                        await sink.drain()
            sink.transport.abort()

        try:
            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        finally:
            self.writers -= {writer, up_writer}


# --- the farm every stand-in test starts from -------------------------------------------

# Job j1 ends up showing every frame state (chunks of 10 frames, indices from 0).
J1_CHUNKS = {
    "done": [0, 1, 2],
    "assigned": [3],  # frames 31-35 written (staged), 36-40 rendering
    "failed": [4],
    "held": [5],
    "excluded": [6],
    "queued": [7, 8, 9],
}


def standard_farm(farm: ScriptedLeader) -> None:
    """Three nodes and six jobs (in this dispatch order), made by the leader's own
    rules from operators' actions and agents' reports:

    ==  ===============  =====  ===  ================================================
    j1  shot_010_comp    alice   10  rendering, one chunk at a time: every frame state
    j2  shot_020_light   bob     50  queued: waits on j1 (``after``)
    j3  shot_030_fx      carol   50  failed: chunks 0-1 done, 2-3 failed (no retries)
    j4  shot_040_anim    alice   50  paused after its first chunk
    j5  turntable        dave    80  done
    j6  old_preview      bob     50  done and archived
    ==  ===============  =====  ===  ================================================

    j1's chunks of 10 frames are in ``J1_CHUNKS``. node-a (4 slots, tag gpu)
    runs j1's chunk 3; node-b (2 slots) is idle; node-c is disabled. The
    clock then stands at ``NOW``.
    """
    farm.submit(
        "j1",
        "shot_010_comp",
        "alice",
        frames="1-100",
        chunk=10,
        priority=10,
        tags=["gpu"],
        max_running=1,
        retries=0,
        timeouts=Timeouts(max_render=3600.0, on_timeout="requeue"),
    )
    farm.submit("j2", "shot_020_light", "bob", frames="1-50", chunk=5, after=["j1"])
    farm.submit("j3", "shot_030_fx", "carol", frames="1-20", chunk=5, retries=0)
    farm.submit("j4", "shot_040_anim", "alice", frames="1-30", chunk=10, max_running=1)
    farm.submit("j5", "turntable", "dave", frames="1-24", chunk=8, priority=80)
    farm.submit("j6", "old_preview", "bob", frames="1-10", chunk=10)
    # Each job is let go in its turn, so the script knows what runs where.
    farm.action("hold", ["j1", "j3", "j4"])
    farm.connect(
        "node-a",
        4,
        cpu=87.0,
        memory=41.0,
        cpu_count=16,
        memory_total=64 * 2**30,
        tags=["gpu", "linux"],
        version="1.4.2",
    )
    farm.connect("node-b", 2, cpu=3.0, memory=12.0, cpu_count=8, memory_total=32 * 2**30)
    for job_id, chunks in (("j6", (0,)), ("j5", (0, 1, 2))):
        for chunk in chunks:
            farm.render(job_id, chunk)
    farm.action("archive", ["j6"], "bob")

    farm.action("unhold", ["j3"], "carol")
    for chunk, outcome in ((0, "done"), (1, "done"), (2, "failed"), (3, "failed")):
        farm.render("j3", chunk, outcome)

    farm.action("unhold", ["j4"], "alice")
    farm.start("j4", 0)
    farm.action("pause", ["j4"], "alice")
    farm.finish("j4", 0)

    # j1 on node-a alone (its gpu tag), one chunk at a time: held chunks wait their turn.
    farm.chunk_action("j1", "hold", [3, 5, 7, 8, 9])
    farm.chunk_action("j1", "exclude", [6])
    farm.action("unhold", ["j1"], "alice")
    # 2, 4.2 and 10 s a frame (the heat map's range); chunk 4 fails.
    for chunk, outcome, took in (
        (0, "done", 20),
        (1, "done", 42),
        (2, "done", 100),
        (4, "failed", 48),
    ):
        farm.render("j1", chunk, outcome, took)
    farm.chunk_action("j1", "retry", [3])  # runs now; 7-9 wait behind it (max_running 1)
    farm.start("j1", 3)
    farm.stage("j1", 3, [31, 32, 33, 34, 35])
    farm.chunk_action("j1", "retry", [7, 8, 9])

    farm.connect("node-c", 2, cpu_count=8, memory_total=32 * 2**30)
    farm.run(lambda now: farm.leader.scheduler.set_node_enabled("node-c", False, "admin", now))
    farm.clock.now = NOW
    for name in ("node-a", "node-b", "node-c"):
        farm.agent_log(name, [f"{name}: agent started", f"{name}: connected to leader"])
    # Heard from just now (the leader's tick would call a silent node lost).
    for name, cpu, memory in (("node-a", 87.0, 41.0), ("node-b", 3.0, 12.0), ("node-c", 0.0, 0.0)):
        farm.reading(name, cpu, memory)


@contextlib.contextmanager
def scripted(host: LeaderThread, data: Path, farm: bool = True) -> Iterator[ScriptedLeader]:
    leader = ScriptedLeader(host, data)
    try:
        if farm:
            standard_farm(leader)
        yield leader
    finally:
        leader.close()


@contextlib.contextmanager
def recording_links() -> Iterator[None]:
    """Consoles are served by ``RecordingLink`` (the real link, which notes requests)."""
    original = server.console_link.ConsoleLink
    server.console_link.ConsoleLink = RecordingLink  # type: ignore[misc]
    try:
        yield
    finally:
        server.console_link.ConsoleLink = original  # type: ignore[misc]


__all__ = [
    "NOW",
    "T0",
    "LeaderThread",
    "ScriptedLeader",
    "output_line",
    "scripted",
    "standard_farm",
]
