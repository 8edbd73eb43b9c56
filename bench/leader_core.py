"""The leader's own cost per chunk, without sockets: what scale.py cannot isolate.

scale.py measures the whole leader under load from other processes, which on
a shared 2-core machine mostly measures how much CPU the leader was given.
This runs the real ``Leader`` (scheduler, SQLite store on disk, group
commit, job logs through their writer thread, agent links with their send
queues and acks) in one process on one event loop, with N agents × 4 slots
played by code that answers each ``AssignChunk`` at once with
``ChunkStarted`` + ``ChunkFinished`` (one frame per agent per turn, as
tests/helpers/sim_agents.py does). What is left out is the network: uvicorn,
WebSocket framing, the socket system calls.

Figures: µs of the leader per completed chunk (wall time of the loop minus
the time spent in the agents' code; and the loop thread's CPU time alone,
which a busy machine does not inflate), and the garbage collector's longest
pause. ``--old TREE`` runs another checkout (``git archive HEAD | tar -x -C
/tmp/base``) in a subprocess, alternating with this one.

``--rules`` instead runs this checkout twice over, alternating: two jobs of
``--chunks`` one-frame chunks each, once plain and once with the scheduling
rules of issue 13 at work on every chunk: each chunk asks for a GPU (every
slot of every agent has one) and a unit of a limit (as many units as slots,
so the limit is counted, never the bottleneck), and the second job follows
the first frame by frame (its chunks are checked, parked and released).

    python bench/leader_core.py --old /tmp/base --runs 3
    python bench/leader_core.py --rules --runs 3
"""

from __future__ import annotations

import argparse
import asyncio
import gc
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


class FakeWebSocket:
    """What ``SendQueue`` writes to: keeps the frames for the agent to read."""

    def __init__(self) -> None:
        self.frames: list[str] = []

    async def send_text(self, text: str) -> None:
        self.frames.append(text)


async def measure(
    chunks: int, agents: int, slots: int, rules: bool | None, jobs: int = 1
) -> dict[str, Any]:
    """``rules``: None, ``jobs`` jobs sharing ``chunks`` (one: as before); False, two jobs;
    True, two jobs under the rules."""
    from farmtui import protocol
    from farmtui.protocol import AgentHello, AssignChunk, ChunkFinished, ChunkStarted, JobSpec
    from server.agent_link import AgentLink, _handle_frame
    from server.config import LeaderConfig, LeaderSettings
    from server.leader import Leader

    tmp = Path(tempfile.mkdtemp(prefix="leader-core-"))
    settings = LeaderSettings(
        data=tmp / "data",
        root=tmp / "root",
        # No heartbeats here: no node may be lost while it runs.
        config=LeaderConfig(node_timeout=86_400.0),
        own_process=True,
    )
    leader = Leader(settings)
    await leader.start()
    specs = {"bench": JobSpec(name="bench", frames=f"1-{chunks}", chunk=1, argv=["true"])}
    if jobs > 1:  # scale.py's (c2): many jobs, each made into chunks on first dispatch
        each = chunks // jobs
        specs = {
            f"bench{n}": JobSpec(name=f"bench{n}", frames=f"1-{each}", chunk=1, argv=["true"])
            for n in range(jobs)
        }
        chunks = each
    gpus: list[Any] = []
    if rules is not None:
        from farmtui.protocol import GpuInfo

        asks: dict[str, Any] = {}
        if rules:
            from server.resources import Limit

            limit = Limit("bench", agents * slots)
            leader.run(lambda now: leader.scheduler.set_limit(limit, "bench", "b", now))
            asks = {"gpus": 1, "limits": ["bench"]}
            gpus = [GpuInfo(index=i, memory=8192) for i in range(slots)]
        after = {"after": ["up"], "after_frames": True} if rules else {}
        specs = {
            "up": JobSpec(name="up", frames=f"1-{chunks}", argv=["true"], **asks),
            "bench": JobSpec(name="bench", frames=f"1-{chunks}", argv=["true"], **asks, **after),
        }
    for job_id, spec in specs.items():
        leader.run(
            lambda now, job_id=job_id, spec=spec: leader.scheduler.submit(
                job_id, spec, "bench", now
            ),
            dispatch=False,
        )
    chunks *= len(specs)
    sockets: dict[str, FakeWebSocket] = {}
    links: dict[str, AgentLink] = {}
    seqs = dict.fromkeys((f"n{i}" for i in range(agents)), 0)
    for name in seqs:
        hello = AgentHello(name=name, slots=slots, agent_id=name, batches=True, gpus=gpus)
        leader.run(
            lambda now, hello=hello: leader.scheduler.node_connected(hello, now)[0],
            dispatch=False,
        )
        sockets[name] = FakeWebSocket()
        links[name] = AgentLink(leader, sockets[name], name, batches=True)  # type: ignore[arg-type]
        leader.agents[name] = links[name]
    leader.run(lambda now: leader.scheduler.dispatch(now), dispatch=False)
    pauses: list[float] = []
    began_gc = [0.0]

    def on_gc(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            began_gc[0] = time.perf_counter()
        else:
            pauses.append(time.perf_counter() - began_gc[0])

    gc.callbacks.append(on_gc)
    agent_seconds = 0.0
    agent_cpu = 0.0  # the agents' code on the loop's thread
    done = 0
    started = time.perf_counter()
    cpu_started = time.process_time()
    loop_cpu_started = time.thread_time()
    while done < chunks:
        futures = []
        for name, link in links.items():
            t0 = time.perf_counter()
            c0 = time.thread_time()
            frames, sockets[name].frames = sockets[name].frames, []
            reports: list[bytes] = []
            for frame in frames:
                for message in protocol.decode_batch(
                    protocol.leader_to_agent, protocol.leader_to_agent_batch, frame
                ):
                    if isinstance(message, AssignChunk):
                        ref = {
                            "job_id": message.job_id,
                            "chunk": message.chunk,
                            "attempt": message.attempt,
                        }
                        now = time.time()
                        seqs[name] += 1
                        reports.append(protocol.encode(ChunkStarted(**ref, pid=1, seq=seqs[name])))
                        seqs[name] += 1
                        finished = ChunkFinished(
                            **ref,
                            outcome="done",
                            exit_status="0",
                            started=now,
                            finished=now,
                            seq=seqs[name],
                        )
                        reports.append(protocol.encode(finished))
                        done += 1
            data = protocol.encode_batch(reports) if reports else b""
            agent_seconds += time.perf_counter() - t0
            agent_cpu += time.thread_time() - c0
            if not data:
                continue
            # What agent_link.serve does with a frame: its last report's commit is waited
            # for (a source's steps are applied, and groups land, in order).
            last, _ = _handle_frame(link, data)
            if last is not None:
                futures.append(last)
        if futures:
            await asyncio.wait(futures)
        # Let the send queues write what the commit made (acks, assignments).
        for _ in range(3):
            await asyncio.sleep(0)
    wall = time.perf_counter() - started
    cpu = time.process_time() - cpu_started
    loop_cpu = time.thread_time() - loop_cpu_started
    gc.callbacks.remove(on_gc)
    await leader.stop()
    shutil.rmtree(tmp, ignore_errors=True)  # half a gigabyte a run: /tmp filled up
    leader_wall = wall - agent_seconds
    return {
        "chunks": done,
        "us_per_chunk": round(1e6 * leader_wall / done, 1),
        "cpu_us_per_chunk": round(1e6 * (cpu - agent_seconds) / done, 1),
        # The loop's thread alone, on the CPU: what a busy machine's other work adds to
        # the wall time (waiting for a core) is not in it.
        "loop_cpu_us_per_chunk": round(1e6 * (loop_cpu - agent_cpu) / done, 1),
        "gc_max_ms": round(1000 * max(pauses, default=0.0), 1),
        "gc_over_50ms": sum(p > 0.05 for p in pauses),
        "gc_total_ms": round(1000 * sum(pauses), 1),
        "tracked_objects": len(gc.get_objects()),
    }


def run_tree(
    tree: Path, chunks: int, agents: int, slots: int, rules: bool | None = None, jobs: int = 1
) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    command = [sys.executable, str(HERE / "leader_core.py"), "--child"]
    command += ["--chunks", str(chunks), "--agents", str(agents), "--slots", str(slots)]
    if jobs > 1:
        command += ["--jobs", str(jobs)]
    if rules is not None:
        command.append("--with-rules" if rules else "--two-jobs")
    out = subprocess.run(command, env=env, cwd=tree, capture_output=True, text=True, check=True)
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--chunks", type=int, default=100_000)
    parser.add_argument("--agents", type=int, default=10)
    parser.add_argument("--slots", type=int, default=4)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=1, help="jobs sharing --chunks (c2: 1000)")
    parser.add_argument("--old", help="another checkout to run beside this one")
    parser.add_argument("--out", default=str(HERE / "results" / "leader_core.json"))
    parser.add_argument(
        "--rules", action="store_true", help="two jobs plain, then under GPUs, a limit, frame deps"
    )
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--two-jobs", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--with-rules", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        rules = True if args.with_rules else False if args.two_jobs else None
        result = measure(args.chunks, args.agents, args.slots, rules, args.jobs)
        print(json.dumps(asyncio.run(result)))
        return
    if args.rules:
        variants: dict[str, tuple[Path, bool | None]] = {
            "plain": (HERE.parent, False),
            "rules": (HERE.parent, True),
        }
        default_out = HERE / "results" / "leader_core_rules.json"
        if args.out == str(HERE / "results" / "leader_core.json"):
            args.out = str(default_out)
    else:
        variants = {"this": (HERE.parent, None)}
        if args.old:
            variants = {"old": (Path(args.old).resolve(), None), **variants}
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in variants}
    for number in range(args.runs):
        for name, (tree, rules) in variants.items():
            result = run_tree(tree, args.chunks, args.agents, args.slots, rules, args.jobs)
            runs[name].append(result)
            print(f"run {number + 1} {name}: {result}", flush=True)
    summary = {
        name: {
            key: statistics.median(r[key] for r in results)
            for key in (
                "us_per_chunk",
                "cpu_us_per_chunk",
                "loop_cpu_us_per_chunk",
                "gc_max_ms",
                "gc_total_ms",
            )
        }
        for name, results in runs.items()
    }
    for name, medians in summary.items():
        print(f"{name} (median of {args.runs}): {medians}")
    if args.rules:
        ratio = summary["rules"]["us_per_chunk"] / summary["plain"]["us_per_chunk"]
        print(f"cost of the rules per chunk: x{ratio:.3f} (the issue allows x1.10)")
    shape = {"chunks": args.chunks, "agents": args.agents, "slots": args.slots, "jobs": args.jobs}
    record = {"benchmark": "leader_core", "shape": shape, "runs": runs, "median": summary}
    Path(args.out).write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
