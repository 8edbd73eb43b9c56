"""The agent against a fake leader on loopback that speaks the real protocol."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import stat
import subprocess
import sys
import tempfile
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from http import HTTPStatus
from pathlib import Path
from typing import Any, TypeVar

import psutil
import pytest
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.http11 import Request, Response

from agent import agent_log, discards
from agent.chunk_delivery import KEPT_MARK
from agent.copy_records import RECORDS, temporary_name
from agent.errors import LeaderRefused
from agent.link import LeaderLink
from agent.main import Agent, agent_id, default_staging_dir, lock_state, run_agent
from agent.outbox import Outbox
from farmtui.protocol import (
    AGENT_EXIT_REFUSED,
    Ack,
    AgentHello,
    AgentLog,
    AgentToLeader,
    AssignChunk,
    ChunkFinished,
    ChunkRef,
    ChunkStarted,
    DiscardStaged,
    FramesWritten,
    Heartbeat,
    KeptStaged,
    KillChunk,
    LeaderToAgent,
    LeaseRenewed,
    Refused,
    Welcome,
    agent_to_leader,
    encode,
)
from farmtui.protocol.records import MAX_KEPT_LISTED

M = TypeVar("M")
TOKEN = "agent-secret"


class FakeLeader:
    """A websockets server on 127.0.0.1 that welcomes agents, records and acknowledges."""

    def __init__(
        self,
        sync_root: Path,
        *,
        auto_ack: bool = True,
        refuse: str | None = None,
        lease: float = 15.0,
        stale: list[ChunkRef] | None = None,
        kept_pages: bool = True,
    ) -> None:
        self.sync_root = sync_root
        self.kept_pages = kept_pages
        self.auto_ack = auto_ack
        self.refuse = refuse
        # Refusals that may pass (disk full, name held) still to answer.
        self.busy = 0
        self.lease = lease
        # Answer heartbeats as the leader does; off: a leader that is there but stalled.
        self.renew_leases = True
        self.stale = stale or []
        self.received: list[AgentToLeader] = []
        self.hellos: list[AgentHello] = []
        self.connection: ServerConnection | None = None
        self.server: Server | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def check_token(self, connection: ServerConnection, request: Request) -> Response | None:
        if request.path != "/ws/agent":
            return connection.respond(HTTPStatus.NOT_FOUND, "no such endpoint\n")
        if request.headers.get("Authorization") != f"Bearer {TOKEN}":
            return connection.respond(HTTPStatus.UNAUTHORIZED, "wrong token\n")
        return None

    async def handler(self, connection: ServerConnection) -> None:
        hello = agent_to_leader.decode(await connection.recv())
        assert isinstance(hello, AgentHello)
        self.hellos.append(hello)
        if self.busy:
            self.busy -= 1
            await self.send_to(connection, Refused(error="the disk is full", retry=True))
            return
        if self.refuse:
            await self.send_to(connection, Refused(error=self.refuse))
            return
        welcome = Welcome(
            node=hello.name,
            heartbeat_interval=0.2,
            sync_root=str(self.sync_root),
            root_id="root-123",
            lease=self.lease,
            stale=self.stale,
            kept_pages=self.kept_pages,
        )
        await self.send_to(connection, welcome)
        self.connection = connection
        async for data in connection:
            message = agent_to_leader.decode(data)
            self.received.append(message)
            if isinstance(message, Heartbeat) and message.beat and self.renew_leases:
                await self.send_to(connection, LeaseRenewed(beat=message.beat))
            if message.seq and self.auto_ack:
                await self.send_to(connection, Ack(seq=message.seq))

    async def send_to(self, connection: ServerConnection, message: LeaderToAgent) -> None:
        await connection.send(encode(message).decode())

    async def send(self, message: LeaderToAgent) -> None:
        assert self.connection is not None
        await self.send_to(self.connection, message)

    async def start(self) -> None:
        self.server = await serve(
            self.handler, "127.0.0.1", self.port, process_request=self.check_token
        )
        self.port = self.server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()
        self.connection = None

    def of(self, kind: type[M]) -> list[M]:
        return [m for m in self.received if isinstance(m, kind)]

    def finished(self) -> list[ChunkFinished]:
        return self.of(ChunkFinished)


def _sync_root(tmp_path: Path) -> Path:
    root = tmp_path / "sync"
    root.mkdir(exist_ok=True)
    (root / ".farmtui-root").write_text("root-123\n")
    return root


@pytest.fixture
async def leader(tmp_path: Path) -> AsyncIterator[FakeLeader]:
    fake = FakeLeader(_sync_root(tmp_path))
    await fake.start()
    yield fake
    if fake.server is not None:
        await fake.stop()


AgentStarter = Callable[..., contextlib.AbstractAsyncContextManager[Agent]]


@pytest.fixture
def running_agent(tmp_path: Path) -> AgentStarter:
    """``async with running_agent(url) as agent``: an agent task, cancelled on exit."""

    @contextlib.asynccontextmanager
    async def start(url: str, token: str = TOKEN, state: str = "state") -> AsyncIterator[Agent]:
        agent = Agent(
            url,
            token,
            name="node1",
            slots=2,
            tags=["gpu"],
            staging=tmp_path / "staging",
            state_dir=tmp_path / state,
            log_to_stderr=False,
        )
        task = asyncio.create_task(agent.run())
        try:
            yield agent
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    return start


def _assign(frames: list[int], *extra: str, chunk: int = 1) -> AssignChunk:
    pattern = "renders/frame_####.png"
    return AssignChunk(
        job_id="job1",
        chunk=chunk,
        attempt=1,
        renderer="demo",
        argv=[
            "python3",
            "-m",
            "farmtui.demo_render",
            "--frames",
            "{frames}",
            "--output",
            "{output}",
            "--seconds-per-frame",
            "0.01",
            *extra,
        ],
        frames=frames,
        outputs=[f"renders/frame_{f:04d}.png" for f in frames],
        outdir="renders",
        output=pattern,
    )


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


async def test_agent_says_hello_renders_a_chunk_and_reports_with_sequence_numbers(
    leader: FakeLeader, running_agent: AgentStarter, eventually: Any
) -> None:
    async with running_agent(leader.url) as agent:
        await eventually(lambda: leader.connection, what="the agent to connect")
        hello = leader.hellos[0]
        assert (hello.name, hello.slots, hello.tags) == ("node1", 2, ["gpu"])
        assert hello.cpu_count > 0
        assert hello.memory_total > 0
        assert hello.running == []

        await leader.send(_assign([1, 2, 3]))
        finished = (await eventually(leader.finished, what="ChunkFinished"))[0]
        assert finished.outcome == "done", finished.reason

        reliable = [m for m in leader.received if m.seq]
        assert [type(m).__name__ for m in reliable][0] == "ChunkStarted"
        assert [m.seq for m in reliable] == list(range(1, len(reliable) + 1))
        copied = [f for m in leader.of(FramesWritten) if not m.staged for f in m.frames]
        assert sorted(copied) == [1, 2, 3]
        assert (leader.sync_root / "renders/frame_0003.png").stat().st_size > 0
        await eventually(lambda: agent.outbox.pending() == [], what="the outbox to drain")
        await eventually(lambda: leader.of(Heartbeat), what="a heartbeat")
        logs = await eventually(
            lambda: [line for m in leader.of(AgentLog) for line in m.lines if "started" in line],
            what="the agent log",
        )
        assert "chunk job1:1:1:" in logs[0]
    written = (agent.state_dir / "agent.log").read_text()
    assert written.count("chunk job1:1:1:") >= 2  # its start and its end, each once
    assert written.count("started pid") == 1


async def test_kill_chunk_kills_the_renderer_tree(
    leader: FakeLeader, running_agent: AgentStarter, eventually: Any
) -> None:
    async with running_agent(leader.url):
        await eventually(lambda: leader.connection, what="the agent to connect")
        await leader.send(_assign([1], "--hang"))
        started = (await eventually(lambda: leader.of(ChunkStarted), what="ChunkStarted"))[0]
        assert _alive(started.pid)
        await leader.send(KillChunk(job_id="job1", chunk=1, attempt=1, reason="cancelled"))
        finished = (await eventually(leader.finished, what="ChunkFinished"))[0]
        assert finished.outcome == "killed"
        assert finished.reason == "cancelled"
        assert not _alive(started.pid)


def test_a_wrong_token_stops_run_agent_with_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # run_agent blocks in this thread, as under `farm agent`; the leader runs in another.
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    fake = FakeLeader(_sync_root(tmp_path))
    asyncio.run_coroutine_threadsafe(fake.start(), loop).result(timeout=10)
    try:
        with pytest.raises(SystemExit) as caught:
            run_agent(
                fake.url,
                "wrong",
                "node1",
                staging=tmp_path / "staging",
                state_dir=tmp_path / "state",
            )
    finally:
        asyncio.run_coroutine_threadsafe(fake.stop(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()
    # Its own exit status: its service unit does not start it again (RestartPreventExitStatus).
    assert caught.value.code == AGENT_EXIT_REFUSED
    assert capsys.readouterr().err.splitlines()[-1] == (
        "farm agent: the leader refused the agent token (HTTP 401) at "
        f"ws://127.0.0.1:{fake.port}/ws/agent"
    )
    assert fake.hellos == []


async def test_a_refused_message_stops_the_agent(leader: FakeLeader, tmp_path: Path) -> None:
    leader.refuse = "node name node1 is taken"
    agent = Agent(
        leader.url,
        TOKEN,
        name="node1",
        state_dir=tmp_path / "state",
        staging=tmp_path / "staging",
        log_to_stderr=False,
    )
    with pytest.raises(LeaderRefused, match="node name node1 is taken"):
        await asyncio.wait_for(agent.run(), timeout=20)
    assert len(leader.hellos) == 1, "no retry after a refusal"


async def test_a_refusal_that_may_pass_is_tried_again(
    leader: FakeLeader, running_agent: AgentStarter, eventually: Any
) -> None:
    leader.busy = 2
    async with running_agent(leader.url):
        await eventually(lambda: leader.connection, what="the third hello to be welcome")
    assert len(leader.hellos) == 3
    assert leader.hellos[0].agent_id, "the agent says who it is"
    assert {h.agent_id for h in leader.hellos} == {leader.hellos[0].agent_id}


async def test_reconnect_after_a_leader_restart_resends_what_was_not_acknowledged(
    leader: FakeLeader, running_agent: AgentStarter, eventually: Any
) -> None:
    leader.auto_ack = False
    async with running_agent(leader.url) as agent:
        await eventually(lambda: leader.connection, what="the agent to connect")
        await leader.send(_assign([1, 2]))
        await eventually(leader.finished, what="ChunkFinished")
        unacked = [m.seq for m in agent.outbox.pending()]
        assert unacked, "nothing was acknowledged"

        await leader.stop()
        leader.received.clear()
        leader.auto_ack = True
        await leader.start()

        await eventually(lambda: len(leader.hellos) == 2, what="the reconnect")
        await eventually(lambda: agent.outbox.pending() == [], what="the resend")
        assert [m.seq for m in leader.received if m.seq] == unacked
        assert leader.finished()[0].outcome == "done"


async def test_the_outbox_survives_an_agent_restart(
    leader: FakeLeader, running_agent: AgentStarter, eventually: Any
) -> None:
    leader.auto_ack = False
    async with running_agent(leader.url) as agent:
        await eventually(lambda: leader.connection, what="the agent to connect")
        await leader.send(_assign([4]))
        await eventually(leader.finished, what="ChunkFinished")
        unacked = [m.seq for m in agent.outbox.pending()]

    leader.received.clear()
    leader.auto_ack = True
    async with running_agent(leader.url) as restarted:
        await eventually(lambda: restarted.outbox.pending() == [], what="the resend")
        assert [m.seq for m in leader.received if m.seq] == unacked
        assert leader.finished()[0].outcome == "done"


async def test_cut_off_past_the_lease_kills_running_chunks(
    leader: FakeLeader, running_agent: AgentStarter, eventually: Any
) -> None:
    leader.lease = 1.0
    async with running_agent(leader.url):
        await eventually(lambda: leader.connection, what="the agent to connect")
        await leader.send(_assign([1], "--hang"))
        started = (await eventually(lambda: leader.of(ChunkStarted), what="ChunkStarted"))[0]
        await leader.stop()
        await eventually(lambda: not _alive(started.pid), what="the lease kill", within=10)

        leader.received.clear()
        await leader.start()
        finished = (await eventually(leader.finished, what="the killed report"))[0]
        assert finished.outcome == "killed"
        assert finished.reason.startswith("the lease ran out")


async def test_stale_chunks_in_welcome_are_killed(
    leader: FakeLeader, running_agent: AgentStarter, eventually: Any
) -> None:
    async with running_agent(leader.url):
        await eventually(lambda: leader.connection, what="the agent to connect")
        await leader.send(_assign([1], "--hang"))
        started = (await eventually(lambda: leader.of(ChunkStarted), what="ChunkStarted"))[0]

        await leader.stop()
        leader.stale = [ChunkRef(job_id="job1", chunk=1, attempt=1)]
        await leader.start()
        await eventually(lambda: len(leader.hellos) == 2, what="the reconnect")
        [held] = leader.hellos[1].running
        assert (held.job_id, held.chunk, held.attempt) == ("job1", 1, 1)
        assert held.rendered_for is not None, "its renderer runs"
        finished = (await eventually(leader.finished, what="ChunkFinished"))[0]
        assert finished.outcome == "killed"
        assert not _alive(started.pid)


@pytest.mark.parametrize("pages", [True, False], ids=["leader-reads-pages", "older-leader"])
async def test_kept_output_past_what_a_hello_lists_follows_it_in_pages(
    tmp_path: Path, running_agent: AgentStarter, eventually: Any, pages: bool
) -> None:
    """A hello lists ``MAX_KEPT_LISTED`` kept outputs; the rest were never listed while
    those stayed, and what no chunk waited for stayed on the node's disk."""
    staging = tmp_path / "staging"
    every = {("jobA", n, 1) for n in range(MAX_KEPT_LISTED + 300)}
    for job, chunk, attempt in every:
        folder = staging / job / f"{chunk}.{attempt}"
        folder.mkdir(parents=True)
        (folder / KEPT_MARK).touch()
    leader = FakeLeader(_sync_root(tmp_path), kept_pages=pages)
    await leader.start()
    try:
        async with running_agent(leader.url):
            await eventually(lambda: leader.hellos, what="the hello")
            listed = {(r.job_id, r.chunk, r.attempt) for r in leader.hellos[0].kept}
            assert len(listed) == MAX_KEPT_LISTED
            if pages:
                await eventually(
                    lambda: sum(len(m.kept) for m in leader.of(KeptStaged)) == 300,
                    what="the kept outputs the hello could not list",
                )
            else:  # a leader that does not read them: nothing it would refuse
                await eventually(lambda: leader.of(Heartbeat), what="a heartbeat")
                assert leader.of(KeptStaged) == []
        paged = [(r.job_id, r.chunk, r.attempt) for m in leader.of(KeptStaged) for r in m.kept]
        if pages:
            assert len(paged) == 300
            assert listed | set(paged) == every
    finally:
        await leader.stop()


async def test_kept_output_is_deleted_off_the_loop_which_keeps_its_heartbeats(
    leader: FakeLeader,
    running_agent: AgentStarter,
    eventually: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A node told to delete thousands of kept outputs (after a long outage of the sync
    root) deleted them on its event loop: seconds without a heartbeat or a lease renewal.
    Here the disk takes as long as the test likes to delete one."""
    folder = tmp_path / "staging" / "jobA" / "3.1"
    folder.mkdir(parents=True)
    (folder / KEPT_MARK).touch()
    deleting, disk_answers = threading.Event(), threading.Event()

    def slow_disk(path: Path) -> None:
        deleting.set()
        disk_answers.wait(60)
        real_remove(path)

    real_remove = discards.remove_entry
    monkeypatch.setattr(discards, "remove_entry", slow_disk)
    async with running_agent(leader.url):
        await eventually(lambda: leader.connection, what="the agent to connect")
        await leader.send(DiscardStaged(job_id="jobA", chunk=3, attempt=1))
        await eventually(deleting.is_set, what="the deletion to begin")
        beats = len(leader.of(Heartbeat))
        try:
            await eventually(
                lambda: len(leader.of(Heartbeat)) >= beats + 3,
                what="heartbeats while the disk deletes",
            )
        finally:
            disk_answers.set()
        await eventually(lambda: not folder.exists(), what="the kept output deleted")


@contextlib.contextmanager
def _idle_agent(name: str, state: Path, staging: Path) -> Iterator[Agent]:
    """An agent made, never run: it holds its state and staging folders' locks."""
    agent = Agent(
        "http://127.0.0.1:9",
        TOKEN,
        name=name,
        state_dir=state,
        staging=staging,
        log_to_stderr=False,
    )
    try:
        yield agent
    finally:
        agent_log.detach(agent._logging)
        os.close(agent._staging_lock)
        os.close(agent._lock)


def _agent_main(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``python -m agent.main`` given a leader nobody answers at and ``args``, to its end."""
    command = [sys.executable, "-m", "agent.main", "--leader", "http://127.0.0.1:9"]
    return subprocess.run(
        [*command, "--token", TOKEN, *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, **(env or {})},
    )


def test_a_second_agent_on_the_same_state_folder_is_refused(tmp_path: Path) -> None:
    with _idle_agent("node1", tmp_path / "state", tmp_path / "staging"):
        done = _agent_main("--name", "node1", "--state", str(tmp_path / "state"))
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        f"farm agent: another agent is running with the state folder {tmp_path / 'state'}; "
        "give each agent its own --state (and --name)"
    ]


def test_a_second_agent_on_the_same_staging_folder_is_refused(tmp_path: Path) -> None:
    """Its start removes the attempt folders a previous run left in staging: on a
    running agent's staging, that agent's live folders went and its chunks failed."""
    live = tmp_path / "staging" / "job1" / "0.1"
    with _idle_agent("node1", tmp_path / "state1", tmp_path / "staging"):
        live.mkdir(parents=True)
        done = _agent_main(
            "--name", "node2", "--state", str(tmp_path / "state2"),
            "--staging", str(tmp_path / "staging"),
        )  # fmt: skip
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        f"farm agent: another agent is running with the staging folder {tmp_path / 'staging'}; "
        "give each agent its own --staging"
    ]
    assert live.is_dir(), "the first agent's attempt folder is left alone"


def test_an_agent_leaves_alone_another_agents_staging_inside_its_own(tmp_path: Path) -> None:
    """Its start-up clean-up took the inner agent's folder for a job's, and removed that
    agent's live attempt folders and kept output."""
    staging = tmp_path / "staging"
    kept = staging / "inner" / "jobA" / "3.1"
    deeper = staging / "sub" / "deeper" / "jobB" / "1.1"
    with (
        _idle_agent("inner", tmp_path / "state-inner", staging / "inner") as inner,
        _idle_agent("deeper", tmp_path / "state-deeper", staging / "sub" / "deeper"),
        _idle_agent("outer", tmp_path / "state-outer", staging) as outer,
    ):
        for folder in (kept, deeper):
            folder.mkdir(parents=True)
            (folder / KEPT_MARK).touch()
        assert outer.supervisor.clean_abandoned_staging() == 0
        assert outer.supervisor.kept_outputs() == []
        assert inner.supervisor.kept_outputs() == [ChunkRef(job_id="jobA", chunk=3, attempt=1)]
    assert kept.is_dir()
    assert deeper.is_dir()


@pytest.mark.parametrize("planted", ["symlink", "other-user"])
def test_a_staging_folder_another_user_planted_in_tmp_is_refused(
    tmp_path: Path, planted: str
) -> None:
    """The default staging is under the temporary folder, which is everyone's: a
    folder (or a symlink) another local user made there first let them swap a
    render's frames for anything this user could read."""
    tmp = tmp_path / "tmp"
    tmp.mkdir(mode=0o1777)
    theirs = tmp / f"farmtui-{os.getuid()}"
    if planted == "symlink":
        (tmp / "attacker").mkdir(mode=0o777)
        theirs.symlink_to(tmp / "attacker")
    else:
        if os.getuid() != 0:
            pytest.skip("making a folder another user owns needs root")
        theirs.mkdir(mode=0o777)
        os.chown(theirs, 65534, 65534)
    done = _agent_main(
        "--name", "node1", "--state", str(tmp_path / "state"), env={"TMPDIR": str(tmp)}
    )
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        f"farm agent: {theirs} is not a folder of this user's own (someone else made it): "
        "remove it, or pass --staging DIR"
    ]
    if planted == "symlink":
        assert not list((tmp / "attacker").iterdir()), "something was made through the symlink"


def test_the_default_staging_folder_is_this_users_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    older = tmp_path / f"farmtui-{os.getuid()}"
    older.mkdir(mode=0o755)  # as an agent before this check made it
    staging = default_staging_dir("node1")
    assert staging == older / "node1" / "staging"
    assert stat.S_IMODE(older.stat().st_mode) == 0o700


def test_the_agents_id_is_for_its_user_alone(tmp_path: Path) -> None:
    """It tells the node's own agent from another claiming its name (break round 33b: the
    file was 0644 in a 0755 folder)."""
    state = tmp_path / "state"
    lock = lock_state(state)
    try:
        made = agent_id(state)
    finally:
        os.close(lock)
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    path = state / "agent-id"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    path.chmod(0o644)  # as an agent before this made it
    assert agent_id(state) == made
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


class _SlowSocket:
    """A leader's socket whose first frame takes a while to go out (a full send buffer)."""

    def __init__(self) -> None:
        self.frames: list[str] = []
        self.first_out = asyncio.Event()

    async def send(self, data: str) -> None:
        if not self.frames:
            self.frames.append(data)
            await self.first_out.wait()
            return
        self.frames.append(data)


async def test_a_leader_never_reached_is_said_so_not_a_link_lost(
    tmp_path: Path, eventually: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """An agent that never reached its leader said "link to ... lost" at every try (break
    round 33c)."""
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]  # nobody listens once it is closed
    link = LeaderLink(
        leader=f"http://127.0.0.1:{port}",
        token="t",
        name="node1",
        slots=1,
        tags=[],
        outbox=Outbox(tmp_path / "outbox"),
    )
    caplog.set_level(logging.WARNING, logger="farmtui.agent")
    running = asyncio.create_task(link.run())
    try:
        await eventually(lambda: "cannot reach the leader at ws://" in caplog.text)
        assert "lost" not in caplog.text
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
        link.outbox.close()


async def test_a_message_queued_while_a_frame_goes_out_is_sent_after_it(
    tmp_path: Path, eventually: Any
) -> None:
    """A report queued while the last frame waited for room in the socket stayed queued
    until the agent next had something to say: a finished chunk's report could wait for
    the next heartbeat."""
    link = LeaderLink(
        leader="http://127.0.0.1:1",
        token="t",
        name="node1",
        slots=1,
        tags=[],
        outbox=Outbox(tmp_path / "outbox"),
    )
    link.welcome = Welcome(node="node1", batches=True)
    ws = _SlowSocket()
    sender = asyncio.create_task(link._sender(ws))  # type: ignore[arg-type]
    try:
        link.send(Heartbeat(beat=1))
        await eventually(lambda: len(ws.frames) == 1, what="the first frame")
        link.send(Heartbeat(beat=2))  # while the first frame is still going out
        ws.first_out.set()
        await eventually(lambda: len(ws.frames) == 2, within=2, what="the second frame")
        assert '"beat":2' in ws.frames[1]
    finally:
        sender.cancel()
        await asyncio.gather(sender, return_exceptions=True)
        link.outbox.close()


async def test_a_welcome_that_shows_the_sync_root_sweeps_the_copies_a_killed_run_left(
    leader: FakeLeader, running_agent: AgentStarter, eventually: Any, tmp_path: Path
) -> None:
    """What an agent killed mid-copy left in the sync root (``agent.copy_records``) goes
    once its next run is welcomed to that sync root, on a thread (the root may hang)."""
    left = temporary_name("frame_0001.png", "89abcdef")
    (leader.sync_root / "renders").mkdir()
    (leader.sync_root / "renders" / left).write_bytes(b"half a frame")
    (tmp_path / "staging" / RECORDS).mkdir(parents=True)
    (tmp_path / "staging" / RECORDS / left).write_text("renders")
    async with running_agent(leader.url) as agent:
        await eventually(lambda: leader.connection, what="the agent to connect")
        await eventually(
            lambda: not (leader.sync_root / "renders" / left).exists(), what="the sweep"
        )
    said = (agent.state_dir / "agent.log").read_text()
    assert "removed 1 copy(ies) a killed run of the agent left unfinished" in said
