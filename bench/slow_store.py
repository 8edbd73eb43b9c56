"""A database that stops answering for a few seconds: does the leader's loop wait with it?

One leader (``scale.py``'s ``BenchFarm``) on a throwaway PostgreSQL cluster
(``tests/helpers/postgres.py``), 20 simulated agents × 4 slots
(``tests/helpers/sim_agents.py``) finishing one-frame chunks at once. After
``--warm`` seconds of that, every process of the cluster is stopped
(SIGSTOP: a database host frozen, a network partition without a reset) for
``--stall`` seconds, then continued. Measured from beside the leader:

- ``/healthz``, asked every 50 ms on a kept-alive connection: the longest
  wait and the 99th percentile of the probes waiting during the stall;
- the simulated agents' slowest lease renewal (a heartbeat to its
  ``LeaseRenewed``) and lease lapses (a renewal later than the lease: a real
  agent kills its renders then), the nodes the leader told they were lost,
  and the chunks completed;
- whether the leader stepped down (its log).

The stall stays well below the leader lease (3 s, renewed every 0.5 s by
default), so the leader may go on: at 2 s, a renewal that came back late
after the stall made it step down once in five runs, as its lease says.
Run it from each checkout to compare, alternating::

    python bench/slow_store.py --runs 3      # --stall 1.5 --warm 3 --after 4
"""

from __future__ import annotations

import argparse
import json
import signal
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psutil

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from scale import BenchFarm, Shape, run_sim, submit_load  # noqa: E402

from tests.helpers.postgres import PostgresCluster, throwaway_cluster  # noqa: E402


def cluster_processes(cluster: PostgresCluster) -> list[psutil.Process]:
    """The postmaster and every process it started (backends, WAL writer ...)."""
    postmaster = psutil.Process(int((cluster.data / "postmaster.pid").read_text().split()[0]))
    return [postmaster, *postmaster.children(recursive=True)]


def one_run(
    cluster: PostgresCluster, folder: Path, warm: float, stall: float, after: float
) -> dict[str, Any]:
    shape = Shape("slow", jobs=1, chunks=200_000, agents=20)
    toml = f'store = "{cluster.new_database()}"\n'
    with BenchFarm(folder, toml) as farm:
        farm.start()
        ids, _, total = submit_load(farm, shape, 120.0)
        cap = warm + stall + after
        reports: list[Any] = []
        sim = threading.Thread(
            target=lambda: reports.append(run_sim(farm, shape, total, cap, folder / "sim.json")[0])
        )
        sim.start()
        time.sleep(warm)  # the load's length before the fault, not a wait for a condition
        frozen = cluster_processes(cluster)
        stopped = time.time()
        for process in frozen:
            process.send_signal(signal.SIGSTOP)
        try:
            time.sleep(stall)  # the fault's length
        finally:
            for process in frozen:
                process.send_signal(signal.SIGCONT)
        continued = time.time()
        sim.join()
        assert farm.monitor is not None
        during = farm.monitor.window(stopped, continued)
        report = reports[0]
        log = farm.log.read_text(errors="replace")
        return {
            "healthz_max": during["healthz_max"],
            "healthz_p99": during["healthz_p99"],
            "renewal_max": report.renewal_max,
            "lease_lapses": report.lease_lapses,
            "told_lost": report.told_lost,
            "kills": report.kills,
            "completions": report.completions,
            "stepped_down": next(
                (line for line in log.splitlines() if "stepping down" in line), None
            ),
            "ids": ids,
        }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--stall", type=float, default=1.5, help="seconds the database is stopped")
    parser.add_argument("--warm", type=float, default=3.0, help="seconds of load before it")
    parser.add_argument("--after", type=float, default=4.0, help="seconds of load after it")
    parser.add_argument("--out", default=str(HERE / "results" / "slow_store.json"))
    args = parser.parse_args()
    runs: list[dict[str, Any]] = []
    with throwaway_cluster() as cluster, tempfile.TemporaryDirectory(prefix="farm-slow-") as tmp:
        for number in range(args.runs):
            run = one_run(cluster, Path(tmp) / str(number), args.warm, args.stall, args.after)
            runs.append(run)
            print(
                f"run {number + 1}: /healthz during the {args.stall:g} s stall: longest "
                f"{run['healthz_max'] * 1000:.0f} ms, p99 {run['healthz_p99'] * 1000:.0f} ms; "
                f"slowest lease renewal {run['renewal_max'] * 1000:.0f} ms, "
                f"lease lapses {run['lease_lapses']}, told lost {run['told_lost']}, "
                f"kills {run['kills']}, stepped down {run['stepped_down']}, "
                f"{run['completions']:,} chunks done",
                flush=True,
            )
    longest = statistics.median(r["healthz_max"] for r in runs)
    print(f"median of the longest /healthz waits: {longest * 1000:.0f} ms")
    record = {"benchmark": "slow_store", **vars(args), "runs": runs, "healthz_max_median": longest}
    Path(args.out).write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
