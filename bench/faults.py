"""Faults on a real farm: duplicates, overlaps, and how long the farm takes to recover.

Four faults, each ``--runs`` times on one farm (leader and agents are real
subprocesses on loopback; the renderer is the tallying renderer of
``tests/e2e/fault_support.py``, which records every run of every frame):

- ``leader``: ``kill -9`` of the leader as chunks finish (the moment a run
  writes its end), restarted at once on the same data folder. Measured: the
  leader's downtime (kill to ``/healthz``), then ``/healthz`` to the first new
  assignment (the attempt's start on the leader's clock) and to the first new
  renderer start.
- ``crash``: ``kill -9`` of the agent running a chunk. Measured: the kill to
  its tree gone (the shim saw its pipe close) and to the chunk's next run
  starting on the other node (bound by ``node_timeout``).
- ``frozen``: SIGSTOP of the agent running a chunk, SIGCONT once the chunk has
  rendered elsewhere. Measured: the SIGSTOP to the shim's SIGTERM (lease),
  to the tree gone, and to the chunk's next run on the other node.
- ``stop``: ``retry`` of two running chunks, then ``requeue`` of the job, whose
  renderers take 0.3 s to exit on SIGTERM and whose helpers ignore it.
  Measured: the call's return to the next run of each chunk.

Every run counts frames rendered to the end more than once (must be 0) and
overlaps, two runs of one frame alive at the same moment (must be 0).

    python bench/faults.py [--runs 10] [--faults leader,crash,frozen,stop]
                           [--node-timeout 1.5] [--leader-node-timeout 8]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from tests.e2e.fault_support import (  # noqa: E402 (the repository root first)
    FaultFarm,
    Run,
    farm_fault_problems,
    fault_toml,
    first_attempt_after,
    first_run_assigned_after,
    render_chunks,
    wait_until,
)

HEARTBEAT = 0.2
TICK = 0.1
# Targets from issue 8.
TARGET_MOVED = 2.0  # agent crash -> chunk running elsewhere
TARGET_RESTART = 2.0  # leader restart -> dispatching again
FROZEN_SLACK = 2.0  # frozen node -> fenced and moved <= node_timeout + this

Record = dict[str, Any]


def say(text: str) -> None:
    print(text, flush=True)


def check(farm: FaultFarm, job: str, frames: list[int], record: Record) -> None:
    """Wait for the job; add duplicates, overlaps and farm-fault problems to ``record``."""
    detail = farm.wait_job(job, "done", "failed", timeout=60.0)
    wait_until(
        lambda: all(r.seen_dead is not None for r in runs_of(farm, frames)), 10.0, "runs to end"
    )
    ended = farm.tally.ended()
    record["duplicates"] = sum(ended.get(f, 0) > 1 for f in frames)
    record["missing"] = sum(ended.get(f, 0) == 0 for f in frames)
    record["overlaps"] = len(farm.tally.overlaps(frames))
    record["problems"] = farm_fault_problems(detail) + (
        [] if detail["job"]["state"] == "done" else [f"job {detail['job']['state']}"]
    )
    record["attempts"] = sum(len(c["attempts"]) for c in render_chunks(detail))


def runs_of(farm: FaultFarm, frames: list[int]) -> list[Run]:
    runs = farm.tally.runs()
    return [run for frame in frames for run in runs.get(frame, [])]


# --- the faults -----------------------------------------------------------------------


def leader_restart(farm: FaultFarm, run: int) -> Record:
    # More frames than the agents hold (slots and the chunks taken ahead of them): some must
    # be assigned after the restart, or there is no "restart -> dispatching" to measure.
    frames = list(range(run * 100 + 1, run * 100 + 41))
    job = farm.submit(
        farm.tally_argv(0.4),
        "--name", f"leader-{run}", "--frames", f"{frames[0]}-{frames[-1]}", "--retries", "0",
    )  # fmt: skip

    def ended() -> int:
        counts = farm.tally.ended()
        return sum(counts.get(f, 0) for f in frames)

    wait_until(lambda: ended() >= 7, 30.0, "the 7th frame to end", every=0.002)
    killed = farm.kill_leader()
    before = ended()
    healthy = farm.start_leader()
    record: Record = {"down_s": healthy - killed, "ended_while_down": ended() - before}
    check(farm, job, frames, record)
    detail = farm.show(job)
    assigned = first_attempt_after(detail, healthy)
    started = first_run_assigned_after(detail, farm.tally.runs(), healthy)
    record["healthz_to_assignment_s"] = None if assigned is None else assigned - healthy
    record["healthz_to_run_s"] = None if started is None else started - healthy
    record["rerendered"] = sum(len(c["attempts"]) > 1 for c in render_chunks(detail))
    return record


def agent_crash(farm: FaultFarm, run: int) -> Record:
    frame = run * 100 + 1
    job = farm.submit(
        farm.tally_argv(2.0, "--stubborn-helper"),
        "--name", f"crash-{run}", "--frames", str(frame), "--retries", "0",
    )  # fmt: skip
    wait_until(lambda: farm.tally.with_helper(frame), 20.0, "the run and its helper")
    node = wait_until(lambda: farm.chunk_node(job), 10.0, "the chunk's node")
    killed = farm.kill_agent(node)
    second = wait_until(lambda: farm.tally.nth_run(frame, 1), 20.0, "the next run")
    first = farm.tally.runs()[frame][0]
    wait_until(lambda: farm.tally.runs()[frame][0].seen_dead, 10.0, "the orphaned tree to die")
    first = farm.tally.runs()[frame][0]
    assert first.seen_dead is not None
    record: Record = {
        "tree_dead_s": first.seen_dead - killed,
        "moved_s": second.start - killed,
        "orphan_dead_first": first.seen_dead < second.start,
    }
    check(farm, job, [frame], record)
    farm.restart_agent(node)
    return record


def frozen_node(farm: FaultFarm, run: int) -> Record:
    frame = run * 100 + 1
    job = farm.submit(
        farm.tally_argv(2.0, "--stubborn-helper"),
        "--name", f"frozen-{run}", "--frames", str(frame), "--retries", "0",
    )  # fmt: skip
    wait_until(lambda: farm.tally.with_helper(frame), 20.0, "the run and its helper")
    node = wait_until(lambda: farm.chunk_node(job), 10.0, "the chunk's node")
    frozen = farm.freeze(node)
    try:
        second = wait_until(lambda: farm.tally.nth_run(frame, 1), 20.0, "the next run")
        wait_until(lambda: farm.tally.runs()[frame][0].seen_dead, 10.0, "the frozen tree to die")
        first = farm.tally.runs()[frame][0]
        assert first.seen_dead is not None
        record: Record = {
            "sigterm_s": None if first.term is None else first.term - frozen,
            "tree_dead_s": first.seen_dead - frozen,
            "moved_s": second.start - frozen,
            "margin_s": second.start - first.seen_dead,
        }
        wait_until(lambda: farm.tally.runs()[frame][1].end, 20.0, "the next run to end")
    finally:
        farm.thaw(node)
    check(farm, job, [frame], record)
    farm.wait_online([node], timeout=20.0)
    wait_until(lambda: not farm.outbox(node), 20.0, "the resumed agent's outbox to drain")
    return record


def stop_running(farm: FaultFarm, run: int) -> Record:
    frames = list(range(run * 100 + 1, run * 100 + 5))
    job = farm.submit(
        farm.tally_argv(3.0, "--stubborn-helper", "--term-delay", "0.3"),
        "--name", f"stop-{run}", "--frames", f"{frames[0]}-{frames[-1]}", "--retries", "0",
    )  # fmt: skip

    def runs(count: int) -> Callable[[], bool]:
        def enough() -> bool:
            by_frame = farm.tally.runs()
            return all(
                len(by_frame.get(f, [])) >= count and len(by_frame[f][-1].pids) == 2 for f in frames
            )

        return enough

    wait_until(runs(1), 20.0, "four runs")
    index = {c["frames"][0]: c["index"] for c in render_chunks(farm.show(job))}
    farm.client.chunk_action(job, "retry", [index[frames[0]], index[frames[1]]])
    retried = time.time()
    wait_until(
        lambda: all(len(farm.tally.runs()[f]) == 2 for f in frames[:2]), 20.0, "the retried runs"
    )
    wait_until(
        lambda: all(len(farm.tally.runs()[f][1].pids) == 2 for f in frames[:2]),
        10.0,
        "the retried runs' helpers",
    )
    by_frame = farm.tally.runs()
    retry_restart = [by_frame[f][1].start - retried for f in frames[:2]]
    farm.client.action("requeue", [job])
    requeued = time.time()
    wait_until(
        lambda: all(len(farm.tally.runs()[f]) == (3 if f in frames[:2] else 2) for f in frames),
        20.0,
        "the requeued runs",
    )
    by_frame = farm.tally.runs()
    requeue_restart = [by_frame[f][-1].start - requeued for f in frames]
    gaps = [
        later.start - earlier.alive_until
        for f in frames
        for earlier, later in zip(by_frame[f], by_frame[f][1:], strict=False)
    ]
    record: Record = {
        "retry_to_next_run_s": retry_restart,
        "requeue_to_next_run_s": requeue_restart,
        "last_sign_of_life_to_next_run_s": gaps,
    }
    check(farm, job, frames, record)
    return record


FAULTS: dict[str, tuple[Callable[[FaultFarm, int], Record], int, int]] = {
    # name: (one run, agents, slots)
    "leader": (leader_restart, 3, 2),
    "crash": (agent_crash, 2, 1),
    "frozen": (frozen_node, 2, 1),
    "stop": (stop_running, 2, 3),
}


# --- figures ------------------------------------------------------------------------


def figures(values: list[float | None]) -> dict[str, float | None]:
    present = [v for v in values if v is not None]
    if not present:
        return {"median": None, "min": None, "max": None}
    return {"median": statistics.median(present), "min": min(present), "max": max(present)}


def summarize(name: str, records: list[Record]) -> dict[str, Any]:
    summary: dict[str, Any] = {
        "runs": len(records),
        "duplicates": sum(r["duplicates"] for r in records),
        "overlaps": sum(r["overlaps"] for r in records),
        "missing": sum(r["missing"] for r in records),
        "problems": [p for r in records for p in r["problems"]],
    }
    keys = [k for k in records[0] if k.endswith("_s")] if records else []
    for key in keys:
        values: list[float | None] = []
        for record in records:
            value = record[key]
            values.extend(value if isinstance(value, list) else [value])
        summary[key] = figures(values)
    if name == "crash":
        summary["orphan_dead_first"] = sum(r["orphan_dead_first"] for r in records)
    if name == "leader":
        summary["rerendered"] = sum(r["rerendered"] for r in records)
        summary["ended_while_down"] = sum(r["ended_while_down"] for r in records)
    return summary


def show(name: str, summary: dict[str, Any]) -> None:
    say(
        f"{name}: {summary['runs']} runs, duplicates {summary['duplicates']}, "
        f"overlaps {summary['overlaps']}, problems {len(summary['problems'])}"
    )
    for key, value in summary.items():
        if isinstance(value, dict) and "median" in value and value["median"] is not None:
            say(
                f"  {key:34s} median {value['median']:.3f}  "
                f"min {value['min']:.3f}  max {value['max']:.3f}"
            )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--faults", default=",".join(FAULTS))
    parser.add_argument("--node-timeout", type=float, default=1.5, help="agent faults (lease 0.6x)")
    parser.add_argument(
        "--leader-node-timeout",
        type=float,
        default=8.0,
        help="leader restarts: a lease (0.6x) longer than the restart",
    )
    parser.add_argument("--out", type=Path, default=HERE / "results" / "faults.json")
    args = parser.parse_args()
    chosen = [name.strip() for name in args.faults.split(",") if name.strip()]
    unknown = set(chosen) - set(FAULTS)
    if unknown:
        parser.error(f"unknown faults {', '.join(sorted(unknown))}; known: {', '.join(FAULTS)}")

    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="farm-faults-") as tmp:
        for name in chosen:
            one_run, agents, slots = FAULTS[name]
            node_timeout = args.leader_node_timeout if name == "leader" else args.node_timeout
            toml = fault_toml(node_timeout, heartbeat=HEARTBEAT, tick=TICK)
            records: list[Record] = []
            say(f"{name}: node_timeout {node_timeout} s, {agents} agents x {slots} slots")
            with FaultFarm(Path(tmp) / name, toml) as farm:
                farm.start_leader()
                farm.start_agents(*[f"node{i}" for i in range(1, agents + 1)], slots=slots)
                for run in range(1, args.runs + 1):
                    record = one_run(farm, run)
                    records.append(record)
                    shown = {k: v for k, v in record.items() if k != "problems"}
                    say(f"  run {run:2d}: {json.dumps(shown, default=_short)}")
            results[name] = {
                "node_timeout": node_timeout,
                "agents": agents,
                "slots": slots,
                "records": records,
                "summary": summarize(name, records),
            }
            show(name, results[name]["summary"])

    verdicts = targets(results, args.node_timeout)
    for line in verdicts:
        say(line)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "benchmark": "faults",
        "runs": args.runs,
        "heartbeat_interval": HEARTBEAT,
        "tick_interval": TICK,
        "faults": results,
        "targets": verdicts,
        "machine": {
            "python": sys.version.split()[0],
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "load": os.getloadavg(),
        },
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    args.out.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    say(f"wrote {args.out}")
    broken = any(
        r["summary"]["duplicates"]
        or r["summary"]["overlaps"]
        or r["summary"]["missing"]
        or r["summary"]["problems"]
        for r in results.values()
    )
    return 1 if broken else 0


def _short(value: object) -> object:
    return round(value, 3) if isinstance(value, float) else str(value)


def targets(results: dict[str, Any], node_timeout: float) -> list[str]:
    """One line per target of issue 8 that this run measured."""
    lines = []

    def verdict(ok: bool) -> str:
        return "pass" if ok else "FAIL"

    def worst(fault: str, key: str) -> float | None:
        value: float | None = results[fault]["summary"][key]["max"]
        return value

    if "crash" in results:
        moved = worst("crash", "moved_s")
        first = results["crash"]["summary"]["orphan_dead_first"]
        runs = results["crash"]["summary"]["runs"]
        ok = moved is not None and moved <= TARGET_MOVED and first == runs
        lines.append(
            f"agent crash -> chunk running elsewhere <= {TARGET_MOVED:g} s with the orphan dead "
            f"first: max {moved:.2f} s, orphan dead first {first}/{runs}: {verdict(ok)}"
        )
    if "frozen" in results:
        moved = worst("frozen", "moved_s")
        limit = node_timeout + FROZEN_SLACK
        ok = moved is not None and moved <= limit and results["frozen"]["summary"]["overlaps"] == 0
        lines.append(
            f"frozen node -> fenced and moved <= node_timeout + {FROZEN_SLACK:g} s "
            f"= {limit:g} s: max {moved:.2f} s: {verdict(ok)}"
        )
    if "leader" in results:
        dispatched = worst("leader", "healthz_to_assignment_s")
        ok = dispatched is not None and dispatched <= TARGET_RESTART
        measured = f"max {dispatched:.2f} s" if dispatched is not None else "none assigned after"
        lines.append(
            f"leader restart -> dispatching <= {TARGET_RESTART:g} s: {measured}: {verdict(ok)}"
        )
    return lines


if __name__ == "__main__":
    raise SystemExit(main())
