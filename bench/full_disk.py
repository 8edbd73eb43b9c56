"""Refused changes on a full disk: does each one stall the leader?

A real leader (``farm leader``) with its data folder on a tmpfs of its own
(``--disk``, 12 MB), holding ``--jobs`` jobs of ``--frames`` frames each
(1.25 million frames by default). Then a file fills the disk to its last
byte, and ``--refusals`` changes that need room (each marks every chunk of
another job done: 5,000 rows) are asked one after another while a probe asks
``GET /healthz`` every 5 ms on a kept connection. Reported per run: how many
were refused and how long each took, the probe's latencies meanwhile, and
the stalls the leader's watchdog logged.

Side by side in one run, alternating: the leader as configured by default
(``disk_reserve_mb`` 64: changes are refused before they are applied, see
``server/disk_room.py``) and with ``disk_reserve_mb = 0``, which is how every
leader behaved before: the commit fails, and the leader undoes the change by
reloading the farm from the store.

Needs root (to mount the tmpfs)::

    python bench/full_disk.py --runs 3
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from farmtui.client import FarmClient  # noqa: E402
from farmtui.errors import FarmError  # noqa: E402
from farmtui.localfarm import free_port  # noqa: E402
from farmtui.protocol import JobSpec  # noqa: E402
from tests.helpers.small_disk import fill  # noqa: E402

# Asks /healthz every 5 ms on a kept connection (a process of its own).
PROBE = REPO / "bench" / "healthz_probe.py"

STALL = re.compile(r"stalled for (\d+) ms")


def one_run(base: Path, reserve: float | None, args: argparse.Namespace) -> dict[str, Any]:
    # Only the data folder on the small disk: the leader's log and the sync root beside it.
    disk, root = base / "disk", base / "root"
    data = disk / "data"
    disk.mkdir()
    root.mkdir()
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={args.disk}", "tmpfs", str(disk)], check=True
    )
    try:
        data.mkdir()
        if reserve is not None:
            (data / "leader.toml").write_text(f"disk_reserve_mb = {reserve}\n")
        port = free_port()
        log = (base / "leader.log").open("w")
        leader = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "farmtui",
                "leader",
                "--data",
                str(data),
                "--root",
                str(root),
                "--port",
                str(port),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=REPO,
        )
        try:
            url = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 30
            while not (data / "admin.token").exists() or not _healthy(url):
                if time.monotonic() > deadline:
                    raise RuntimeError("the leader did not start")
                time.sleep(0.05)
            token = (data / "admin.token").read_text().strip()
            with FarmClient(url, token, submit_retry_delays=()) as farm:
                jobs = [
                    farm.submit(
                        JobSpec(name=f"j{number}", frames=f"1-{args.frames}", argv=["true"])
                    ).id
                    for number in range(args.jobs)
                ]
                fill(disk / "filler")
                probe = subprocess.Popen(
                    [sys.executable, str(PROBE), str(port), str(args.seconds)],
                    stdout=subprocess.PIPE,
                    text=True,
                )
                assert probe.stdout is not None
                probe.stdout.readline()
                took: list[float] = []
                refused = 0
                for job_id in jobs[: args.refusals]:
                    began = time.perf_counter()
                    try:
                        farm.chunk_action(job_id, "set-done", range(args.frames))
                    except FarmError:
                        refused += 1
                    took.append(time.perf_counter() - began)
                latencies = json.loads(probe.stdout.readline())
                probe.wait()
        finally:
            leader.terminate()
            leader.wait(30)
            log.close()
        stalls = [int(m.group(1)) for m in STALL.finditer((base / "leader.log").read_text())]
        return {
            "refused": refused,
            "refusal_p50_ms": 1000 * statistics.median(took),
            "refusal_max_ms": 1000 * max(took),
            "healthz_p99_ms": 1000 * sorted(latencies)[int(0.99 * (len(latencies) - 1))],
            "healthz_max_ms": 1000 * max(latencies),
            "stalls": len(stalls),
            "stall_max_ms": max(stalls, default=0),
        }
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def _healthy(url: str) -> bool:
    import httpx

    try:
        return httpx.get(f"{url}/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--disk", default="12m")
    parser.add_argument("--jobs", type=int, default=250)
    parser.add_argument("--frames", type=int, default=5000)
    parser.add_argument("--refusals", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=8.0, help="the probe's length")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "full_disk.json")
    args = parser.parse_args()
    shapes = {"reserve 0 (before)": 0.0, "default reserve": None}
    results: dict[str, list[dict[str, Any]]] = {key: [] for key in shapes}
    for run in range(args.runs):
        for key, reserve in shapes.items():
            with tempfile.TemporaryDirectory(prefix="farm-full-disk-") as folder:
                record = one_run(Path(folder), reserve, args)
            results[key].append(record)
            print(f"run {run + 1} {key}: {json.dumps(record)}", flush=True)
    print()
    print(f"| medians of {args.runs} runs | {' | '.join(shapes)} |")
    print("|---|" + "---|" * len(shapes))
    for field in (
        "refused",
        "refusal_p50_ms",
        "refusal_max_ms",
        "healthz_p99_ms",
        "healthz_max_ms",
        "stalls",
        "stall_max_ms",
    ):
        cells = [f"{statistics.median(r[field] for r in results[key]):.0f}" for key in shapes]
        print(f"| {field} | " + " | ".join(cells) + " |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps({"args": vars(args) | {"out": str(args.out)}, "results": results}, indent=1)
    )


if __name__ == "__main__":
    main()
