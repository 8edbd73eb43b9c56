"""What a big job that is done costs the leader's garbage collector.

A full collection stops the whole leader while it walks every object the
collector tracks, and the leader keeps every chunk it has touched for as
long as it keeps the job. This runs a job of ``--chunks`` one-frame chunks
to done on the scheduler alone (``tests.scheduler.paper_farm``: one node of
1,000 slots), then reports the objects the collector tracks and a full
collection's time (``gc.collect()``, median of 7).

``--old TREE`` runs another checkout (``git archive REV | tar -x -C /tmp/base``)
in a subprocess, alternating with this one, so both see the same machine.

    python bench/collector.py --old /tmp/base --runs 5
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import side_by_side

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def measure(chunks: int) -> dict[str, Any]:
    import server
    from tests.scheduler.paper_farm import Farm

    farm = Farm()
    farm.node("n1", slots=1000)
    job = farm.submit(frames=f"1-{chunks}")
    farm.dispatch()
    while running := farm.running().get("n1"):
        for job_id, chunk in running:
            farm.finish(job_id, chunk)
        farm.dispatch()
    if farm.state(job) != "done":
        raise SystemExit(f"the job ended {farm.state(job)}, not done")
    gc.collect()
    times = []
    for _ in range(7):
        began = time.perf_counter()
        gc.collect()
        times.append(time.perf_counter() - began)
    return {
        "imported": str(Path(server.__file__).parent.parent),
        "tracked": len(gc.get_objects()),
        "collect_ms": statistics.median(times) * 1000,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--chunks", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--old", help="another checkout to run beside this one")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        sys.path.insert(0, str(Path.cwd()))
        print(json.dumps(measure(args.chunks)))
        return
    checkouts = side_by_side.trees(args.old, ROOT)
    runs = side_by_side.alternate(
        Path(__file__),
        checkouts,
        args.runs,
        ["--chunks", str(args.chunks)],
        lambda r: f"{r['tracked']:,} objects tracked, a full collection {r['collect_ms']:.1f} ms",
    )
    for name, results in runs.items():
        times = [r["collect_ms"] for r in results]
        print(
            f"{name}: {results[-1]['tracked']:,} objects tracked, a full collection "
            f"median {statistics.median(times):.1f} ms ({min(times):.1f}-{max(times):.1f})"
        )


if __name__ == "__main__":
    main()
