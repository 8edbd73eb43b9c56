"""Where the CPU of scale.py's (d) goes: each process' milliseconds per ``/bin/true`` chunk.

(d) runs ``/bin/true`` through a real leader and one real agent with 2
slots, against ``xargs -P2``. Its rate alone does not say which process
bounds it. This runs the same farm and, around each job (submit to finish,
the leader's clock), reads the CPU time (user + system) of:

- the agent's process (all its threads; its kernel time also alone);
- the leader's process (all its threads) and its log writer's process
  (``server/log_process.py``, a child of the leader that writes the chunk logs),
  also by part: its event loop's thread, its other threads, the log writer;
- the agent's shim zygote with what it reaped: its shims, and through them
  the renderers (a shim serves a job's chunks and exits ``IDLE_FOR`` seconds
  after the last, when its time is added to its zygote's: so each job is
  measured once its shims have all exited);

and the whole machine's busy share (psutil). Divided by the
chunks, these are what a chunk costs each, beside xargs -P2's rate in the
same round (whose whole cost per command is about ``2 cores / rate``).

    python bench/true_cpu.py [--commands 3000] [--runs 3]

Linux only (psutil's CPU time of reaped children).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import scale  # noqa: E402


def cpu_seconds(pid: int, *, reaped: bool = False) -> float:
    """User + system time of ``pid`` (and of its reaped children when ``reaped``)."""
    times = psutil.Process(pid).cpu_times()
    own = times.user + times.system
    return own + times.children_user + times.children_system if reaped else own


def system_seconds(pid: int) -> float:
    """System (kernel) time alone of ``pid``: how much of its CPU its system calls take."""
    return float(psutil.Process(pid).cpu_times().system)


def machine() -> tuple[float, float]:
    """(busy, total) CPU seconds of all CPUs; idle and iowait are not busy."""
    times = psutil.cpu_times()
    total = sum(times)
    return total - times.idle - times.iowait, total


def leader_parts(pid: int) -> tuple[float, float, float]:
    """The leader's CPU seconds by part: its event loop's thread (the main one), its
    other threads (the commit line, the log sender ...), its children (the log writer)."""
    process = psutil.Process(pid)
    loop = others = 0.0
    for thread in process.threads():
        spent = thread.user_time + thread.system_time
        if thread.id == pid:
            loop += spent
        else:
            others += spent
    return loop, others, children_seconds(pid)


def children_seconds(parent: int) -> float:
    """CPU time of ``parent``'s children alive now (the leader's: its log writer's process)."""
    return sum(cpu_seconds(child.pid) for child in psutil.Process(parent).children())


def zygotes_of(parent: int) -> list[int]:
    return [
        child.pid
        for child in psutil.Process(parent).children()
        if any("zygote.py" in arg for arg in child.cmdline())
    ]


def wait_childless(pids: list[int], within: float = 30.0) -> None:
    """Until no process in ``pids`` has a child (its shims exited, their time added)."""
    deadline = time.monotonic() + within
    while any(psutil.Process(pid).children() for pid in pids):
        if time.monotonic() > deadline:
            raise SystemExit(f"the zygote's shims still run {within:g} s after the job")
        time.sleep(0.2)  # between polls of a condition


def measure(commands: int, runs: int, prefetch: int | None = None) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = []
    with (
        tempfile.TemporaryDirectory(prefix="true-cpu") as tmp,
        scale.BenchFarm(Path(tmp) / "d", "") as farm,
    ):
        farm.start()
        agent = farm.local.start_agent(
            1,
            slots=2,
            name="bench-agent",
            extra=() if prefetch is None else ("--prefetch", str(prefetch)),
        )
        farm.local.wait_nodes_online([agent.name], timeout=60)
        with farm.client() as client:
            scale.run_true_job(client, 10, 60, "warm-up")  # starts the zygote
            zygotes = zygotes_of(agent.process.pid)
            for run in range(1, runs + 1):
                create_us = scale.disk_ready(farm.folder)
                xargs_s = scale.run_xargs(commands)

                def sample() -> tuple[
                    float, float, float, tuple[float, float], float, tuple[float, float, float]
                ]:
                    return (
                        cpu_seconds(agent.process.pid),
                        cpu_seconds(farm.pid) + children_seconds(farm.pid),
                        sum(cpu_seconds(z, reaped=True) for z in zygotes),
                        machine(),
                        system_seconds(agent.process.pid),
                        leader_parts(farm.pid),
                    )

                wait_childless(zygotes)
                before = sample()
                record = scale.run_true_job(client, commands, 600.0, f"true-{run}")
                wait_childless(zygotes)
                after = sample()
                # Its job is kept: its logs deleted would make the next run's files dearer.
                busy = (after[3][0] - before[3][0]) / max(after[3][1] - before[3][1], 1e-9)
                spent = zip(before[:3], after[:3], strict=True)
                per_chunk = [1000 * (b - a) / commands for a, b in spent]
                agent_system_ms = 1000 * (after[4] - before[4]) / commands
                loop_ms, threads_ms, writer_ms = (
                    1000 * (b - a) / commands for a, b in zip(before[5], after[5], strict=True)
                )
                record.update(
                    xargs_rate=commands / xargs_s,
                    agent_ms=per_chunk[0],
                    agent_system_ms=agent_system_ms,
                    leader_ms=per_chunk[1],
                    shims_ms=per_chunk[2],
                    leader_loop_ms=loop_ms,
                    leader_threads_ms=threads_ms,
                    log_writer_ms=writer_ms,
                    machine_busy=busy,
                    create_us=create_us,
                )
                records.append(record)
                print(
                    f"run {run}: farm {record['rate']:.0f}/s,"
                    f" xargs -P2 {record['xargs_rate']:.0f}/s;"
                    f" ms of CPU a chunk: agent {per_chunk[0]:.2f}"
                    f" ({agent_system_ms:.2f} in the kernel),"
                    f" leader {per_chunk[1]:.2f} (its loop {loop_ms:.2f}, other threads"
                    f" {threads_ms:.2f}, log writer {writer_ms:.2f}),"
                    f" zygote+shims+renderers {per_chunk[2]:.2f}; machine {100 * busy:.0f}% busy;"
                    f" a new file {create_us:.0f} µs",
                    flush=True,
                )
    return records


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--commands", type=int, default=3000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--prefetch", type=int, help="the agent's --prefetch (default: its own)")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "true_cpu.json")
    args = parser.parse_args()
    records = measure(args.commands, args.runs, args.prefetch)
    keys = (
        "rate",
        "xargs_rate",
        "agent_ms",
        "agent_system_ms",
        "leader_ms",
        "leader_loop_ms",
        "leader_threads_ms",
        "log_writer_ms",
        "shims_ms",
        "machine_busy",
    )
    medians = {k: statistics.median(r[k] for r in records) for k in keys}
    print("medians: " + ", ".join(f"{k} {v:.2f}" for k, v in medians.items()))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"runs": records, "medians": medians}, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
