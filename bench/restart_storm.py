"""A dead node among a farm coming back after a leader restart: when is it lost?

A real leader (``node_timeout`` from ``--node-timeout``), one job of 100,000
one-frame chunks of 3 s, ``--agents`` simulated agents × 4 slots
(``tests/helpers/sim_agents.py``) in one process and one more, "dead-0001",
alone in another. Once every node is busy, the leader and the lone agent are
killed (-9) together and the leader restarted at once on the same data. The
lone node's "node dead-0001 lost" line is timed from the restart; every
other node must stay (none lost: they all come back).

    python bench/restart_storm.py --agents 300 --runs 3
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))

from farmtui.client import FarmClient  # noqa: E402
from farmtui.localfarm import LocalFarm, free_port  # noqa: E402
from farmtui.protocol import JobSpec  # noqa: E402


def swarm(local: LocalFarm, prefix: str, agents: int, out: str) -> subprocess.Popen[bytes]:
    args = [sys.executable, "-m", "tests.helpers.sim_agents", "--leader", local.url]
    args += ["--token-file", str(local.agent_token_file), "--agents", str(agents)]
    args += ["--slots", "4", "--cap", "600", "--prefix", prefix, "--render-seconds", "3"]
    args += ["--out", out]
    return subprocess.Popen(
        args,
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def wait_busy(local: LocalFarm, count: int, within: float) -> int:
    """Poll until ``count`` nodes run chunks, dead-0001 among them; how many did."""
    deadline = time.monotonic() + within
    busy: list[str] = []
    while time.monotonic() < deadline:
        with FarmClient(local.url, local.admin_token()) as farm:
            busy = [node.name for node in farm.nodes() if node.running]
        if len(busy) >= count and "dead-0001" in busy:
            break
        time.sleep(0.5)
    return len(busy)


def one_run(agents: int, node_timeout: float) -> dict[str, float | int | None]:
    with tempfile.TemporaryDirectory(prefix="storm-") as tmp:
        data = Path(tmp) / "data"
        data.mkdir()
        (data / "leader.toml").write_text(f"node_timeout = {node_timeout}\n")
        local = LocalFarm(data, Path(tmp) / "root", port=free_port())
        with local:
            local.start_leader()
            spec = JobSpec(
                name="storm",
                frames="1-100000",
                chunk=1,
                renderer="generic",
                argv=["true"],
                staging=False,
            )
            with FarmClient(local.url, local.admin_token()) as farm:
                farm.submit(spec)
            many = swarm(local, "sim", agents, f"{tmp}/many.json")
            lone = swarm(local, "dead", 1, f"{tmp}/lone.json")
            try:
                busy = wait_busy(local, agents + 1, 120.0)
                leader = local.leader
                assert leader is not None
                os.kill(lone.pid, signal.SIGKILL)
                leader.process.kill()
                leader.process.wait()
                restarted = time.monotonic()
                local.leader = None
                local.start_leader(timeout=120)
                healthy = time.monotonic() - restarted
                log = local.leader.log
                lost: float | None = None
                while time.monotonic() - restarted < 10 * node_timeout:
                    if "node dead-0001 lost" in log.read_text(errors="replace"):
                        lost = time.monotonic() - restarted
                        break
                    time.sleep(0.2)
                others = set(re.findall(r"node (sim-\d+) lost", log.read_text(errors="replace")))
            finally:
                for process in (many, lone):
                    if process.poll() is None:
                        process.send_signal(signal.SIGTERM)
                        try:
                            process.wait(30)
                        except subprocess.TimeoutExpired:
                            process.kill()
    return {"busy": busy, "healthz_s": healthy, "dead_lost_s": lost, "others_lost": len(others)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=int, default=300)
    parser.add_argument("--node-timeout", type=float, default=10.0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "restart_storm.json")
    args = parser.parse_args()
    results = []
    for run in range(1, args.runs + 1):
        result = one_run(args.agents, args.node_timeout)
        results.append(result)
        print(f"run {run}: {result}", flush=True)
    lost = [r["dead_lost_s"] for r in results if r["dead_lost_s"] is not None]
    print(
        f"{args.agents} agents, node_timeout {args.node_timeout:g} s: the dead node lost after "
        f"{statistics.median(lost):.1f} s (median of {len(lost)}; "
        f"{len(results) - len(lost)} never); other nodes lost: "
        f"{sum(int(r['others_lost'] or 0) for r in results)}"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    record = {"agents": args.agents, "node_timeout": args.node_timeout, "runs": results}
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
