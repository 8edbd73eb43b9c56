"""Shared pieces for the agent tests: a recording reporter, a supervisor on tmp folders,
assignments, and a polling helper (never sleep to wait for something)."""

from __future__ import annotations

import asyncio
import os
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest

from agent.process_tree import become_subreaper
from agent.staging import ROOT_ID_FILE, CopyToSyncRoot
from agent.supervisor import Storage, Supervisor
from farmtui.protocol import AgentToLeader, AssignChunk, ChunkFinished, ChunkTimeouts
from farmtui.renderers import build_argv

M = TypeVar("M")

# The repository's root: what a test's own Python processes import from.
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session", autouse=True)
def _subreaper() -> None:
    # Detached helpers of the renderers under test come back to this process.
    become_subreaper()


async def poll_until(
    condition: Callable[[], Any], *, within: float = 10.0, what: str = "condition"
) -> Any:
    """Poll ``condition`` until it is truthy and return its value, or fail after ``within`` s."""
    deadline = time.monotonic() + within
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {within} s waiting for {what}")
        await asyncio.sleep(0.01)


class BrokenFiler:
    """A delivery to a sync root that is full: every copy fails (its output kept)."""

    async def deliver(self, relative: str, source: Path, fence: Any) -> None:
        raise OSError("disk full")


async def kill_9_when(script: str, args: list[str], sign: Path, *, within: float = 30.0) -> None:
    """Run ``script`` (Python, with the repository importable) as a process of its own
    until ``sign`` exists, then SIGKILL it: nothing of an agent's clean-up runs."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        script,
        *args,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        await poll_until(sign.exists, within=within, what=f"{sign.name} to appear")
    finally:
        process.kill()
        await process.wait()


@dataclass
class Recorder:
    """A Reporter that keeps every message, for assertions."""

    messages: list[AgentToLeader] = field(default_factory=list)

    def send(self, message: AgentToLeader) -> None:
        self.messages.append(message)

    def of(self, kind: type[M]) -> list[M]:
        return [m for m in self.messages if isinstance(m, kind)]

    def finished(self) -> ChunkFinished | None:
        found = self.of(ChunkFinished)
        return found[-1] if found else None

    def output(self) -> list[str]:
        from farmtui.protocol import ChunkOutput

        return [line for m in self.of(ChunkOutput) for line in m.lines]


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class Farm:
    sync_root: Path
    staging: Path
    recorder: Recorder
    supervisor: Supervisor
    clock: FakeClock | None = None

    async def finish(self, within: float = 20.0) -> ChunkFinished:
        result: ChunkFinished = await poll_until(
            self.recorder.finished, within=within, what="ChunkFinished"
        )
        await poll_until(lambda: not self.supervisor.runs, what="the chunk to end")
        return result


def demo_assign(
    frames: list[int],
    *,
    chunk: int = 1,
    attempt: int = 1,
    extra: list[str] | None = None,
    staging: bool = True,
    timeouts: ChunkTimeouts | None = None,
    argv: list[str] | None = None,
    pattern: str = "renders/shot/frame_####.png",
    seconds_per_frame: float = 0.02,
    renderer: str = "demo",
) -> AssignChunk:
    from farmtui.frames import frame_path

    command = argv or build_argv(
        "demo", None, pattern, ["--seconds-per-frame", str(seconds_per_frame), *(extra or [])]
    )
    return AssignChunk(
        job_id="job1",
        chunk=chunk,
        attempt=attempt,
        renderer=renderer,
        argv=command,
        frames=frames,
        outputs=[frame_path(pattern, f) for f in frames],
        outdir=str(Path(pattern).parent),
        output=pattern,
        staging=staging,
        timeouts=timeouts or ChunkTimeouts(),
    )


def make_sync_root(path: Path, root_id: str = "root-123") -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / ROOT_ID_FILE).write_text(root_id + "\n")
    return path


@pytest.fixture
async def farm(tmp_path: Path) -> AsyncIterator[Farm]:
    root = make_sync_root(tmp_path / "sync")
    recorder = Recorder()
    supervisor = Supervisor(
        recorder,
        # Unique per test: another pytest run on this machine sweeps its own markers only.
        agent_id=f"test{uuid.uuid4().hex[:8]}",
        staging_root=tmp_path / "staging",
        storage=Storage(sync_root=root, delivery=CopyToSyncRoot(root)),
        kill_grace=0.3,
    )
    yield Farm(root, tmp_path / "staging", recorder, supervisor)
    await supervisor.kill_all("the test is over")  # nothing outlives a failed test


@pytest.fixture
def clocked_farm(farm: Farm) -> Farm:
    clock = FakeClock()
    farm.supervisor.clock = clock
    farm.clock = clock
    return farm


@pytest.fixture
def eventually() -> Callable[..., Any]:
    """``await eventually(lambda: ..., within=5, what="...")``: poll with a deadline."""
    return poll_until


@pytest.fixture
def demo_chunk() -> Callable[..., AssignChunk]:
    """Build an AssignChunk for the demo renderer (see demo_assign)."""
    return demo_assign


@pytest.fixture
def python() -> str:
    return sys.executable
