"""Where a real agent's own time goes in (d), by its functions: py-spy on the agent process.

``true_cpu.py`` says how much CPU the agent spends a chunk of ``/bin/true``;
``agent_alone.py`` what the same supervisor costs without a leader. This says
what the agent's main thread is doing while a farm runs such a job: it starts
the (d) farm (one leader, one real agent × 2 slots), submits ``--chunks``
one-frame chunks of ``/bin/true``, samples the agent with ``py-spy`` for
``--seconds`` once they flow, and prints each of the agent's functions by the
share of the main thread's samples it was in (inclusive), the leaves by
their own share, and the samples by part of a chunk's way (``PARTS``).
``py-spy`` counts a thread waiting in ``epoll`` as busy: that part is the
loop's idle time.

    pip install py-spy
    python bench/agent_profile.py [--chunks 12000] [--seconds 8] [--top 40]

The raw stacks are kept in ``bench/results/agent_profile.txt``.
"""

from __future__ import annotations

import argparse
import collections
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import scale  # noqa: E402

from farmtui.protocol import JobSpec  # noqa: E402

_LINE = re.compile(r":\d+\)$")

# The parts of a chunk's way through the agent, by the functions that do them (a name
# ending in "." stands for all of a class' methods). A sample counts for the part of its
# innermost matching frame: a log record written while concluding is a log record.
PARTS = (
    ("waiting in epoll (idle)", ("EpollSelector.select",)),
    ("log records", ("Logger._log", "Logger.log", "Logger.info", "Logger.warning")),
    ("the journal", ("Journal.write", "Journal.drop")),
    (
        "the attempt's folders",
        ("SpareFolders.make", "SpareFolders.keep", "ChunkRun._plan", "ChunkRun._clean_staging"),
    ),
    ("starting a chunk on its shim", ("Shim.start", "ChunkRun.queue_behind")),
    (
        "following a shim",
        ("ChunkRun._supervise", "Shim.follow", "Zygote.follow", "Shim.wait", "Shim.reaped"),
    ),
    ("the link to the leader", ("LeaderLink.", "Outbox.", "_Frame.")),
)


def part_of(frames: list[str]) -> str:
    for frame in reversed(frames):
        name = frame.split(" (", 1)[0]
        for part, names in PARTS:
            if any(name == n or (n.endswith(".") and name.startswith(n)) for n in names):
                return part
    return "the rest (the loop's own work, tasks, concluding)"


def sample(chunks: int, seconds: float, out: Path, prefetch: int | None = None) -> int:
    """Run the farm, sample its agent into ``out``; the chunks done when sampling ended."""
    with (
        tempfile.TemporaryDirectory(prefix="agent-profile-") as tmp,
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
            scale.run_true_job(client, 10, 60, "warm-up")
            spec = JobSpec(
                name="profiled",
                frames=f"1-{chunks}",
                chunk=1,
                renderer="generic",
                argv=[scale.TRUE],
                staging=False,
            )
            job = client.submit(spec)
            deadline = time.monotonic() + 60
            while client.show(job.id).job.stats.chunks_done < 200:
                if time.monotonic() > deadline:
                    raise SystemExit("the job did not start within 60 s")
                time.sleep(0.1)
            subprocess.run(
                [
                    "py-spy",
                    "record",
                    "-p",
                    str(agent.process.pid),
                    "-d",
                    str(int(seconds)),
                    "-r",
                    "200",
                    "--format",
                    "raw",
                    "-o",
                    str(out),
                ],
                check=True,
                capture_output=True,
            )
            return client.show(job.id).job.stats.chunks_done


Counts = collections.Counter[str]


def shares(raw: Path) -> tuple[int, Counts, Counts, Counts]:
    """(main thread's samples, inclusive by function, own by leaf, by part of ``PARTS``)."""
    total = 0
    inclusive: Counts = collections.Counter()
    own: Counts = collections.Counter()
    parts: Counts = collections.Counter()
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = [_LINE.sub(")", frame) for frame in stack.split(";")]
        if not frames[0].startswith("_run_module"):
            continue  # threads: the outbox's syncs and other waits off the loop
        samples = int(count)
        total += samples
        own[frames[-1]] += samples
        parts[part_of(frames)] += samples
        for frame in set(frames):
            inclusive[frame] += samples
    return total, inclusive, own, parts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--chunks", type=int, default=12000)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--top", type=int, default=40)
    parser.add_argument("--prefetch", type=int, help="the agent's --prefetch (default: its own)")
    parser.add_argument("--out", default=str(HERE / "results" / "agent_profile.txt"))
    args = parser.parse_args()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    done = sample(args.chunks, args.seconds, out, args.prefetch)
    total, inclusive, own, parts = shares(out)
    print(f"{done} chunks done; {total} samples of the agent's main thread")
    print("by part, each sample counted once:")
    for part, count in parts.most_common():
        print(f"  {100 * count / total:5.1f}%  {part}")
    print("inclusive, the agent's own functions:")
    # Not the frames every sample is in (the entry point down to the agent's main).
    ours = [
        (f, n)
        for f, n in inclusive.most_common()
        if ("(agent/" in f or "(farmtui/" in f) and n < total
    ]
    for frame, count in ours[: args.top]:
        print(f"  {100 * count / total:5.1f}%  {frame}")
    print("own time, by leaf:")
    for frame, count in own.most_common(args.top // 2):
        print(f"  {100 * count / total:5.1f}%  {frame}")


if __name__ == "__main__":
    main()
