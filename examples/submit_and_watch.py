"""Submit a job from a pipeline script, watch it render, then act on it.

Uses ``farmtui.client``, the public Python API; the leader and token are
found as the ``farm`` command finds them (``FARM_LEADER``, ``FARM_TOKEN``,
``FARM_CA``, or the config ``farm up`` wrote)::

    python examples/submit_and_watch.py --frames 1-8 --chunk 2

It renders with the built-in demo renderer, so it works on any farm; put
your renderer's name, scene and output pattern in the ``JobSpec`` instead.
Exit status 0 when the job is done, 1 when it failed or the leader refused,
2 when no leader or token is configured.
"""

from __future__ import annotations

import argparse
import sys

from farmtui.client import connect
from farmtui.errors import FarmError
from farmtui.protocol import JobSpec, JobView


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", default="example-shot")
    parser.add_argument("--frames", default="1-8", help="a frame list: 1-100, 1-100x5, 1,5,10-20")
    parser.add_argument("--chunk", type=int, default=2, help="frames per chunk")
    parser.add_argument("--priority", type=int, default=50, help="0-100, lower renders sooner")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds to wait")
    args = parser.parse_args(argv)
    spec = JobSpec(
        name=args.name,
        frames=args.frames,
        chunk=args.chunk,
        priority=args.priority,
        renderer="demo",
        output=f"renders/{args.name}/frame_####.png",  # relative to the sync root
    )
    try:
        with connect() as farm:
            me = farm.whoami()
            print(f"connected to {farm.leader} as {me.name} ({me.role})")
            job = farm.submit(spec)  # safe to retry: it never makes two jobs
            print(f"submitted {job.id} ({job.name}): frames {job.frames}")
            last: JobView = job
            for last in farm.watch(job.id, timeout=args.timeout):
                stats = last.stats
                print(
                    f"{last.state:<10} {stats.frames_done}/{stats.frames_total} frames done, "
                    f"{stats.chunks_running} chunks running"
                )
            if last.state != "done":
                detail = farm.show_all(job.id)
                failed = [chunk.index for chunk in detail.chunks if chunk.state == "failed"]
                print(f"{job.id} ended {last.state}; failed chunks: {failed}", file=sys.stderr)
                print(f"their output: farm logs {job.id} --chunk N", file=sys.stderr)
                return 1
            farm.action("archive", [job.id])  # any job action: pause, requeue, cancel ...
            print(f"{job.id} done and archived")
    except TimeoutError as exc:
        print(f"submit_and_watch: {exc}", file=sys.stderr)
        return 1
    except FarmError as exc:  # one line, e.g. "cannot reach the leader at ...: connection refused"
        print(f"submit_and_watch: {exc}", file=sys.stderr)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
