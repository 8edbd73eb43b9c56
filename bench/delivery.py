"""A node's copy of finished frames into the sync root, this checkout against another.

``CopyToSyncRoot.deliver`` as a chunk's end calls it: ``--files`` frames of
``--mb`` MB each, copied from a staging folder into a sync root on the same
disk, one after the other. Since the twenty-fifth session every frame is
opened, and every folder on its way into the sync root, one step at a time
without following a symlink (``agent.no_follow``), where before a path was
checked with ``realpath`` and then used. This measures what that costs,
side by side with ``--old TREE`` (``git archive REV | tar -x -C TREE``),
alternating, medians of ``--runs``. Each run has its own folders, under
``--in`` (default: the system's temporary folder).

``--take-back`` (this checkout alone, as root) first gives the frames to the
user ``nobody`` and times what an agent with ``--render-user`` adds before
its copies: taking the attempt's folder back (``agent.no_follow.take_back``,
a copy of every frame of the user's).

    python bench/delivery.py --old /tmp/base --runs 5
    python bench/delivery.py --take-back --runs 5
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
NOBODY = 65534


async def measure(files: int, mb: float, where: Path, take_back: bool) -> dict[str, Any]:
    from agent.staging import CopyToSyncRoot, Fence

    staged = where / "staging/job/0.1/renders/shot"
    staged.mkdir(parents=True)
    root = where / "root"
    root.mkdir()
    block = os.urandom(1024 * 1024)
    whole, part = divmod(int(mb * 1024 * 1024), len(block))
    for frame in range(files):
        with (staged / f"f_{frame:04d}.exr").open("wb") as out:
            for _ in range(whole):
                out.write(block)
            out.write(block[:part])
    os.sync()  # the frames on disk before the clock starts, as a render's would be
    taken_ms = None
    if take_back:
        from agent.no_follow import take_back as take

        for path in [staged.parents[1], *staged.parents[1].rglob("*")]:
            os.chown(path, NOBODY, NOBODY)
        began = time.perf_counter()
        take(where / "staging", ("job", "0.1"), NOBODY)
        taken_ms = round(1000 * (time.perf_counter() - began) / files, 3)
    fence = Fence(job_id="job", chunk=0, attempt=1, refusal=lambda: None)
    delivery = CopyToSyncRoot(root)
    started = time.perf_counter()
    cpu_started = time.process_time()
    for frame in range(files):
        name = f"renders/shot/f_{frame:04d}.exr"
        await delivery.deliver(name, staged / f"f_{frame:04d}.exr", fence)
    wall = time.perf_counter() - started
    cpu = time.process_time() - cpu_started
    return {
        "files": files,
        "ms_per_file": round(1000 * wall / files, 3),
        "cpu_ms_per_file": round(1000 * cpu / files, 3),
        "take_back_ms_per_file": taken_ms,
    }


def run_tree(
    tree: Path, files: int, mb: float, base: Path, take_back: bool = False
) -> dict[str, Any]:
    where = Path(tempfile.mkdtemp(prefix="delivery-", dir=base))
    try:
        command = [sys.executable, str(HERE / "delivery.py"), "--child", str(where)]
        command += ["--files", str(files), "--mb", str(mb)]
        if take_back:
            command.append("--take-back")
        env = {**os.environ, "PYTHONPATH": str(tree)}
        out = subprocess.run(command, env=env, cwd=tree, capture_output=True, text=True, check=True)
        result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
        return result
    finally:
        shutil.rmtree(where, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--files", type=int, default=200)
    parser.add_argument("--mb", type=float, default=1.0, help="size of each frame")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--old", help="another checkout to run beside this one")
    parser.add_argument("--in", dest="base", default=tempfile.gettempdir())
    parser.add_argument("--take-back", action="store_true", help="time a render user's take-back")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        result = asyncio.run(measure(args.files, args.mb, Path(args.child), args.take_back))
        print(json.dumps(result))
        return
    trees = {"this": HERE.parent}
    if args.old:
        trees["old"] = Path(args.old).resolve()
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in trees}
    for number in range(args.runs):
        for name, tree in trees.items():
            result = run_tree(tree, args.files, args.mb, Path(args.base), args.take_back)
            results[name].append(result)
            print(f"run {number + 1} {name}: {result}", flush=True)
    for name, runs in results.items():
        wall = statistics.median(r["ms_per_file"] for r in runs)
        cpu = statistics.median(r["cpu_ms_per_file"] for r in runs)
        print(f"{name}: median {wall:.3f} ms a file, {cpu:.3f} ms of CPU ({args.mb:g} MB frames)")
        if args.take_back:
            taken = statistics.median(r["take_back_ms_per_file"] for r in runs)
            print(f"{name}: its take-back {taken:.3f} ms a file before that")


if __name__ == "__main__":
    main()
