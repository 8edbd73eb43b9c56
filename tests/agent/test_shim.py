"""The shim owns a renderer's whole process tree and kills it when asked or when the agent goes."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest

from agent import shim as shim_script
from agent.process_tree import MARKER_VARIABLE, find_marked, kill_tree
from agent.shim_client import Shim, ShimResult, _is_fresh, _runnable_shim, shim_command

REPO = Path(__file__).resolve().parents[2]

# A renderer of 8 processes that each record their pid: the root, 3 branches
# with a leaf each, and a helper that double-forks and calls setsid (After
# Effects' AfterFX), orphaned at once. With "stubborn" all of them ignore SIGTERM.
TREE = textwrap.dedent(
    """
    import os, signal, sys, time
    pids = sys.argv[1]
    if "stubborn" in sys.argv[2:]:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)

    def record():
        with open(os.path.join(pids, str(os.getpid())), "w"):
            pass

    def fork(body):
        if os.fork() == 0:
            try:
                body()
            finally:
                os._exit(0)

    def live():
        record()
        time.sleep(600)

    def branch():
        fork(live)
        live()

    def detach():
        os.setsid()
        fork(live)

    for _ in range(3):
        fork(branch)
    fork(detach)
    live()
    """
)
TREE_SIZE = 8

# An agent in miniature: starts a renderer under a shim, says who is who, then
# hangs until the test kills it with SIGKILL.
AGENT = textwrap.dedent(
    """
    import asyncio, math, os, sys
    from agent.shim_client import Shim

    async def main():
        report, marker, argv = sys.argv[1], sys.argv[2], sys.argv[3:]
        env = {**os.environ, "FARMTUI_CHUNK": marker}
        shim = await Shim.start(argv, cwd=".", env=env, grace=30.0, lease_until=math.inf)
        with open(report + ".tmp", "w") as file:
            file.write(f"{shim.shim_pid} {shim.pid}")
        os.rename(report + ".tmp", report)
        await asyncio.sleep(600)

    asyncio.run(main())
    """
)

Poll = Callable[..., Any]


def _dead(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _reap(pid: int) -> None:
    """Collect an exited orphan: this process is a subreaper (conftest), orphans come back to it."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


class Chunks:
    """Starts renderers under shims with a fresh marker each; nothing outlives the test."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.started: list[tuple[Shim, str]] = []

    def env(self, marker: str) -> dict[str, str]:
        return {**os.environ, MARKER_VARIABLE: marker}

    async def start(
        self,
        argv: Sequence[str],
        *,
        grace: float = 0.5,
        lease: float = 60.0,
        exit_file: Path | None = None,
    ) -> tuple[Shim, str]:
        marker = f"shimtest:{uuid.uuid4().hex}"
        shim = await Shim.start(
            argv,
            cwd=self.folder,
            env=self.env(marker),
            grace=grace,
            lease_until=time.monotonic() + lease,
            exit_file=exit_file,
        )
        self.started.append((shim, marker))
        return shim, marker

    async def tree(self, eventually: Poll, *options: str, grace: float = 0.5) -> Tree:
        """The 8-process TREE under a shim, once every process of it has recorded its pid."""
        pids = self.folder / uuid.uuid4().hex
        pids.mkdir()
        script = self.folder / "tree.py"
        script.write_text(TREE)
        shim, marker = await self.start(
            [sys.executable, "-I", "-S", str(script), str(pids), *options], grace=grace
        )
        await eventually(lambda: len(list(pids.iterdir())) == TREE_SIZE, what="the tree")
        return Tree(shim, marker, [int(p.name) for p in pids.iterdir()])

    async def close(self) -> None:
        for shim, marker in self.started:
            shim.kill(0.0, "the test is over")
            await asyncio.wait_for(shim.wait(), 10)
            await kill_tree(marker, grace=0.1, keep={shim.shim_pid})
            await asyncio.wait_for(shim.output.read(), 10)
            await asyncio.wait_for(shim.process.wait(), 10)


@dataclass
class Tree:
    """A TREE renderer under its shim, and the pids its processes recorded."""

    shim: Shim
    marker: str
    pids: list[int]


@pytest.fixture
async def chunks(tmp_path: Path) -> AsyncIterator[Chunks]:
    chunks = Chunks(tmp_path)
    yield chunks
    await chunks.close()


@pytest.mark.parametrize(
    ("script", "returncode"), [("exit 0", 0), ("exit 3", 3), ("kill -9 $$", -signal.SIGKILL)]
)
async def test_the_renderer_exit_status_passes_through(
    chunks: Chunks, script: str, returncode: int
) -> None:
    shim, _ = await chunks.start(["sh", "-c", script])

    assert await shim.wait() == ShimResult(returncode, "exit", killed=0)
    assert shim.pid is not None
    assert shim.returncode == returncode


async def test_a_renderer_that_ends_on_its_own_leaves_its_exit_status_for_a_new_agent(
    chunks: Chunks, tmp_path: Path
) -> None:
    # Read by a restarted agent (Supervisor.recover): a render that ended while the
    # agent was down is reported, not rendered again. A killed one leaves nothing.
    ended, killed = tmp_path / "ended.exit", tmp_path / "killed.exit"
    shim, _ = await chunks.start(["sh", "-c", "exit 3"], exit_file=ended)
    await shim.wait()
    assert ended.read_text() == "3   "  # in place, padded: the agent reuses the file
    shim, _ = await chunks.start(["sleep", "30"], exit_file=killed)
    shim.kill(0.5, "stop")
    assert (await shim.wait()).cause == "kill"
    assert not killed.exists()


# Drives the shim's own kill in a process of its own (the shim reaps with waitpid(-1)):
# the renderer has exited, unreaped, when a lapsed lease starts the kill; or is alive.
ENDED_AS_THE_LEASE_LAPSED = textwrap.dedent(
    """
    import json, os, sys, time
    sys.path.insert(0, sys.argv[1])
    from agent import shim as s
    exit_file, live = sys.argv[2], sys.argv[3] == "alive"
    pid = os.fork()
    if pid == 0:
        os.setpgid(0, 0)
        if live:
            time.sleep(600)
        os._exit(0)
    deadline = time.monotonic() + 30
    while not live and open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] != "Z":
        assert time.monotonic() < deadline, "the renderer never exited"
        time.sleep(0.01)  # between polls of a condition
    shim = s.Shim(5.0, time.monotonic(), os.pipe()[0], exit_file)
    shim.renderer = pid
    now = time.monotonic()
    shim.request_kill("lease", 0.2, now)
    shim.sweep(now)
    while shim.reap():
        time.sleep(0.01)  # between polls of a condition
    print(json.dumps({"cause": shim.ending(), "returncode": shim.returncode}))
    """
)


@pytest.mark.parametrize("renderer", ["exited", "alive"])
def test_a_renderer_that_ended_as_the_lease_lapsed_is_credited_not_killed(
    tmp_path: Path, renderer: str
) -> None:
    # A lapsed lease's kill that starts between the shim's reap and its scan finds the
    # renderer exited, not yet reaped: it was reported killed (no exit file), and its
    # frame rendered a second time. Ended before any signal, it ended on its own.
    exit_file = tmp_path / "chunk.exit"
    driver = subprocess.run(
        [sys.executable, "-c", ENDED_AS_THE_LEASE_LAPSED, str(REPO), str(exit_file), renderer],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    report = json.loads(driver.stdout)
    if renderer == "exited":
        assert report == {"cause": "exit", "returncode": 0}
        assert exit_file.read_text().strip() == "0"  # a restarted agent credits it
    else:
        assert report == {"cause": "lease", "returncode": -signal.SIGTERM}
        assert not exit_file.exists()


async def test_the_agents_death_never_breaks_the_renderers_output_pipe(
    chunks: Chunks, tmp_path: Path, eventually: Poll
) -> None:
    # When the agent dies, the kernel closes its ends of the pipes one by one. A
    # renderer that wrote between the close of the output pipe and the close of
    # the control pipe died of SIGPIPE (or exited 1 on EPIPE) before its shim
    # knew the agent was gone: its exit status was read as the render's, and the
    # chunk failed and used a retry. The shim keeps the pipe whole.
    ended, go = tmp_path / "ended.exit", tmp_path / "go"
    script = f"echo ready; while [ ! -e {go} ]; do sleep 0.01; done; echo after; exit 0"
    shim, _ = await chunks.start(["sh", "-c", script], exit_file=ended)
    assert await shim.output.readline() == b"ready\n"

    shim.process._transport.get_pipe_transport(1).close()  # type: ignore[union-attr]
    go.touch()

    await eventually(ended.exists, what="the renderer's exit status")
    assert ended.read_text() == "0   ", "the renderer's write after the agent let go succeeded"


async def test_stdout_and_stderr_share_the_output_pipe(chunks: Chunks) -> None:
    shim, _ = await chunks.start(["sh", "-c", "echo out; echo err >&2; echo out again"])

    assert await shim.output.read() == b"out\nerr\nout again\n"
    assert (await shim.wait()).cause == "exit"


async def test_the_renderer_gets_its_own_group_default_signals_and_three_fds(
    chunks: Chunks,
) -> None:
    probe = (
        "import os; print(os.getpgrp() == os.getpid(), sorted(os.listdir('/proc/self/fd')),"
        " *(os.readlink(f'/proc/self/fd/{fd}') for fd in range(3)), sep='|')"
    )
    shim, _ = await chunks.start([sys.executable, "-I", "-S", "-c", probe])
    group, fds, stdin, stdout, stderr = (await shim.output.read()).decode().split("|")
    assert group == "True"
    assert fds == "['0', '1', '2', '3']"  # 3: the listing itself
    assert stdin == "/dev/null"
    assert stdout.startswith("pipe:")
    assert stderr.strip() == stdout

    shim, _ = await chunks.start(["cat", "/proc/self/status"])
    status = dict(line.split(":\t") for line in (await shim.output.read()).decode().splitlines())
    assert int(status["SigBlk"], 16) == 0
    # Python ignores SIGPIPE and SIGXFSZ; glibc's posix_spawn ignores its own 32 and 33.
    assert int(status["SigIgn"], 16) & ~(1 << 31 | 1 << 32) == 0


async def test_kill_takes_the_whole_tree_with_a_detached_helper(
    chunks: Chunks, eventually: Poll
) -> None:
    tree = await chunks.tree(eventually)
    detached = [pid for pid in tree.pids if os.getsid(pid) != tree.shim.shim_pid]
    assert len(detached) == 1, "one helper left the renderer's session"
    assert sorted(find_marked(tree.marker)) == sorted([tree.shim.shim_pid, *tree.pids])
    # Malformed control lines are ignored, not fatal.
    assert tree.shim.process.stdin is not None
    tree.shim.process.stdin.write(b"nonsense\nlease\nlease soon\nkill -1\nkill nan\n\n")

    tree.shim.kill(5.0, "cancelled\nby the test")
    result = await tree.shim.wait()

    assert result == ShimResult(-signal.SIGTERM, "kill", killed=TREE_SIZE)
    assert [pid for pid in tree.pids if not _dead(pid)] == []
    assert find_marked(tree.marker) == []


async def test_sigkill_follows_the_grace_when_sigterm_is_ignored(
    chunks: Chunks, eventually: Poll
) -> None:
    tree = await chunks.tree(eventually, "stubborn")

    asked = time.monotonic()
    tree.shim.kill(0.2)
    result = await tree.shim.wait()

    assert time.monotonic() - asked >= 0.2
    assert result == ShimResult(-signal.SIGKILL, "kill", killed=TREE_SIZE)
    assert [pid for pid in tree.pids if not _dead(pid)] == []


async def test_a_stopped_renderer_is_woken_to_act_on_its_sigterm(
    chunks: Chunks, eventually: Poll
) -> None:
    shim, _ = await chunks.start(["sh", "-c", "kill -STOP $$"])
    assert shim.pid is not None
    await eventually(lambda: psutil.Process(shim.pid).status() == psutil.STATUS_STOPPED)

    asked = time.monotonic()
    shim.kill(30.0)

    assert await shim.wait() == ShimResult(-signal.SIGTERM, "kill", killed=1)
    assert time.monotonic() - asked < 5.0


async def test_end_of_control_input_kills_the_tree_with_a_short_grace(
    chunks: Chunks, eventually: Poll
) -> None:
    tree = await chunks.tree(eventually, "stubborn", grace=30.0)

    gone = time.monotonic()
    assert tree.shim.process.stdin is not None
    tree.shim.process.stdin.close()  # what the kernel does when the agent dies
    result = await tree.shim.wait()

    assert time.monotonic() - gone < 3.0, "the grace is capped at 0.2 s"
    assert result == ShimResult(-signal.SIGKILL, "agent_gone", killed=TREE_SIZE)
    assert [pid for pid in tree.pids if not _dead(pid)] == []


async def test_renewals_keep_the_renderer_alive_and_a_lapsed_lease_kills_it(
    chunks: Chunks,
) -> None:
    shim, _ = await chunks.start(["sleep", "600"], grace=30.0, lease=0.2)
    first_deadline = time.monotonic() + 0.2
    ending = asyncio.create_task(shim.wait())
    lease_until = first_deadline
    while time.monotonic() < first_deadline + 0.4:
        lease_until = time.monotonic() + 0.2
        shim.renew(lease_until)
        await asyncio.sleep(0.05)  # the renewal period, not a wait for something
    assert not ending.done(), "renewed: still running past the first deadline"

    result = await ending

    assert time.monotonic() >= lease_until
    assert result == ShimResult(-signal.SIGTERM, "lease", killed=1)


async def test_the_tree_dies_when_its_agent_is_killed_with_sigkill(
    tmp_path: Path, eventually: Poll
) -> None:
    (tmp_path / "tree.py").write_text(TREE)
    (tmp_path / "parent.py").write_text(AGENT)
    pids, report = tmp_path / "pids", tmp_path / "report"
    pids.mkdir()
    marker = f"shimtest:{uuid.uuid4().hex}"
    tree = [sys.executable, "-I", "-S", str(tmp_path / "tree.py"), str(pids), "stubborn"]
    agent = await asyncio.create_subprocess_exec(
        sys.executable,
        str(tmp_path / "parent.py"),
        str(report),
        marker,
        *tree,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        await eventually(
            lambda: report.exists() or agent.returncode is not None, what="the shim", within=20
        )
        assert agent.returncode is None, "the agent in miniature failed (see its stderr)"
        await eventually(lambda: len(list(pids.iterdir())) == TREE_SIZE, what="the tree")
        shim_pid = int(report.read_text().split()[0])
        recorded = [int(p.name) for p in pids.iterdir()]

        killed = time.monotonic()
        agent.kill()
        await eventually(
            lambda: all(_dead(pid) for pid in recorded), what="the tree's death", within=2.0
        )
        assert time.monotonic() - killed < 2.0
        await eventually(lambda: _dead(shim_pid), what="the shim's exit", within=2.0)
    finally:
        with contextlib.suppress(ProcessLookupError):
            agent.kill()
        await agent.wait()
        await kill_tree(marker, grace=0.1)
    _reap(shim_pid)
    assert find_marked(marker) == []


@pytest.mark.parametrize("missing", [True, False])
async def test_a_renderer_that_cannot_start_is_reported(
    chunks: Chunks, tmp_path: Path, missing: bool
) -> None:
    binary = tmp_path / "renderer"
    if not missing:
        binary.write_text("#!/bin/sh\n")  # not executable
    shim, _ = await chunks.start([str(binary), "--frames", "1"])

    assert shim.pid is None
    result = await shim.wait()
    assert result.cause == "spawn_failed"
    assert result.returncode is None
    expected = "No such file or directory" if missing else "Permission denied"
    assert result.error == f"cannot start {str(binary)!r}: {expected}"


async def test_a_helper_left_behind_by_a_clean_exit_is_killed(
    chunks: Chunks, tmp_path: Path
) -> None:
    helper = tmp_path / "helper"
    shim, _ = await chunks.start(["sh", "-c", f"(setsid sleep 600 & echo $! > {helper}); exit 0"])

    result = await shim.wait()

    assert result == ShimResult(0, "exit", killed=1)
    assert _dead(int(helper.read_text()))


async def test_sigterm_to_the_shims_group_kills_the_tree_and_is_still_reported(
    chunks: Chunks,
) -> None:
    shim, _ = await chunks.start(["sleep", "600"])

    os.killpg(shim.shim_pid, signal.SIGTERM)

    assert await shim.wait() == ShimResult(-signal.SIGTERM, "kill", killed=1)


async def test_a_shim_killed_with_sigkill_is_reported_as_dead(
    chunks: Chunks, eventually: Poll
) -> None:
    tree = await chunks.tree(eventually)

    os.kill(tree.shim.shim_pid, signal.SIGKILL)
    result = await tree.shim.wait()

    assert result.cause == "shim_died"
    assert result.returncode is None
    assert "killed by SIGKILL" in result.error
    # Nothing confirmed the tree's end: it lives on, found by its marker.
    assert sorted(find_marked(tree.marker)) == sorted(tree.pids)
    report = await kill_tree(tree.marker, grace=0.1, keep={tree.shim.shim_pid})
    assert report.complete
    # A process killed is out of sight by its marker (its environment is freed) a moment
    # before it is a zombie: a loaded CI machine saw one still "running" right here.
    await eventually(
        lambda: [pid for pid in tree.pids if not _dead(pid)] == [], what="the tree to be dead"
    )


async def test_status_lines_it_does_not_know_are_logged_and_ignored(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A stand-in for a shim that says odd things, then stops without confirming."""
    said = 'echo \'{"event": "started", "pid": 1}\'; echo Traceback; echo \'{"event": "new"}\''
    process = await asyncio.create_subprocess_exec(
        "sh",
        "-c",
        f"({said}) >&2",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    shim = Shim(process)

    result = await shim.wait()

    assert shim.pid == 1
    assert result.cause == "shim_died"
    assert result.error.endswith('it said: {"event": "new"}')
    assert "Traceback" in caplog.text
    await process.wait()


def test_the_shim_and_the_agent_agree_on_the_marker_variable() -> None:
    assert MARKER_VARIABLE.encode() == shim_script.MARKER_VARIABLE


@pytest.fixture
def compiled_shim(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Bytecode allowed, and cached under tmp_path rather than beside the source."""
    monkeypatch.setattr(sys, "dont_write_bytecode", False)
    monkeypatch.setattr(sys, "pycache_prefix", str(tmp_path / "pycache"))
    _runnable_shim.cache_clear()
    yield tmp_path / "pycache"
    _runnable_shim.cache_clear()


async def test_the_shim_runs_from_a_fresh_compiled_copy(
    chunks: Chunks, compiled_shim: Path
) -> None:
    runnable = Path(shim_command()[3])
    assert runnable.is_relative_to(compiled_shim)
    assert runnable.suffix == ".pyc"
    assert _is_fresh(runnable)

    shim, _ = await chunks.start(["sh", "-c", "echo compiled"])

    assert await shim.output.read() == b"compiled\n"
    assert await shim.wait() == ShimResult(0, "exit", killed=0)


def test_lease_until_accepts_no_lease() -> None:
    assert shim_script.parse_args(["--grace", "1", "--lease-until", "inf", "--", "x"]) == (
        1.0,
        math.inf,
        "",
        ["x"],
    )
    with pytest.raises(ValueError, match="usage"):
        shim_script.parse_args(["--grace", "1"])
