"""What one read of a big job being rendered costs the leader's loop.

A console watching a job, or ``farm show`` polled by a script, reads the
job's detail: its counters, one page of chunks, and its frame states as runs.
This renders a job of ``--chunks`` one-frame chunks on the scheduler alone
(``tests.scheduler.paper_farm``: one node of 1,000 slots) and, every
``--every`` chunk changes (a farm of 5,000 chunks a second read every 2 s
makes 10,000), times one read of the job's first page, as ``GET
/api/jobs/ID`` does (``Scheduler.job_detail`` with a page of 100 chunks).
The figure is the median read, after the first (which builds what later
reads keep).

``--old TREE`` runs another checkout (``git archive REV | tar -x -C /tmp/base``)
in a subprocess, alternating with this one, so both see the same machine.

    python bench/job_read.py --old /tmp/base --runs 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import side_by_side

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def measure(chunks: int, every: int) -> dict[str, Any]:
    import server
    from server.views import ChunkPage
    from tests.scheduler.paper_farm import Farm

    farm = Farm()
    farm.node("n1", slots=1000)
    job = farm.submit(frames=f"1-{chunks}")
    farm.dispatch()
    reads: list[float] = []
    changed = 0
    while running := farm.running().get("n1"):
        for job_id, chunk in running:
            farm.finish(job_id, chunk)
            changed += 1
        farm.dispatch()
        if changed >= every:
            changed = 0
            began = time.perf_counter()
            farm.scheduler.job_detail(job, ChunkPage(100))
            reads.append(time.perf_counter() - began)
    if farm.state(job) != "done":
        raise SystemExit(f"the job ended {farm.state(job)}, not done")
    later = reads[1:] or reads
    return {
        "imported": str(Path(server.__file__).parent.parent),
        "reads": len(reads),
        "first_ms": reads[0] * 1000,
        "median_ms": statistics.median(later) * 1000,
        "max_ms": max(later) * 1000,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--chunks", type=int, default=200_000)
    parser.add_argument("--every", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--old", help="another checkout to run beside this one")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    sizes = ["--chunks", str(args.chunks), "--every", str(args.every)]
    if args.child:
        sys.path.insert(0, str(Path.cwd()))
        print(json.dumps(measure(args.chunks, args.every)))
        return
    checkouts = side_by_side.trees(args.old, ROOT)
    runs = side_by_side.alternate(
        Path(__file__),
        checkouts,
        args.runs,
        sizes,
        lambda r: (
            f"{r['reads']} reads, the first {r['first_ms']:.1f} ms, then median "
            f"{r['median_ms']:.1f} ms, max {r['max_ms']:.1f} ms"
        ),
    )
    for name, results in runs.items():
        medians = [r["median_ms"] for r in results]
        print(
            f"{name}: a read every {args.every:,} changes of a {args.chunks:,}-chunk job: median "
            f"{statistics.median(medians):.1f} ms ({min(medians):.1f}-{max(medians):.1f}), "
            f"worst {max(r['max_ms'] for r in results):.1f} ms"
        )


if __name__ == "__main__":
    main()
