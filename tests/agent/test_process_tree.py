"""kill_tree takes the whole renderer tree, detached helpers included."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path
from typing import Any

import psutil
import pytest

from agent.process_tree import MARKER_VARIABLE, exit_status, find_marked, kill_tree


def is_dead(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


# root -> 3 branches -> 1 leaf each, plus a helper that double-forks and calls
# setsid (like After Effects' AfterFX): 9 processes that each record their pid.
TREE = textwrap.dedent(
    """
    import os, subprocess, sys, time
    pids, role = sys.argv[1], sys.argv[2]

    def record():
        open(os.path.join(pids, str(os.getpid())), "w").close()

    def spawn(role):
        return subprocess.Popen([sys.executable, __file__, pids, role])

    if role == "root":
        record()
        for _ in range(3):
            spawn("branch")
        spawn("detach")
    elif role == "branch":
        record()
        spawn("leaf")
    elif role == "leaf":
        record()
    elif role == "detach":
        record()
        if os.fork() == 0:
            os.setsid()
            if os.fork() == 0:
                record()
                time.sleep(600)
            os._exit(0)
    time.sleep(600)
    """
)


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


async def _start_tree(tmp_path: Path, marker: str) -> tuple[asyncio.subprocess.Process, Path]:
    script = tmp_path / "tree.py"
    script.write_text(TREE)
    pids = tmp_path / "pids"
    pids.mkdir()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(script),
        str(pids),
        "root",
        start_new_session=True,
        env={**os.environ, MARKER_VARIABLE: marker},
    )
    return proc, pids


async def test_kill_tree_kills_nine_processes_including_a_detached_helper(
    tmp_path: Path, eventually: Any
) -> None:
    marker = f"jobk:1:1:{uuid.uuid4().hex}"
    proc, pids = await _start_tree(tmp_path, marker)
    await eventually(lambda: len(list(pids.iterdir())) == 9, what="9 processes", within=20)
    recorded = [int(p.name) for p in pids.iterdir()]
    detached = [pid for pid in recorded if os.getsid(pid) != proc.pid]
    assert len(detached) == 1, "one helper left the renderer's session"
    assert sorted(find_marked(marker)) == sorted(recorded)

    report = await kill_tree(marker, proc.pid, grace=0.5, keep={proc.pid})

    assert report.complete
    assert report.signalled >= 1  # the detached helper at least: it left the group
    assert await proc.wait() == -signal.SIGTERM
    # Dead: gone, or a zombie waiting for its new parent (init, on a busy machine) to reap it.
    await eventually(lambda: all(is_dead(pid) for pid in recorded), what="dead")
    assert find_marked(marker) == []


async def test_kill_tree_escalates_to_sigkill_for_processes_ignoring_sigterm(
    tmp_path: Path, eventually: Any
) -> None:
    marker = f"jobk:2:1:{uuid.uuid4().hex}"
    ready = tmp_path / "ready"
    script = (
        "import signal, time, sys; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        f"open({str(ready)!r}, 'w').close(); time.sleep(600)"
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        script,
        start_new_session=True,
        env={**os.environ, MARKER_VARIABLE: marker},
    )
    await eventually(ready.exists, what="the stubborn renderer")
    report = await kill_tree(marker, proc.pid, grace=0.1, keep={proc.pid})
    assert report.killed_hard >= 1
    assert await proc.wait() == -signal.SIGKILL


async def test_kill_tree_with_nothing_to_kill_returns_at_once() -> None:
    report = await kill_tree("nothing:0:0:none")
    assert report.signalled == 0
    assert report.complete


@pytest.mark.parametrize(
    ("code", "status"), [(0, "0"), (1, "1"), (-9, "SIGKILL"), (-15, "SIGTERM"), (-11, "SIGSEGV")]
)
def test_exit_status_names_signals(code: int, status: str) -> None:
    assert exit_status(code) == status


async def test_kill_latency_for_nine_process_trees(tmp_path: Path, eventually: Any) -> None:
    """Kill request to last process gone, for well-behaved trees (see bench/kill_latency.py)."""
    latencies = []
    for run in range(3):
        marker = f"jobl:{run}:1:{uuid.uuid4().hex}"
        folder = tmp_path / str(run)
        folder.mkdir()
        proc, pids = await _start_tree(folder, marker)
        await eventually(lambda p=pids: len(list(p.iterdir())) == 9, what="9 processes")
        report = await kill_tree(marker, proc.pid, keep={proc.pid})
        await proc.wait()
        latencies.append(report.seconds)
    assert max(latencies) < 1.0, latencies


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl is Linux's")
@pytest.mark.parametrize("protected", [True, False])
def test_the_agent_is_made_not_dumpable(protected: bool) -> None:
    """A job's command runs as the agent's user: it read FARM_TOKEN (exported where the
    agent was started) from /proc/<agent>/environ. Not dumpable, only root may. (The
    tests run as root, which may read it all the same: the flag is what is checked.)"""
    call = "not_dumpable()" if protected else "None"
    code = (
        "import ctypes; from agent.process_tree import not_dumpable; "
        f"{call}; print(ctypes.CDLL(None).prctl(3, 0, 0, 0, 0))"  # PR_GET_DUMPABLE
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == ("0" if protected else "1")
