"""How long kill_tree takes for a 9-process renderer tree with a detached helper.

    python bench/kill_latency.py [runs]

Prints p50/p99 of the time from the kill request to the last process of the
tree gone (exited or a zombie waiting to be reaped). Target: p99 < 50 ms.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import tempfile
import textwrap
import time
from pathlib import Path

from agent.process_tree import MARKER_VARIABLE, become_subreaper, find_marked, kill_tree

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
        record(); spawn("leaf")
    elif role == "leaf":
        record()
    elif role == "detach":
        record()
        if os.fork() == 0:
            os.setsid()
            if os.fork() == 0:
                record(); time.sleep(600)
            os._exit(0)
    time.sleep(600)
    """
)


async def one_run(folder: Path, marker: str) -> float:
    script = folder / "tree.py"
    script.write_text(TREE)
    pids = folder / "pids"
    pids.mkdir()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(script),
        str(pids),
        "root",
        start_new_session=True,
        env={**os.environ, MARKER_VARIABLE: marker},
    )
    deadline = time.monotonic() + 30
    while len(list(pids.iterdir())) < 9:
        if time.monotonic() > deadline:
            raise RuntimeError("tree did not start")
        await asyncio.sleep(0.01)
    started = time.perf_counter()
    report = await kill_tree(marker, proc.pid, keep={proc.pid})
    elapsed = time.perf_counter() - started
    await proc.wait()
    if not report.complete or find_marked(marker):
        raise RuntimeError(f"the tree of {marker} survived kill_tree")
    return elapsed


async def main(runs: int) -> None:
    become_subreaper()
    times = []
    with tempfile.TemporaryDirectory() as tmp:
        for run in range(runs):
            folder = Path(tmp) / str(run)
            folder.mkdir()
            times.append(await one_run(folder, f"bench:{run}:1:{os.getpid()}"))
    times.sort()
    p99 = times[min(len(times) - 1, round(0.99 * (len(times) - 1)))]
    print(
        f"kill_tree, 9-process trees, {runs} runs: p50 {statistics.median(times) * 1000:.1f} ms, "
        f"p99 {p99 * 1000:.1f} ms, max {times[-1] * 1000:.1f} ms"
    )


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 20))
