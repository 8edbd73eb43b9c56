"""The scheduler's cost per event against job size and job count (pure: no network, no disk).

    python bench/scheduler_scale.py                 # this tree
    python bench/scheduler_scale.py --old HEAD      # also the given commit, side by side
    python bench/scheduler_scale.py --old HEAD --growth 300000   # + cost against chunks done

Farms of 300 nodes x 4 slots (1,200 slots; 100 nodes for the smaller shapes) run one of:

- one job of 1,000 or 100,000 one-frame chunks;
- 10 or 1,000 jobs of 100 one-frame chunks each.

Every slot is filled, then each cycle is what the leader does for one chunk:
``chunk_started``, ``chunk_finished`` (done), ``dispatch`` (which assigns the
next chunk), and the job's ``job_view`` (what consoles are sent). A heartbeat
is ``node_heartbeat`` then ``dispatch`` with every slot busy. The figures are
medians of 3 runs, in microseconds per event.

The store part saves each cycle's ``Changes`` to a real SQLite file and counts
the rows and bytes written per completed chunk, and measures the database
after submitting a job of 1,000,000 one-frame chunks.

``--old REV`` extracts that commit's tree (``git archive``, the working tree
is not touched) and runs the same measurements there in a subprocess.
Results go to ``bench/results/scheduler_scale.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import deque
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
NODES, SLOTS = 300, 4
RUNS = 3


def _farm(
    jobs: int, chunks: int, nodes: int = NODES
) -> tuple[Any, deque[tuple[str, str, int, int]], float]:
    from farmtui.protocol import AgentHello, JobSpec
    from server.scheduler import Scheduler, SchedulerConfig

    scheduler = Scheduler(SchedulerConfig(node_timeout=1e9))
    now = 1000.0
    for j in range(jobs):
        spec = JobSpec(name=f"job{j}", frames=f"1-{chunks}", chunk=1, argv=["render"])
        scheduler.submit(f"job{j}", spec, "alice", now)
    for n in range(nodes):
        scheduler.node_connected(AgentHello(name=f"n{n:03d}", slots=SLOTS), now)
    running: deque[tuple[str, str, int, int]] = deque()
    for a in scheduler.dispatch(now).assignments:
        running.append((a.node, a.message.job_id, a.message.chunk, a.message.attempt))
    return scheduler, running, now


def _cycles(
    scheduler: Any, running: deque[tuple[str, str, int, int]], now: float, count: int, store: Any
) -> tuple[float, float, float]:
    """(µs per cycle without the view, µs per job_view, now)."""
    from farmtui.protocol import ChunkFinished

    events = views = 0.0
    for _ in range(count):
        now += 0.001
        node, job_id, chunk, attempt = running.popleft()
        began = time.perf_counter()
        changes = scheduler.chunk_started(node, job_id, chunk, attempt, now)
        report = ChunkFinished(
            job_id=job_id,
            chunk=chunk,
            attempt=attempt,
            outcome="done",
            exit_status="0",
            # Render times vary, as real ones do (1-2 s): each lands somewhere in the
            # job's sorted times, not always at the end.
            started=now - 1.0 - (chunk * 7919 % 1000) / 1000,
            finished=now,
        )
        changes.merge(scheduler.chunk_finished(node, report, now))
        changes.merge(scheduler.dispatch(now))
        middle = time.perf_counter()
        scheduler.job_view(job_id)
        ended = time.perf_counter()
        events += middle - began
        views += ended - middle
        if store is not None:
            store.save(changes, scheduler)
        for a in changes.assignments:
            running.append((a.node, a.message.job_id, a.message.chunk, a.message.attempt))
    return events / count * 1e6, views / count * 1e6, now


def _heartbeats(scheduler: Any, now: float, count: int) -> tuple[float, bool]:
    """(µs per heartbeat + dispatch with every slot busy, whether any would be committed)."""
    names = sorted(scheduler.nodes)
    commits = False
    began = time.perf_counter()
    for i in range(count):
        changes = scheduler.node_heartbeat(names[i % len(names)], 10.0, 20.0, now)
        changes.merge(scheduler.dispatch(now))
        commits |= bool(changes.jobs or changes.chunks or changes.nodes or changes.removed)
    return (time.perf_counter() - began) / count * 1e6, commits


def measure_events(cycles: int) -> dict[str, Any]:
    # (jobs, chunks per job, nodes): a job of 1,000 chunks gets 100 nodes (400 slots),
    # so that chunks still wait for a slot at the end of the cycles.
    shapes = {
        "1 job x 1,000 chunks": (1, 1_000, 100),
        "1 job x 100,000 chunks": (1, 100_000, NODES),
        "10 jobs x 100 chunks": (10, 100, 100),
        "1,000 jobs x 100 chunks": (1_000, 100, NODES),
    }
    out: dict[str, Any] = {}
    for label, (jobs, chunks, nodes) in shapes.items():
        runs: list[tuple[float, float, float, bool]] = []
        # Every cycle must find a waiting chunk to dispatch.
        count = min(cycles, jobs * chunks - nodes * SLOTS - 100)
        for _ in range(RUNS):
            scheduler, running, now = _farm(jobs, chunks, nodes)
            _cycles(scheduler, running, now, min(count, 50), None)  # warm-up
            event, view, now = _cycles(scheduler, running, now, count, None)
            beat, commits = _heartbeats(scheduler, now, 2_000)
            runs.append((event, view, beat, commits))
        out[label] = {
            "cycles": count,
            "slots": nodes * SLOTS,
            "cycle_us": statistics.median(r[0] for r in runs),
            "job_view_us": statistics.median(r[1] for r in runs),
            "heartbeat_us": statistics.median(r[2] for r in runs),
            "heartbeat_commits": any(r[3] for r in runs),
        }
        print(f"  {label}: {out[label]}", file=sys.stderr, flush=True)
    return out


class _Counting:
    """A sqlite3 connection that counts the rows and bytes handed to it."""

    def __init__(self, db: Any) -> None:
        self._db = db
        self.rows = 0
        self.bytes = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._db, name)

    def executemany(self, sql: str, rows: Any) -> Any:
        rows = list(rows)
        if sql.lstrip().upper().startswith("INSERT"):
            self.rows += len(rows)
            self.bytes += sum(len(v) for row in rows for v in row if isinstance(v, str))
        return self._db.executemany(sql, rows)

    def execute(self, *args: Any) -> Any:
        return self._db.execute(*args)


def measure_store(big_frames: int, cycles: int) -> dict[str, Any]:
    from farmtui.protocol import JobSpec
    from server.scheduler import Scheduler, SchedulerConfig
    from server.store import Store

    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for label, (jobs, chunks) in {
            "1 job x 100,000 chunks": (1, 100_000),
            "1,000 jobs x 100 chunks": (1_000, 100),
        }.items():
            path = Path(tmp) / f"{jobs}.db"
            scheduler, running, now = _farm(jobs, chunks)
            store = Store(path)
            # Everything so far (submits, nodes, the first 1,200 assignments) in one commit.
            from server.model import Changes

            first = Changes()
            first.jobs |= set(scheduler.jobs)
            first.chunks |= {(j.id, c.index) for j in scheduler.jobs.values() for c in j.chunks}
            first.nodes |= set(scheduler.nodes)
            store.save(first, scheduler)
            counting = _Counting(store.db)
            store.db = counting  # type: ignore[assignment]
            _cycles(scheduler, running, now, cycles, store)
            out[label] = {
                "rows_per_chunk": counting.rows / cycles,
                "bytes_per_chunk": counting.bytes / cycles,
            }
            store.db = counting._db
            store.close()
        scheduler = Scheduler(SchedulerConfig())
        spec = JobSpec(name="big", frames=f"1-{big_frames}", chunk=1, argv=["render"])
        began = time.perf_counter()
        changes = scheduler.submit("big", spec, "alice", 1000.0)
        submitted = time.perf_counter()
        path = Path(tmp) / "big.db"
        store = Store(path)
        store.save(changes, scheduler)
        saved = time.perf_counter()
        store.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        store.close()
        size = sum(p.stat().st_size for p in Path(tmp).glob("big.db*"))
        out[f"submit {big_frames:,} frames"] = {
            "scheduler_s": submitted - began,
            "commit_s": saved - submitted,
            "store_mb": size / 1e6,
        }
        began = time.perf_counter()
        jobs, nodes = Store(path).load()
        fresh = Scheduler(SchedulerConfig())
        fresh.load(jobs, nodes, 2000.0)
        fresh.dispatch(2000.0)
        out[f"submit {big_frames:,} frames"]["reload_s"] = time.perf_counter() - began
    print(f"  store: {out}", file=sys.stderr, flush=True)
    return out


def measure_growth(cycles: int) -> dict[str, Any]:
    """One job of 1,000,000 chunks: µs per cycle over the first and the last 10,000 of
    ``cycles``. Flat when no event's cost grows with the chunks done before it."""
    scheduler, running, now = _farm(1, 1_000_000)
    window = min(10_000, cycles // 2)
    first, _, now = _cycles(scheduler, running, now, window, None)
    _, _, now = _cycles(scheduler, running, now, cycles - 2 * window, None)
    last, _, now = _cycles(scheduler, running, now, window, None)
    out = {"cycles": cycles, "first_us": first, "last_us": last}
    print(f"  growth: {out}", file=sys.stderr, flush=True)
    return out


def _child(args: argparse.Namespace) -> None:
    sys.path.insert(0, args.tree)
    store_cycles = min(500, args.cycles)
    result: dict[str, Any] = {
        "events": measure_events(args.cycles),
        "store": measure_store(args.big, store_cycles),
    }
    if args.growth:
        result["growth"] = measure_growth(args.growth)
    print(json.dumps(result))


def _run_tree(tree: Path, cycles: int, big: int, growth: int) -> dict[str, Any]:
    command = [sys.executable, __file__, "--child", "--tree", str(tree)]
    command += ["--cycles", str(cycles), "--big", str(big), "--growth", str(growth)]
    env = {**os.environ, "PYTHONPATH": str(tree)}
    done = subprocess.run(
        command, check=True, capture_output=False, stdout=subprocess.PIPE, env=env
    )
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old", help="also measure this commit (e.g. HEAD)")
    parser.add_argument("--cycles", type=int, default=2_000)
    parser.add_argument("--old-cycles", type=int, default=20)
    parser.add_argument("--big", type=int, default=1_000_000)
    parser.add_argument("--old-big", type=int, default=100_000)
    parser.add_argument(
        "--growth",
        type=int,
        default=0,
        help="also run this many cycles of a 1,000,000-chunk job: first vs last 10,000",
    )
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--tree", default=str(HERE.parent), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args)
        return
    results: dict[str, Any] = {}
    if args.old:
        with tempfile.TemporaryDirectory() as tmp:
            archive = subprocess.run(
                ["git", "-C", str(HERE.parent), "archive", args.old],
                check=True,
                stdout=subprocess.PIPE,
            )
            subprocess.run(["tar", "-x", "-C", tmp], input=archive.stdout, check=True)
            print(f"{args.old}:", file=sys.stderr)
            results["old"] = _run_tree(Path(tmp), args.old_cycles, args.old_big, args.growth)
            results["old"]["rev"] = args.old
    print("this tree:", file=sys.stderr)
    results["new"] = _run_tree(HERE.parent, args.cycles, args.big, args.growth)
    out = HERE / "results" / "scheduler_scale.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    for side, figures in results.items():
        print(f"\n{side}")
        print("| load | cycle µs | job_view µs | heartbeat µs | heartbeat commits |")
        print("|---|---|---|---|---|")
        for label, row in figures["events"].items():
            print(
                f"| {label} | {row['cycle_us']:.0f} | {row['job_view_us']:.0f} | "
                f"{row['heartbeat_us']:.1f} | {row['heartbeat_commits']} |"
            )
        for label, row in figures["store"].items():
            print(f"| store, {label} | {json.dumps(row)} |")
        if "growth" in figures:
            row = figures["growth"]
            print(
                f"| 1 job x 1,000,000 chunks, {row['cycles']:,} cycles | first 10,000: "
                f"{row['first_us']:.0f} µs | last 10,000: {row['last_us']:.0f} µs |"
            )


if __name__ == "__main__":
    main()
