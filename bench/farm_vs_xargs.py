"""The farm's overhead against ``xargs -P2``, both in one run on this machine.

200 commands of ``sleep 0.05``: through the farm (one leader, one agent with
2 slots, a generic job of frames 1-200 in chunks of 1 frame, argv
``["sleep", "0.05"]``, no output, no staging) and through
``xargs -P2``. Runs alternate (xargs, farm, xargs, farm ...) so both see the
same machine load; the median of 3 runs of each is compared. A farm run is
timed from the submit call to the job's finish time as the leader recorded
it (same machine, same clock), polling only every 250 ms so the poll adds no
load; the leader's own created->finished time is reported next to it.

    python bench/farm_vs_xargs.py [--runs 3] [--commands 200] [--out bench/results/...]
    python bench/farm_vs_xargs.py --farm-only --runs 10   # the farm's runs alone, back to back
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from farmtui.client import FarmClient
from farmtui.localfarm import LocalFarm, free_port
from farmtui.protocol import JobSpec

SLEEP = "0.05"
SLOTS = 2
HERE = Path(__file__).resolve().parent


def run_xargs(commands: int) -> float:
    """Seconds for ``xargs -P2`` to run ``sleep 0.05`` once per input line."""
    lines = "".join(f"{i}\n" for i in range(1, commands + 1))
    start = time.perf_counter()
    subprocess.run(
        ["xargs", f"-P{SLOTS}", "-I{}", "sleep", SLEEP],
        input=lines.encode(),
        check=True,
    )
    return time.perf_counter() - start


def run_farm(farm: FarmClient, commands: int, run: int) -> tuple[float, float | None]:
    """Seconds from submit to seen-done, and the leader's created->finished time."""
    spec = JobSpec(
        name=f"bench-xargs-{run}",
        frames=f"1-{commands}",
        chunk=1,
        renderer="generic",
        argv=["sleep", SLEEP],
        staging=False,
    )
    # The farm's own clock says when the job finished; polling only learns that it
    # has, rarely, so the poll adds no load to the two cores the farm runs on.
    start = time.time()
    job = farm.submit(spec)
    view = farm.wait(job.id, interval=0.25)
    if view.state != "done" or view.finished is None:
        raise SystemExit(f"bench job {job.id} ended {view.state}: see `farm show {job.id}`")
    elapsed = view.finished - start
    leader_time = view.finished - view.created
    farm.action("delete", [job.id])
    return elapsed, leader_time


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--commands", type=int, default=200)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "farm_vs_xargs.json")
    parser.add_argument(
        "--farm-only", action="store_true", help="no xargs runs: the farm's against the ideal"
    )
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="farm-bench-") as tmp:
        local = LocalFarm(Path(tmp) / "data", Path(tmp) / "root", port=free_port())
        with local:
            local.start_leader()
            agent = local.start_agent(1, slots=SLOTS, name="bench-agent")
            local.wait_nodes_online([agent.name])
            with FarmClient(local.url, local.admin_token()) as farm:
                # One warm-up of each, not counted: imports, page cache, first connections.
                run_xargs(10)
                run_farm(farm, 10, 0)
                xargs_times: list[float] = []
                farm_times: list[float] = []
                leader_times: list[float] = []
                for run in range(1, args.runs + 1):
                    if not args.farm_only:
                        xargs_times.append(run_xargs(args.commands))
                    seen, leader = run_farm(farm, args.commands, run)
                    farm_times.append(seen)
                    if leader is not None:
                        leader_times.append(leader)
                    print(
                        f"run {run}: "
                        + ("" if args.farm_only else f"xargs {xargs_times[-1]:.3f} s, ")
                        + f"farm {seen:.3f} s"
                        + (f" (leader {leader:.3f} s)" if leader is not None else ""),
                        flush=True,
                    )

    farm_median = statistics.median(farm_times)
    ideal = args.commands * float(SLEEP) / SLOTS
    print(f"farm (1 agent, {SLOTS} slots): median {farm_median:.3f} s")
    print(f"farm / ideal ({ideal:.3f} s): {farm_median / ideal:.4f}")
    xargs_median = statistics.median(xargs_times) if xargs_times else None
    ratio = overhead_ms = None
    if xargs_median is not None:
        ratio = farm_median / xargs_median
        overhead_ms = (farm_median - xargs_median) / args.commands * SLOTS * 1000
        print(f"xargs -P{SLOTS}: median {xargs_median:.3f} s")
        print(f"ratio farm/xargs: {ratio:.2f}  (~{overhead_ms:.1f} ms extra per chunk and slot)")

    args.out.parent.mkdir(parents=True, exist_ok=True)
    result = {
        "benchmark": "farm_vs_xargs",
        "commands": args.commands,
        "command": ["sleep", SLEEP],
        "slots": SLOTS,
        "runs": args.runs,
        "xargs_seconds": xargs_times,
        "farm_seconds": farm_times,
        "farm_leader_seconds": leader_times,
        "xargs_median": xargs_median,
        "farm_median": farm_median,
        "farm_over_ideal": farm_median / ideal,
        "ratio": ratio,
        "overhead_ms_per_chunk_slot": overhead_ms,
        "machine": {
            "python": sys.version.split()[0],
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
        },
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
