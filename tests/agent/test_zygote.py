"""Shims forked from the zygote keep every promise of an exec'd shim, and the zygote can die.

The shim tests of ``test_shim.py`` run here again with every shim forked
from a zygote (the ``chunks`` fixture below), then what only a zygote can
get wrong: its own death, an agent's death, pid reuse, markers, leftovers.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import gc
import math
import os
import resource
import signal
import sys
import textwrap
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil
import pytest

from agent import zygote as zygote_program
from agent.journal import Journal
from agent.process_tree import MARKER_VARIABLE, find_marked, kill_tree
from agent.shim_client import Shim, ShimResult
from agent.zygote_client import ForkedProcess, Spawned, Zygote
from farmtui.protocol import AssignChunk, ChunkTimeouts
from tests.agent.test_shim import (
    TREE,
    TREE_SIZE,
    Chunks,
    _dead,
    _reap,
    test_a_helper_left_behind_by_a_clean_exit_is_killed,
    test_a_renderer_that_cannot_start_is_reported,
    test_a_renderer_that_ends_on_its_own_leaves_its_exit_status_for_a_new_agent,
    test_a_shim_killed_with_sigkill_is_reported_as_dead,
    test_a_stopped_renderer_is_woken_to_act_on_its_sigterm,
    test_end_of_control_input_kills_the_tree_with_a_short_grace,
    test_kill_takes_the_whole_tree_with_a_detached_helper,
    test_renewals_keep_the_renderer_alive_and_a_lapsed_lease_kills_it,
    test_sigkill_follows_the_grace_when_sigterm_is_ignored,
    test_sigterm_to_the_shims_group_kills_the_tree_and_is_still_reported,
    test_stdout_and_stderr_share_the_output_pipe,
    test_the_renderer_exit_status_passes_through,
    test_the_renderer_gets_its_own_group_default_signals_and_three_fds,
)

PTRACE_ATTACH = 16

if TYPE_CHECKING:
    from tests.agent.conftest import Farm

REPO = Path(__file__).resolve().parents[2]
Poll = Callable[..., Any]

# The same tests, every shim forked (collected again in this module).
__all__ = [
    "test_a_helper_left_behind_by_a_clean_exit_is_killed",
    "test_a_renderer_that_cannot_start_is_reported",
    "test_a_renderer_that_ends_on_its_own_leaves_its_exit_status_for_a_new_agent",
    "test_a_shim_killed_with_sigkill_is_reported_as_dead",
    "test_a_stopped_renderer_is_woken_to_act_on_its_sigterm",
    "test_end_of_control_input_kills_the_tree_with_a_short_grace",
    "test_kill_takes_the_whole_tree_with_a_detached_helper",
    "test_renewals_keep_the_renderer_alive_and_a_lapsed_lease_kills_it",
    "test_sigkill_follows_the_grace_when_sigterm_is_ignored",
    "test_sigterm_to_the_shims_group_kills_the_tree_and_is_still_reported",
    "test_stdout_and_stderr_share_the_output_pipe",
    "test_the_renderer_exit_status_passes_through",
    "test_the_renderer_gets_its_own_group_default_signals_and_three_fds",
]


class ForkedChunks(Chunks):
    """``Chunks`` whose shims are forked from one zygote, which is stopped at the end."""

    def __init__(self, folder: Path) -> None:
        super().__init__(folder)
        self.zygote = Zygote()

    async def start(
        self,
        argv: Sequence[str],
        *,
        grace: float = 0.5,
        lease: float = 60.0,
        exit_file: Path | None = None,
        marker: str | None = None,
        share: str | None = "one job",
    ) -> tuple[Shim, str]:
        marker = marker or f"shimtest:{uuid.uuid4().hex}"
        shim = await Shim.start(
            argv,
            cwd=self.folder,
            env=self.env(marker),
            grace=grace,
            lease_until=time.monotonic() + lease,
            exit_file=exit_file,
            zygote=self.zygote,
            share=share,
        )
        self.started.append((shim, marker))
        return shim, marker

    async def follow(
        self,
        ahead: Shim,
        argv: Sequence[str],
        *,
        cwd: Path | None = None,
        env: dict[str, str] | None = None,
    ) -> tuple[Shim, int]:
        """Queue a chunk on ``ahead``'s shim (``Shim.follow``): its shim and token."""
        marker = f"shimtest:{uuid.uuid4().hex}"
        followed = await Shim.follow(
            ahead,
            argv,
            cwd=cwd or self.folder,
            env={**os.environ, **(env or {}), MARKER_VARIABLE: marker},
            grace=0.5,
            lease_until=math.inf,
            exit_file=None,
            zygote=self.zygote,
        )
        assert followed is not None
        return followed

    async def close(self) -> None:
        await super().close()
        await self.zygote.aclose()


@pytest.fixture
async def chunks(tmp_path: Path) -> AsyncIterator[ForkedChunks]:
    chunks = ForkedChunks(tmp_path)
    # Started first, as in an agent that ran a chunk before: the tests' short leases
    # start with the shim, not with a Python start-up.
    assert await chunks.zygote.start()
    yield chunks
    await chunks.close()


async def test_shims_are_forked_and_carry_their_chunks_marker(
    chunks: ForkedChunks, eventually: Poll
) -> None:
    one = await chunks.tree(eventually)
    other = await chunks.tree(eventually)

    assert not one.shim.is_child
    assert isinstance(one.shim.process, ForkedProcess)
    assert chunks.zygote.pid is not None
    assert psutil.Process(one.shim.shim_pid).ppid() == chunks.zygote.pid
    # Each shim shows its own marker only; the zygote none (its room is reserved).
    assert sorted(find_marked(one.marker)) == sorted([one.shim.shim_pid, *one.pids])
    assert sorted(find_marked(other.marker)) == sorted([other.shim.shim_pid, *other.pids])
    zygote_environ = psutil.Process(chunks.zygote.pid).environ()
    assert set(zygote_environ[MARKER_VARIABLE]) == {"."}
    assert psutil.Process(one.shim.shim_pid).environ()[MARKER_VARIABLE] == one.marker

    one.shim.kill(0.5, "only this one")
    assert (await one.shim.wait()).killed == TREE_SIZE
    assert [pid for pid in other.pids if _dead(pid)] == [], "the other chunk is untouched"


async def test_the_zygote_dying_mid_chunk_leaves_the_chunk_supervised(
    chunks: ForkedChunks, eventually: Poll
) -> None:
    killed = await chunks.tree(eventually, "stubborn")
    gone = await chunks.tree(eventually, "stubborn", grace=30.0)
    lapsing, _ = await chunks.start(["sleep", "600"], grace=30.0, lease=60.0)
    zygote = chunks.zygote.pid
    assert zygote is not None

    os.kill(zygote, signal.SIGKILL)
    await eventually(lambda: not chunks.zygote.running, what="the agent to see the zygote go")

    # Every way a tree must die still works: a kill, the agent's end, a lapsed lease.
    killed.shim.kill(0.2, "cancelled")
    assert await killed.shim.wait() == ShimResult(-signal.SIGKILL, "kill", killed=TREE_SIZE)
    assert gone.shim.process.stdin is not None
    gone.shim.process.stdin.close()
    assert (await gone.shim.wait()).cause == "agent_gone"
    lapsing.renew(time.monotonic())
    assert (await lapsing.wait()).cause == "lease"
    assert [pid for pid in killed.pids + gone.pids if not _dead(pid)] == []
    # Their exit statuses died with the zygote; they came back to us (a subreaper).
    for shim in (killed.shim, gone.shim, lapsing):
        assert await shim.process.wait() is None
        await eventually(lambda shim=shim: _dead(shim.shim_pid), what="the shim's end")
        _reap(shim.shim_pid)

    # The next chunk still starts (the old way until the zygote is started again).
    shim, _ = await chunks.start(["sh", "-c", "exit 4"])
    assert await shim.wait() == ShimResult(4, "exit", killed=0)


async def test_a_shim_takes_chunk_after_chunk_each_with_only_its_own_state(
    chunks: ForkedChunks, tmp_path: Path, eventually: Poll
) -> None:
    """A shim whose chunk is over serves the next one: fresh folder, environment and marker."""
    probe = (
        "import os; print(os.environ['FARMTUI_CHUNK'], os.environ.get('ONLY_FIRST'), os.getcwd(),"
        " sorted(os.listdir('/proc/self/fd')), sep='|'); raise SystemExit(int(os.environ['CODE']))"
    )
    argv = [sys.executable, "-I", "-S", "-c", probe]
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir()
    two.mkdir()

    async def chunk(folder: Path, marker: str, code: int, **extra: str) -> tuple[Shim, str]:
        env = {**os.environ, MARKER_VARIABLE: marker, "CODE": str(code), **extra}
        shim = await Shim.start(
            argv,
            cwd=folder,
            env=env,
            grace=0.5,
            lease_until=math.inf,
            zygote=chunks.zygote,
            share="one job",
        )
        output = (await shim.output.read()).decode().strip()
        assert await shim.wait() == ShimResult(code, "exit", killed=0)
        return shim, output

    first, said = await chunk(one, "shimtest:first", 3, ONLY_FIRST="yes")
    assert said == f"shimtest:first|yes|{one}|['0', '1', '2', '3']"
    second, said = await chunk(two, "shimtest:second", 0)
    assert second.shim_pid == first.shim_pid, "the same shim, not a new fork"
    # Nothing of the first chunk: not its variable, folder or marker, and still only
    # the three pipes (3: the listing itself; the shim's own socket is not inherited).
    assert said == f"shimtest:second|None|{two}|['0', '1', '2', '3']"

    # While it serves a chunk the shim wears that chunk's marker, so sweeps find it.
    tree = await chunks.tree(eventually)
    assert tree.shim.shim_pid == first.shim_pid
    assert sorted(find_marked(tree.marker)) == sorted([tree.shim.shim_pid, *tree.pids])
    tree.shim.kill(0.2, "done looking")
    assert (await tree.shim.wait()).killed == TREE_SIZE
    assert find_marked(tree.marker) == []
    assert "FARMTUI_CHUNK" not in psutil.Process(first.shim_pid).environ()


async def test_each_chunk_gets_the_environment_it_was_given_and_no_more(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A request tells only how the chunk's environment differs from the zygote's; what
    the zygote's own Python start-up adds to its environment never reaches a renderer."""
    # Under a C locale Python sets LC_CTYPE in its environment as it starts (PEP 538),
    # the zygote too (with C.UTF-8 available, as on Debian: the renderer would get it).
    for name in ("LC_ALL", "LC_CTYPE", "LANG", "LANGUAGE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("LANG", "C")
    monkeypatch.setenv("FARMTUI_TEST_AGENT_ONLY", "the agent's, not the chunk's")
    monkeypatch.setenv("FARMTUI_TEST_CHANGED", "the agent's value")
    zygote = Zygote()
    try:

        async def environment(env: dict[str, str]) -> dict[str, str]:
            shim = await Shim.start(
                ["env", "-0"],
                cwd=tmp_path,
                env=env,
                grace=0.5,
                lease_until=math.inf,
                zygote=zygote,
                share="one job",
            )
            said = (await shim.output.read()).decode()
            assert (await shim.wait()).cause == "exit"
            assert shim.is_child is False, "forked from the zygote"
            return dict(entry.split("=", 1) for entry in said.split("\0") if entry)

        agents = {k: v for k, v in os.environ.items() if k != "FARMTUI_TEST_AGENT_ONLY"}
        first = {
            **agents,
            "FARMTUI_TEST_CHANGED": "the chunk's value",
            "FARMTUI_TEST_NEW": "only the first chunk's",
            MARKER_VARIABLE: "shimtest:first",
        }
        assert await environment(first) == first
        second = {**os.environ, MARKER_VARIABLE: "shimtest:second"}
        assert await environment(second) == second  # the same shim: nothing of the first
    finally:
        await zygote.aclose()


async def test_each_chunk_finds_its_renderer_on_its_own_path(
    chunks: ForkedChunks, tmp_path: Path
) -> None:
    """A job's PATH, not the agent's nor the chunk before's, says where its renderer is."""
    tools = tmp_path / "tools"
    tools.mkdir()
    renderer = tools / "only-here"
    renderer.write_text("#!/bin/sh\necho found\n")
    renderer.chmod(0o755)
    agents = {key: value for key, value in os.environ.items() if key != "PATH"}

    async def chunk(path: str) -> tuple[Shim, str, ShimResult]:
        env = {**agents, "PATH": path, MARKER_VARIABLE: f"shimtest:{uuid.uuid4().hex}"}
        shim = await Shim.start(
            ["only-here"],
            cwd=tmp_path,
            env=env,
            grace=0.5,
            lease_until=math.inf,
            zygote=chunks.zygote,
            share="one job",
        )
        return shim, (await shim.output.read()).decode().strip(), await shim.wait()

    first, said, result = await chunk(f"/usr/bin:{tools}:/bin")
    assert (said, result.returncode, result.cause) == ("found", 0, "exit")
    second, said, result = await chunk("/usr/bin:/bin")
    assert second.shim_pid == first.shim_pid, "the same shim, not a new fork"
    assert result.cause == "spawn_failed"
    assert "only-here" in result.error


async def test_a_chunk_queued_on_a_busy_shim_starts_there_or_is_skipped_once_taken_back(
    chunks: ForkedChunks, tmp_path: Path
) -> None:
    """``Zygote.follow``: a chunk sent to a shim while its chunk renders starts there as
    soon as that tree is gone; one taken back (its token read by the agent) is skipped,
    and the shim serves the chunk after it."""
    from agent.shim import claim

    def touching(name: str) -> list[str]:
        return ["/bin/sh", "-c", f"sleep 0.3; echo ran > {tmp_path / name}"]

    first, _ = await chunks.start(touching("first"))
    second, _ = await chunks.follow(first, touching("second"))
    assert await first.wait() == ShimResult(0, "exit", killed=0)
    assert first.passes_on
    await second.until_started(tmp_path)
    assert second.pid is not None
    assert second.shim_pid == first.shim_pid, "not started by the shim it was queued on"
    assert await second.wait() == ShimResult(0, "exit", killed=0)

    third, _ = await chunks.start(touching("third"))
    fourth, token = await chunks.follow(third, touching("fourth"))
    assert claim(token), "the agent takes it back before its turn"
    fourth.abandon()
    assert await third.wait() == ShimResult(0, "exit", killed=0)
    fifth, _ = await chunks.start(touching("fifth"))
    assert fifth.shim_pid == third.shim_pid, "the shim did not go on after skipping"
    assert await fifth.wait() == ShimResult(0, "exit", killed=0)
    ran = [
        name
        for name in ("first", "second", "third", "fourth", "fifth")
        if (tmp_path / name).exists()
    ]
    assert ran == ["first", "second", "third", "fifth"]


def gated(gate: Path) -> list[str]:
    """A render that lasts until ``gate`` exists: on a loaded machine, queuing a chunk
    behind a render of a fixed 0.2 s sometimes took longer, and found its shim gone."""
    return ["sh", "-c", 'while [ ! -e "$1" ]; do sleep 0.01; done', "sh", str(gate)]


async def test_a_shim_starts_the_chunk_queued_on_it_before_it_says_the_last_one_ended(
    chunks: ForkedChunks, tmp_path: Path
) -> None:
    """Saying it wakes the agent, whose work on the last chunk would otherwise take the
    CPU from the next renderer as it starts (``shim.hold_closing``)."""
    gate = tmp_path / "gate"
    first, _ = await chunks.start(gated(gate))
    # A large environment makes the shim's way to the next renderer long (milliseconds):
    # a shim that said the last chunk ended first would be seen with no renderer.
    padding = {f"FARMTUI_TEST_{i}": "x" * 16 for i in range(2000)}
    second, _ = await chunks.follow(first, ["sleep", "30"], env=padding)
    gate.touch()
    assert await asyncio.wait_for(first.wait(), 30) == ShimResult(0, "exit", killed=0)
    renderers = psutil.Process(first.shim_pid).children()
    assert [p.cmdline() for p in renderers] == [["sleep", "30"]], "told before it started"
    await second.until_started(tmp_path)
    assert second.pid == renderers[0].pid
    second.kill(0.5, "the test is over")
    assert (await asyncio.wait_for(second.wait(), 30)).cause == "kill"


@pytest.mark.parametrize("fault", ["no such program", "no such folder"])
async def test_a_chunk_queued_on_a_shim_that_cannot_start_leaves_the_one_ahead_reported(
    chunks: ForkedChunks, tmp_path: Path, fault: str
) -> None:
    """A shim with the next chunk in hand starts it before it says the last one ended
    (``shim.hold_closing``). When the next one cannot start, the last one's end is
    still told: its report never waits on a chunk that will not come."""
    folder = tmp_path / "gone" if fault == "no such folder" else tmp_path
    folder.mkdir(exist_ok=True)
    argv = ["/no/such/renderer"] if fault == "no such program" else ["true"]
    gate = tmp_path / "gate"
    first, _ = await chunks.start(gated(gate))
    second, _ = await chunks.follow(first, argv, cwd=folder)
    if fault == "no such folder":
        folder.rmdir()  # gone after it was handed over, before its turn
    gate.touch()
    assert await asyncio.wait_for(first.wait(), 30) == ShimResult(0, "exit", killed=0)
    assert first.passes_on, "the shim did not take the queued chunk"
    if fault == "no such folder":
        with pytest.raises(FileNotFoundError):
            await second.until_started(folder)
    else:
        await second.until_started(folder)
        result = await asyncio.wait_for(second.wait(), 30)
        assert (second.pid, result.cause) == (None, "spawn_failed"), result
        assert "/no/such/renderer" in result.error


async def test_a_chunk_whose_request_never_came_whole_leaves_the_one_ahead_reported(
    chunks: ForkedChunks, tmp_path: Path
) -> None:
    """The agent went (or gave up) while writing the next chunk's request: the shim
    holding the last chunk's end still says it before it exits."""
    import socket

    gate = tmp_path / "gate"
    first, _ = await chunks.start(gated(gate))
    assert isinstance(first.process, ForkedProcess)
    assert first.process.more is not None
    control, control_write = os.pipe()
    output_read, output = os.pipe()
    status_read, status = os.pipe()
    token, token_write = os.pipe()
    os.write(control_write, b'{"argv": ["true"], "env"')  # and no more: no end of line
    for fd in (control_write, token_write):
        os.close(fd)
    socket.send_fds(first.process.more, [b"next"], [control, output, status, token])
    for fd in (control, output, status, token):
        os.close(fd)
    gate.touch()
    try:
        assert await asyncio.wait_for(first.wait(), 30) == ShimResult(0, "exit", killed=0)
        assert first.passes_on
    finally:
        os.close(output_read)
        os.close(status_read)


async def test_an_idle_shim_that_dies_or_is_told_to_stop_is_not_given_a_chunk(
    chunks: ForkedChunks, eventually: Poll
) -> None:
    shims = []
    for stop in (signal.SIGKILL, signal.SIGTERM):
        shim, _ = await chunks.start(["true"])
        assert await shim.wait() == ShimResult(0, "exit", killed=0)
        os.kill(shim.shim_pid, stop)
        await eventually(lambda shim=shim: _dead(shim.shim_pid), what="the idle shim's end")
        await eventually(lambda: not chunks.zygote._idle, what="the zygote to report it")
        shims.append(shim.shim_pid)
    after, _ = await chunks.start(["sh", "-c", "exit 5"])
    assert await after.wait() == ShimResult(5, "exit", killed=0)
    assert after.shim_pid not in shims


async def test_only_chunks_of_the_same_job_share_a_shim(chunks: ForkedChunks) -> None:
    """A renderer that tampers with its shim can reach no other job's chunks through it."""
    first, _ = await chunks.start(["true"], share="job a")
    assert (await first.wait()).returncode == 0
    other, _ = await chunks.start(["true"], share="job b")
    assert (await other.wait()).returncode == 0
    unshared, _ = await chunks.start(["true"], share=None)
    assert (await unshared.wait()).returncode == 0
    again, _ = await chunks.start(["true"], share="job a")
    assert (await again.wait()).returncode == 0

    assert other.shim_pid != first.shim_pid
    assert unshared.shim_pid not in (first.shim_pid, other.shim_pid)
    assert again.shim_pid == first.shim_pid


async def test_a_shim_its_renderer_signalled_or_changed_takes_no_further_chunk(
    chunks: ForkedChunks, eventually: Poll
) -> None:
    """A SIGTERM to the shim, or limits, niceness or OOM score set on it, end its reuse."""
    tampering = [
        "kill -TERM $PPID; sleep 0.2",  # asks the shim to kill the tree: it is gone anyway
        "prlimit --pid $PPID --nofile=32:32",
        "renice -n 15 -p $PPID >/dev/null",
        "echo 1000 > /proc/$PPID/oom_score_adj",
    ]
    for script in tampering:
        spoiled, _ = await chunks.start(["sh", "-c", script])
        await spoiled.wait()
        await eventually(lambda spoiled=spoiled: _dead(spoiled.shim_pid), what="its retirement")
        probe = "ulimit -n; nice; cat /proc/self/oom_score_adj"
        after, _ = await chunks.start(["sh", "-c", probe])
        assert await after.wait() == ShimResult(0, "exit", killed=0), script
        assert after.shim_pid != spoiled.shim_pid, script
        limit, niceness, oom = (await after.output.read()).decode().split()
        assert (niceness, oom) == ("0", "0"), script
        assert int(limit) > 32, script


async def test_a_frozen_shim_starts_nothing_once_its_lease_is_over(
    chunks: ForkedChunks, tmp_path: Path, eventually: Poll
) -> None:
    """Frozen while idle, handed a chunk, thawed after the lease: the renderer never runs."""
    first, _ = await chunks.start(["true"])
    assert (await first.wait()).returncode == 0
    os.kill(first.shim_pid, signal.SIGSTOP)
    try:
        ran = tmp_path / "ran"
        lease = 0.5
        starting = asyncio.ensure_future(chunks.start(["touch", str(ran)], lease=lease))
        deadline = time.monotonic() + lease
        await asyncio.sleep(deadline - time.monotonic() + 0.1)  # the lease's own end, not a wait
        assert not starting.done(), "a frozen shim cannot have answered"
    finally:
        os.kill(first.shim_pid, signal.SIGCONT)
    shim, _ = await starting
    assert shim.shim_pid == first.shim_pid
    result = await shim.wait()
    assert result.cause == "spawn_failed"
    assert "lease ran out" in result.error
    assert not ran.exists()


# An agent in miniature with a zygote: says who is who, then hangs until SIGKILL.
AGENT = textwrap.dedent(
    """
    import asyncio, math, os, sys
    from agent.shim_client import Shim
    from agent.zygote_client import Zygote

    async def main():
        report, marker, argv = sys.argv[1], sys.argv[2], sys.argv[3:]
        env = {**os.environ, "FARMTUI_CHUNK": marker}
        zygote = Zygote()
        # Two quick chunks at once leave two shims waiting for more; one takes the tree.
        options = dict(cwd=".", env=env, lease_until=math.inf, zygote=zygote, share="job")
        quick = [Shim.start(["true"], grace=1, **options) for _ in range(2)]
        idle = [await done.wait() and done.shim_pid for done in await asyncio.gather(*quick)]
        shim = await Shim.start(argv, grace=30.0, **options)
        with open(report + ".tmp", "w") as file:
            file.write(f"{shim.shim_pid} {zygote.pid} {int(shim.is_child)} {idle[0]} {idle[1]}")
        os.rename(report + ".tmp", report)
        await asyncio.sleep(600)

    asyncio.run(main())
    """
)


def _trace(pid: int) -> bool:
    """Hold ``pid`` as a debugger does (PTRACE_ATTACH): SIGCONT does not resume it."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
    return bool(libc.ptrace(PTRACE_ATTACH, pid, None, None) == 0)


@pytest.mark.parametrize("stopped", [None, "signal", "tracer"])
async def test_the_tree_and_the_zygote_go_when_the_agent_is_killed_with_sigkill(
    tmp_path: Path, eventually: Poll, stopped: str | None
) -> None:
    """Also when the shim was stopped by a signal (the zygote wakes it as the agent goes:
    break round 33a, its renderer rendered on while the chunk ran on another node), or is
    held by a debugger, which SIGCONT does not resume (the zygote kills it and its tree a
    moment later: break round 33d)."""
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
    shim_pid = zygote_pid = 0
    try:
        await eventually(
            lambda: report.exists() or agent.returncode is not None, what="the shim", within=20
        )
        assert agent.returncode is None, "the agent in miniature failed (see its stderr)"
        await eventually(lambda: len(list(pids.iterdir())) == TREE_SIZE, what="the tree")
        shim_pid, zygote_pid, is_child, *idle = map(int, report.read_text().split())
        assert not is_child, "the shim was forked"
        assert shim_pid in idle, "the tree's shim is one that served a chunk before"
        waiting = [pid for pid in idle if pid != shim_pid]
        recorded = [int(p.name) for p in pids.iterdir()]

        if stopped == "signal":
            os.kill(shim_pid, signal.SIGSTOP)
        if stopped == "tracer" and not _trace(shim_pid):
            pytest.skip("this process may not trace its shim (ptrace)")
        # Woken, the shims kill their trees; one a debugger holds goes WAKE_WAIT later.
        limit = 2.0 + (zygote_program.WAKE_WAIT if stopped == "tracer" else 0.0)
        killed = time.monotonic()
        agent.kill()
        await eventually(
            lambda: all(_dead(pid) for pid in recorded), what="the tree's death", within=limit
        )
        assert time.monotonic() - killed < limit
        await eventually(lambda: _dead(shim_pid), what="the shim's exit", within=limit)
        await eventually(lambda: _dead(zygote_pid), what="the zygote's exit", within=2.0)
        for pid in waiting:
            await eventually(lambda pid=pid: _dead(pid), what="the idle shim's exit", within=2.0)
    finally:
        with contextlib.suppress(ProcessLookupError):
            agent.kill()
        await agent.wait()
        await kill_tree(marker, grace=0.1)
    for pid in (shim_pid, zygote_pid):
        _reap(pid)
    assert find_marked(marker) == []


async def test_a_thousand_quick_chunks_leave_nothing_behind(
    chunks: ForkedChunks, tmp_path: Path, eventually: Poll
) -> None:
    me = psutil.Process()
    # Earlier tests' garbage in this worker (a transport in a reference cycle) must not
    # close its descriptor while this one counts its own.
    gc.collect()
    fds_before = len(os.listdir("/proc/self/fd"))  # the zygote's socket and replies included

    shims: set[int] = set()

    async def slot(count: int) -> None:
        for _ in range(count):
            shim, marker = await chunks.start(["true"], exit_file=tmp_path / "exit")
            assert await shim.wait() == ShimResult(0, "exit", killed=0)
            assert await shim.output.read() == b""
            assert await shim.process.wait() == 0
            chunks.started.remove((shim, marker))
            shims.add(shim.shim_pid)

    await asyncio.gather(slot(500), slot(500))

    # Two slots need two shims: each takes chunk after chunk rather than being forked anew.
    assert len(shims) <= 4
    assert chunks.zygote.pid is not None
    children = me.children(recursive=True)
    assert [child.pid for child in me.children()] == [chunks.zygote.pid]
    idle = [child for child in children if child.pid != chunks.zygote.pid]
    assert 1 <= len(idle) <= 2, "the zygote and its idle shims, and no zombie"
    for waiting in idle:
        # Its last chunk's pipes are closed a moment before it sits down to wait.
        await eventually(
            lambda w=waiting: w.status() == psutil.STATUS_SLEEPING, what="the shim to wait"
        )
        assert waiting.children() == []
        assert "FARMTUI_CHUNK" not in waiting.environ(), "an idle shim wears no chunk's marker"
    assert len(os.listdir("/proc/self/fd")) == fds_before + len(idle)  # their sockets
    assert os.listdir(tmp_path) == ["exit"]
    await chunks.zygote.aclose()
    await eventually(
        lambda: len(os.listdir("/proc/self/fd")) == fds_before - 2, what="the zygote's fds closed"
    )
    assert me.children() == []


async def test_a_reused_pid_names_the_new_shim_once_the_old_one_is_reported() -> None:
    zygote = Zygote()
    first, first_fds = await zygote._pipes()
    second, second_fds = await zygote._pipes()
    for fd in first_fds + second_fds:
        os.close(fd)
    loop = asyncio.get_running_loop()
    answers = [loop.create_future(), loop.create_future()]
    zygote._pending = {1: (first, answers[0]), 2: (second, answers[1])}
    replies = asyncio.StreamReader()
    for line in (
        b'{"event": "spawned", "id": 1, "pid": 4242}',
        b'{"event": "exited", "pid": 4242, "returncode": 0}',
        b'{"event": "exited", "pid": 4242, "returncode": 9}',  # nobody's any more
        b'{"event": "spawned", "id": 2, "pid": 4242}',
        b'{"event": "exited", "pid": 4242, "returncode": 3}',
    ):
        replies.feed_data(line + b"\n")
    replies.feed_eof()
    ready: asyncio.Future[Any] = loop.create_future()

    await zygote._read(999_999_999, replies, ready)  # no such pid: nothing to reap

    assert [await answer for answer in answers] == [True, True]
    assert (first.pid, await first.wait()) == (4242, 0)
    assert (second.pid, await second.wait()) == (4242, 3)
    for process in (first, second):
        process._discard()
    assert isinstance(Spawned(id=1, pid=1), Spawned)


async def test_a_marker_too_long_to_fit_starts_an_exec_shim(chunks: ForkedChunks) -> None:
    marker = "x" * zygote_program.ROOM

    shim, _ = await chunks.start(["sh", "-c", "echo $FARMTUI_CHUNK"], marker=marker)

    assert shim.is_child
    assert await shim.output.read() == marker.encode() + b"\n"
    assert await shim.wait() == ShimResult(0, "exit", killed=0)


async def test_a_missing_working_folder_is_the_same_error_either_way(tmp_path: Path) -> None:
    zygote = Zygote()
    missing = tmp_path / "gone"
    errors = []
    for launcher in (zygote, None):
        with pytest.raises(OSError) as caught:  # noqa: PT011  # compared below
            await Shim.start(
                ["true"],
                cwd=missing,
                env=dict(os.environ),
                grace=0.5,
                lease_until=math.inf,
                zygote=launcher,
            )
        errors.append((type(caught.value), str(caught.value)))
    await zygote.aclose()

    assert errors[0] == errors[1]
    assert errors[0][0] is FileNotFoundError


def test_a_marker_fills_the_room_and_the_environment_still_parses() -> None:
    room = zygote_program.marker_bytes(b"job:1:2:abc", zygote_program.ROOM)
    assert room is not None
    assert len(room) == zygote_program.ROOM
    entries = dict(entry.split(b"=", 1) for entry in room.rstrip(b"\0").split(b"\0"))
    assert entries[b"FARMTUI_CHUNK"] == b"job:1:2:abc"
    assert zygote_program.marker_bytes(b"x" * zygote_program.ROOM, zygote_program.ROOM) is None


async def test_the_supervisor_forks_its_shims_and_stops_the_zygote(
    farm: Farm, demo_chunk: Callable[..., Any]
) -> None:
    farm.supervisor.assign(demo_chunk([1, 2]))
    finished = await farm.finish()
    assert finished.outcome == "done"
    zygote = farm.supervisor.zygote
    assert zygote is not None
    assert zygote.running

    await farm.supervisor.kill_all("the test is over")

    assert not zygote.running
    assert psutil.Process().children() == []
    journal = farm.staging / ".attempts"
    assert Journal(journal).found() == []  # no attempt left for a restarted agent


async def test_a_chunk_handed_to_a_frozen_shim_is_given_up_and_never_starts(
    farm: Farm, tmp_path: Path, eventually: Poll, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The chunk comes back as killed (no retry used); thawed, the shim starts nothing."""
    from agent import shim_client

    monkeypatch.setattr(shim_client, "START_TIMEOUT", 0.5)
    ran = tmp_path / "ran"

    farm.supervisor.assign(_generic_chunk(1, ["true"]))
    assert (await farm.finish()).outcome == "done"
    zygote = farm.supervisor.zygote
    assert zygote is not None
    (idle,) = zygote._idle  # the shim of chunk 1 waits for another chunk of job1
    os.kill(idle, signal.SIGSTOP)
    try:
        farm.recorder.messages.clear()
        farm.supervisor.assign(_generic_chunk(2, ["touch", str(ran)]))
        finished = await farm.finish()
        assert finished.outcome == "killed"
        assert "did not start" in (finished.reason or "")
    finally:
        os.kill(idle, signal.SIGCONT)
    await eventually(lambda: _dead(idle), what="the thawed shim to go")
    assert not ran.exists(), "the renderer never ran"

    farm.recorder.messages.clear()
    farm.supervisor.assign(_generic_chunk(3, ["touch", str(ran)]))
    assert (await farm.finish()).outcome == "done"
    assert ran.exists()


async def test_an_idle_shim_nobody_gives_a_chunk_goes(
    chunks: ForkedChunks, eventually: Poll, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A finished job leaves no shim waiting on the node for long."""
    from agent import zygote_client

    monkeypatch.setattr(zygote_client, "IDLE_FOR", 0.2)
    shim, _ = await chunks.start(["true"])
    assert (await shim.wait()).returncode == 0
    assert list(chunks.zygote._idle) == [shim.shim_pid]
    await eventually(lambda: _dead(shim.shim_pid), what="the idle shim to go")
    assert chunks.zygote._idle == {}
    assert chunks.zygote.pid is not None
    zygote = psutil.Process(chunks.zygote.pid)
    await eventually(lambda: zygote.children() == [], what="the zygote to reap it")


async def test_an_idle_shim_changed_by_another_process_refuses_the_next_chunk(
    chunks: ForkedChunks, tmp_path: Path
) -> None:
    """Limits or niceness set on a waiting shim (by another job's renderer) never reach a chunk."""
    first, _ = await chunks.start(["true"])
    assert (await first.wait()).returncode == 0
    os.setpriority(os.PRIO_PROCESS, first.shim_pid, 19)
    ran = tmp_path / "ran"
    refused, _ = await chunks.start(["touch", str(ran)])
    assert refused.shim_pid == first.shim_pid
    result = await refused.wait()
    assert result.cause == "spawn_failed"
    assert result.error.startswith("not started: its supervisor was changed")
    assert not ran.exists()
    after, _ = await chunks.start(["sh", "-c", "nice"])
    assert (await after.wait()).returncode == 0
    assert (await after.output.read()).decode().strip() == "0"


async def test_a_renderer_that_changes_the_zygote_changes_no_later_renderer(
    chunks: ForkedChunks, caplog: pytest.LogCaptureFixture
) -> None:
    """The zygote is within a renderer's reach (its shim's parent, the same user): what a
    renderer sets on it must not reach the shims forked after, nor their renderers."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    lowered = soft - 7
    change_it = (
        "import os, resource\n"
        "with open(f'/proc/{os.getppid()}/stat') as f:\n"
        "    zygote = int(f.read().rsplit(')', 1)[1].split()[1])\n"
        f"resource.prlimit(zygote, resource.RLIMIT_NOFILE, ({lowered}, {hard}))\n"
        "os.setpriority(os.PRIO_PROCESS, zygote, 9)\n"
    )
    attacker, _ = await chunks.start([sys.executable, "-I", "-S", "-c", change_it], share="a")
    assert (await attacker.wait()).returncode == 0
    zygote = chunks.zygote.pid
    assert zygote is not None
    assert resource.prlimit(zygote, resource.RLIMIT_NOFILE)[0] == lowered, "it was changed"

    report = "import os, resource; print(resource.getrlimit(resource.RLIMIT_NOFILE)[0], os.nice(0))"
    for job in ("b", "c"):  # another job each: a shim forked for it, or started afresh
        later, _ = await chunks.start([sys.executable, "-I", "-S", "-c", report], share=job)
        assert (await later.wait()).returncode == 0
        assert (await later.output.read()).decode().split() == [str(soft), "0"]
    assert "changed by another process" in caplog.text


async def test_a_shim_delayed_past_its_lease_costs_the_job_no_retry(
    farm: Farm, tmp_path: Path, eventually: Poll
) -> None:
    """It starts nothing (the chunk may run elsewhere by then), and says so as the farm's doing."""
    ran = tmp_path / "ran"

    farm.supervisor.assign(_generic_chunk(1, ["true"]))
    assert (await farm.finish()).outcome == "done"
    zygote = farm.supervisor.zygote
    assert zygote is not None
    (idle,) = zygote._idle
    os.kill(idle, signal.SIGSTOP)
    try:
        lease = time.monotonic() + 0.3
        farm.supervisor.lease_until = lease
        farm.recorder.messages.clear()
        farm.supervisor.assign(_generic_chunk(2, ["touch", str(ran)]))
        await asyncio.sleep(lease - time.monotonic() + 0.1)  # the lease's own end, not a wait
    finally:
        os.kill(idle, signal.SIGCONT)
    finished = await farm.finish()
    assert finished.outcome == "killed"
    assert finished.reason == "not started: the node's lease ran out"
    assert not ran.exists()


async def test_a_frozen_zygote_costs_a_chunk_its_fork_not_its_start(
    chunks: ForkedChunks, tmp_path: Path, eventually: Poll, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The chunk starts the old way, at once instead of never, and runs once.

    (Thawed, the zygote still forks a shim for the request it held; that shim
    finds its control pipe closed and starts nothing, as the frozen-shim tests show.)
    """
    from agent import zygote_client

    monkeypatch.setattr(zygote_client, "FORK_TIMEOUT", 0.5)
    runs = tmp_path / "runs"
    zygote = chunks.zygote.pid
    assert zygote is not None
    os.kill(zygote, signal.SIGSTOP)
    try:
        shim, _ = await chunks.start(["sh", "-c", f"echo ran >> {runs}"])
        assert shim.is_child, "exec'd, not forked"
        assert await shim.wait() == ShimResult(0, "exit", killed=0)
    finally:
        os.kill(zygote, signal.SIGCONT)
    await eventually(lambda: _dead(zygote), what="the thawed zygote to go")
    assert runs.read_text() == "ran\n"


async def test_a_frozen_zygote_that_ends_later_leaves_its_successors_shims_alone(
    chunks: ForkedChunks, eventually: Poll, monkeypatch: pytest.MonkeyPatch
) -> None:
    from agent import zygote_client

    monkeypatch.setattr(zygote_client, "FORK_TIMEOUT", 0.5)
    monkeypatch.setattr(zygote_client, "RETRY_AFTER", 0.0)
    frozen = chunks.zygote.pid
    assert frozen is not None
    os.kill(frozen, signal.SIGSTOP)
    fallback, _ = await chunks.start(["true"])
    assert fallback.is_child
    assert (await fallback.wait()).returncode == 0

    running, _ = await chunks.start(["sleep", "0.5"])  # forked by a new zygote
    assert not running.is_child
    assert chunks.zygote.pid not in (None, frozen)
    os.kill(frozen, signal.SIGKILL)  # its reader ends while the new zygote's shim runs
    await eventually(lambda: _dead(frozen), what="the frozen zygote's end")
    assert await running.wait() == ShimResult(0, "exit", killed=0)
    assert await running.process.wait() == 0, "its end still known"
    assert running.shim_pid in chunks.zygote._idle, "and it still takes the job's next chunk"


def _generic_chunk(number: int, argv: list[str]) -> AssignChunk:
    """Chunk ``number`` of job1 running ``argv`` (its shims are shared within job1)."""
    return AssignChunk(
        job_id="job1", chunk=number, attempt=1, renderer="generic", argv=argv,
        frames=[number], outputs=[], outdir="", output="", staging=False,
        timeouts=ChunkTimeouts(),
    )  # fmt: skip
