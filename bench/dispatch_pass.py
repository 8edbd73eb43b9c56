"""One dispatch pass on an idle farm given a big job: its cost as the farm grows.

The scheduler alone (no leader, no sockets): N nodes × 4 slots connect, a
job of 100,000 one-frame chunks is submitted, and the passes that fill every
slot are timed (``Scheduler.dispatch``, as the leader runs them one after
another). Figures per farm size: the longest pass, all of them together, and
µs per assignment, which stays flat when picking a node costs O(log n).
``--old TREE`` runs another checkout beside this one, alternating.

    python bench/dispatch_pass.py --old /tmp/base --runs 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import side_by_side

HERE = Path(__file__).resolve().parent
SIZES = (30, 100, 300, 600)


def measure(nodes: int) -> dict[str, Any]:
    from farmtui.protocol import AgentHello, JobSpec
    from server.scheduler import Scheduler
    from server.scheduler_config import SchedulerConfig

    scheduler = Scheduler(SchedulerConfig())
    now = 1000.0
    spec = JobSpec(name="big", frames="1-100000", chunk=1, argv=["true"])
    scheduler.submit("big", spec, "bench", now)
    for index in range(nodes):
        hello = AgentHello(name=f"n{index:04d}", slots=4, agent_id=f"a{index}", prefetch=4)
        scheduler.node_connected(hello, now)
    passes: list[float] = []
    assigned = 0
    while assigned < nodes * 4:
        began = time.perf_counter()
        changes = scheduler.dispatch(now)
        passes.append(time.perf_counter() - began)
        if not changes.assignments:
            break
        assigned += len(changes.assignments)
    return {
        "nodes": nodes,
        "assigned": assigned,
        "passes": len(passes),
        "longest_ms": round(1000 * max(passes), 2),
        "total_ms": round(1000 * sum(passes), 2),
        "us_per_assignment": round(1e6 * sum(passes) / max(assigned, 1), 1),
    }


def child() -> None:
    import server

    result = {"imported": str(Path(server.__file__).resolve().parent.parent)}
    result["sizes"] = [measure(nodes) for nodes in SIZES]  # type: ignore[assignment]
    print(json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--old", help="another checkout to run beside this one")
    parser.add_argument("--out", default=str(HERE / "results" / "dispatch_pass.json"))
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child()
        return

    def line(result: dict[str, Any]) -> str:
        return "; ".join(
            f"{s['nodes']} nodes: {s['passes']} pass(es), longest {s['longest_ms']} ms, "
            f"{s['us_per_assignment']} µs an assignment"
            for s in result["sizes"]
        )

    checkouts = side_by_side.trees(args.old, HERE.parent)
    results = side_by_side.alternate(Path(__file__), checkouts, args.runs, [], line)
    summary = {
        name: {
            str(nodes): {
                key: statistics.median(r["sizes"][i][key] for r in runs)
                for key in ("passes", "longest_ms", "total_ms", "us_per_assignment")
            }
            for i, nodes in enumerate(SIZES)
        }
        for name, runs in results.items()
    }
    for name, sizes in summary.items():
        print(
            f"{name} (medians): "
            + "; ".join(
                f"{nodes} nodes: longest pass {s['longest_ms']} ms of {s['passes']}, "
                f"{s['us_per_assignment']} µs an assignment"
                for nodes, s in sizes.items()
            )
        )
    Path(args.out).write_text(json.dumps({"runs": results, "summary": summary}, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
