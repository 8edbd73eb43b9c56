"""An agent's own cost per chunk, without a leader: what (d) of scale.py cannot isolate.

scale.py's (d) runs 1,000 × ``/bin/true`` through a real leader and a real
agent; its rate mixes the agent's work per chunk with the round trip to the
leader. This runs the agent's ``Supervisor`` alone (2 slots, its shims
forked from its zygote, the journal and working folders on disk, as a real
agent), handing it the next chunk as soon as a slot's ``ChunkFinished`` is
reported. Figures: chunks a second, and the agent's own CPU per chunk
(``getrusage`` of this process; the shims' CPU is their zygote's, not ours).

``--old TREE`` runs another checkout (``git archive REV | tar -x -C /tmp/base``)
in a subprocess, alternating with this one, so both see the same machine.

    python bench/agent_alone.py --old /tmp/base --runs 5 --chunks 1000

``--ahead N`` hands it N chunks beyond its slots, which it holds to them (an agent's
``--prefetch``): each waits for a slot, and may be queued on a renderer's shim.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import side_by_side

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


async def run_chunks(chunks: int, slots: int, ahead: int, argv: list[str]) -> dict[str, Any]:
    from agent.process_tree import become_subreaper
    from agent.staging import CopyToSyncRoot
    from agent.supervisor import Storage, Supervisor
    from farmtui.protocol import AgentToLeader, AssignChunk, ChunkFinished, ChunkTimeouts

    class Reports:
        def __init__(self) -> None:
            self.done = 0
            self.failed: list[str] = []
            self.event = asyncio.Event()

        def send(self, message: AgentToLeader) -> None:
            if isinstance(message, ChunkFinished):
                self.done += 1
                if message.outcome != "done":
                    self.failed.append(message.reason or message.outcome)
                self.event.set()

    become_subreaper()
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        (tmp / "sync").mkdir()
        reports = Reports()
        supervisor = Supervisor(
            reports,
            agent_id="bench" + uuid.uuid4().hex[:6],
            staging_root=tmp / "staging",
            storage=Storage(sync_root=tmp / "sync", delivery=CopyToSyncRoot(tmp / "sync")),
            zygote=True,
            # With chunks ahead, the supervisor holds them to its slots, as an agent does.
            slots=slots if ahead else None,
        )

        def assign(number: int) -> None:
            supervisor.assign(
                AssignChunk(
                    job_id="bench",
                    chunk=number,
                    attempt=1,
                    renderer="generic",
                    argv=argv,
                    frames=[number],
                    outputs=[],
                    outdir="",
                    output="",
                    staging=False,
                    timeouts=ChunkTimeouts(),
                )
            )

        assign(0)  # the zygote starts with the first chunk: not counted
        while reports.done < 1:
            await reports.event.wait()
            reports.event.clear()
        before = resource.getrusage(resource.RUSAGE_SELF)
        began = time.perf_counter()
        given = 0
        while reports.done < chunks + 1:
            while given < chunks and given - (reports.done - 1) < slots + ahead:
                given += 1
                assign(given)
            await reports.event.wait()
            reports.event.clear()
        elapsed = time.perf_counter() - began
        after = resource.getrusage(resource.RUSAGE_SELF)
        await supervisor.kill_all("the benchmark is over")
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    import agent

    return {
        "imported": str(Path(agent.__file__).parent.parent),
        "rate": chunks / elapsed,
        "agent_cpu_ms": cpu / chunks * 1000,
        "failed": len(reports.failed),
        "first_failure": reports.failed[0] if reports.failed else "",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--chunks", type=int, default=1000)
    parser.add_argument("--slots", type=int, default=2)
    parser.add_argument(
        "--ahead", type=int, default=0, help="chunks handed over beyond the slots (--prefetch)"
    )
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--old", help="another checkout to run beside this one")
    parser.add_argument("--out", default=str(HERE / "results" / "agent_alone.json"))
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("argv", nargs="*", default=["/bin/true"], help="the chunk's command")
    args = parser.parse_args()
    argv = args.argv or ["/bin/true"]
    if args.child:
        print(json.dumps(asyncio.run(run_chunks(args.chunks, args.slots, args.ahead, argv))))
        return
    checkouts = side_by_side.trees(args.old, ROOT)
    child = ["--chunks", str(args.chunks), "--slots", str(args.slots)]
    child += ["--ahead", str(args.ahead)] if args.ahead else []  # (older trees lack it)
    child += ["--", *argv]
    runs = side_by_side.alternate(
        Path(__file__),
        checkouts,
        args.runs,
        child,
        lambda r: (
            f"{r['rate']:.0f} chunks/s, agent CPU {r['agent_cpu_ms']:.2f} ms a chunk, "
            f"{r['failed']} failed"
        ),
    )
    summary = {}
    for name, results in runs.items():
        rates = [r["rate"] for r in results]
        cpus = [r["agent_cpu_ms"] for r in results]
        summary[name] = {
            "rate": statistics.median(rates),
            "rate_range": [min(rates), max(rates)],
            "agent_cpu_ms": statistics.median(cpus),
            "failed": sum(r["failed"] for r in results),
        }
        print(
            f"{name}: median {summary[name]['rate']:.0f} chunks/s ({min(rates):.0f}-"
            f"{max(rates):.0f}), agent CPU {summary[name]['agent_cpu_ms']:.2f} ms a chunk"
        )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"args": vars(args), "runs": runs, "summary": summary}))


if __name__ == "__main__":
    main()
