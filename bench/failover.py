"""Leader failover on PostgreSQL: how long a farm goes without dispatch, and what a commit costs.

Part 1, the failover (``--runs`` times, 10 by default): two real leaders on a
throwaway PostgreSQL cluster (``tests/helpers/postgres.py``) with the product's
lease (``leader_lease = 3``, renewed every 0.5 s), two agents of two slots
given both URLs, a job of one-frame chunks that sleep 0.3 s. Each run
``kill -9``s the active leader mid-render and measures, from the signal:

- takeover: until the standby's ``/healthz`` says it is active (polled every 10 ms);
- first dispatch: until the first attempt the new leader started (the attempt's
  ``started``, the leader's clock, which is this machine's).

The killed leader is then started again (a standby) and the next run kills
whichever is active, so the two take turns.

Part 2, the dispatch rate: ``bench/leader_core.py``'s measurement (the real
``Leader`` on one loop, simulated agents that finish each chunk at once) on
SQLite and on PostgreSQL, alternating in one run, in child processes.

    python bench/failover.py                    # both parts
    python bench/failover.py --runs 3 --core-chunks 2000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from tests.e2e.fault_support import first_attempt_after, wait_until  # noqa: E402
from tests.helpers.failover import FailoverFarm  # noqa: E402
from tests.helpers.postgres import throwaway_cluster  # noqa: E402


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def failover_runs(runs: int, lease: float, durable: bool) -> list[dict[str, float]]:
    results: list[dict[str, float]] = []
    with throwaway_cluster(durable=durable) as cluster:
        url = cluster.new_database()
        folder = Path(tempfile.mkdtemp(prefix="bench-failover-"))
        with FailoverFarm(folder, url, node_timeout=15.0, lease=lease) as farm:
            farm.start("a")
            farm.start("b")
            farm.start_agent("n1")
            farm.start_agent("n2")
            farm.wait_online("n1", "n2")
            for number in range(runs):
                job = json.loads(
                    farm.cli(
                        "submit",
                        "--json",
                        "--name",
                        f"run{number}",
                        "--frames",
                        "1-60",
                        "--chunk",
                        "1",
                        "--",
                        "sleep",
                        "0.3",
                    ).stdout  # fmt: skip
                )["id"]

                def some_done(job: str = job) -> bool:
                    chunks = farm.show(job)["chunks"]
                    return sum(c["state"] == "done" for c in chunks) >= 4

                wait_until(some_done, 60.0, "4 chunks done")
                victim = farm.wait_active()
                killed = victim.kill()
                new = farm.wait_active(60.0, not_=victim.name)
                took_over = time.time()

                def dispatched(job: str = job, killed: float = killed) -> float | None:
                    return first_attempt_after(farm.show(job), killed)

                first = wait_until(dispatched, 60.0, "the new leader's first dispatch")
                result = {
                    "takeover_s": took_over - killed,
                    "first_dispatch_s": first - killed,
                }
                results.append(result)
                print(f"run {number + 1}: {victim.name} -> {new.name}: {result}", flush=True)
                farm.client.action("cancel", [job])
                farm.start(victim.name)  # back as a standby for the next run
    return results


async def core_child(store: str | None, chunks: int, agents: int, slots: int) -> dict[str, Any]:
    """``leader_core.measure`` with the leader's store set to ``store`` (None: SQLite)."""
    import leader_core

    from server.config import LeaderSettings

    if store is not None:
        # leader_core builds its own settings; only where the farm is kept differs here.
        LeaderSettings.store_url = property(lambda self: store)  # type: ignore[assignment,method-assign]
    result: dict[str, Any] = await leader_core.measure(chunks, agents, slots, None)
    return result


def core_runs(runs: int, chunks: int, durable: bool) -> dict[str, list[dict[str, Any]]]:
    results: dict[str, list[dict[str, Any]]] = {"sqlite": [], "postgresql": []}
    with throwaway_cluster(durable=durable) as cluster:
        for number in range(runs):
            for name in results:
                command = [sys.executable, str(Path(__file__)), "--core-child"]
                command += ["--core-chunks", str(chunks)]
                if name == "postgresql":
                    command += ["--store", cluster.new_database()]
                env = {**os.environ, "PYTHONPATH": f"{HERE}:{HERE.parent}"}
                out = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
                result = json.loads(out.stdout.strip().splitlines()[-1])
                results[name].append(result)
                print(f"core run {number + 1} {name}: {result}", flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=10, help="failovers")
    parser.add_argument("--lease", type=float, default=3.0, help="leader_lease (s)")
    parser.add_argument("--core-runs", type=int, default=3)
    parser.add_argument("--core-chunks", type=int, default=5000)
    parser.add_argument("--durable", action="store_true", help="PostgreSQL with fsync on")
    parser.add_argument("--skip-failover", action="store_true")
    parser.add_argument("--out", default=str(HERE / "results" / "failover.json"))
    parser.add_argument("--core-child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--store", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.core_child:
        result = asyncio.run(core_child(args.store, args.core_chunks, 10, 4))
        print(json.dumps(result))
        return
    record: dict[str, Any] = {"benchmark": "failover", "lease": args.lease, "durable": args.durable}
    if not args.skip_failover:
        failovers = failover_runs(args.runs, args.lease, args.durable)
        record["failovers"] = failovers
        for key in ("takeover_s", "first_dispatch_s"):
            values = [r[key] for r in failovers]
            summary = {
                "p50": statistics.median(values),
                "p99": percentile(values, 0.99),
                "max": max(values),
            }
            record[key] = summary
            print(f"{key}: p50 {summary['p50']:.2f} s, p99 {summary['p99']:.2f} s", flush=True)
    core = core_runs(args.core_runs, args.core_chunks, args.durable)
    record["core"] = core
    medians = {
        name: {
            key: statistics.median(r[key] for r in results)
            for key in ("us_per_chunk", "cpu_us_per_chunk")
        }
        for name, results in core.items()
    }
    record["core_median"] = medians
    for name, values in medians.items():
        print(f"{name}: {values['us_per_chunk']:.0f} µs per chunk", flush=True)
    ratio = medians["postgresql"]["us_per_chunk"] / medians["sqlite"]["us_per_chunk"]
    print(f"PostgreSQL / SQLite per chunk: x{ratio:.2f}")
    Path(args.out).write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
