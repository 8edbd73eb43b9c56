"""``examples/submit_and_watch.py``, the Python client's example, run against a real farm."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.helpers.farm import AgentFactory, LiveLeader, needs_agent

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "submit_and_watch.py"


def run_example(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(EXAMPLE), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


@needs_agent
def test_the_example_submits_watches_and_archives_a_job(
    farm_leader: LiveLeader, farm_agents: AgentFactory
) -> None:
    farm_agents(1, slots=2)
    done = run_example(
        farm_leader.env(), "--name", "example-shot", "--frames", "1-6", "--chunk", "2"
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("connected to http://127.0.0.1:")
    assert lines[0].endswith("as admin (admin)")
    job_id = lines[1].split()[1]
    assert "6/6 frames done" in lines[-2]
    assert lines[-1] == f"{job_id} done and archived"
    with farm_leader.client() as farm:
        job = farm.show(job_id).job
    assert (job.state, job.archived, job.stats.frames_done) == ("done", True, 6)
    frames = sorted(p.name for p in (farm_leader.root / "renders" / "example-shot").iterdir())
    assert frames == [f"frame_{n:04d}.png" for n in range(1, 7)]


def test_the_example_says_in_one_line_when_no_leader_is_configured(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "XDG_CONFIG_HOME": str(tmp_path), "HOME": str(tmp_path)}
    refused = run_example(env)
    assert refused.returncode == 2
    assert refused.stdout == ""
    assert len(refused.stderr.strip().splitlines()) == 1
    assert "no leader configured" in refused.stderr
