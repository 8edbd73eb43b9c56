"""GPUs, limits and frame-by-frame dependencies on a real farm (leader and agents on loopback).

The tallying renderer records, for each run of each frame, when it started and
ended and the ``CUDA_VISIBLE_DEVICES`` it was given; the GPUs come from a fake
``nvidia-smi`` on the agent's PATH (the agent's detection is the real one).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from itertools import combinations
from pathlib import Path

import pytest

from tests.e2e.e2e_support import wait_until
from tests.e2e.fault_support import FaultFarm, Run, Tally, attempt_summary, fault_toml
from tests.helpers.farm import needs_agent

pytestmark = [needs_agent, pytest.mark.slow]

FAKE_NVIDIA_SMI = """#!/bin/sh
# Answers the agent's query like two 48 GB cards would.
echo "0, Fake RTX A6000, 49140"
echo "1, Fake RTX A6000, 49140"
"""


@pytest.fixture
def farm(tmp_path: Path) -> Iterator[FaultFarm]:
    with FaultFarm(tmp_path / "farm", fault_toml(node_timeout=2.0)) as made:
        made.start_leader()
        yield made


def gpu_path(folder: Path) -> dict[str, str]:
    """An environment whose PATH finds the fake nvidia-smi first."""
    bin_dir = folder / "bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    smi = bin_dir / "nvidia-smi"
    smi.write_text(FAKE_NVIDIA_SMI)
    smi.chmod(0o755)
    return {"PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}


def overlapping(runs: list[Run]) -> list[tuple[Run, Run]]:
    """Pairs of runs alive at the same moment (from start to the last sign of life)."""
    return [
        (a, b)
        for a, b in combinations(runs, 2)
        if a.start < b.alive_until and b.start < a.alive_until
    ]


def test_each_gpu_chunk_has_its_own_device_and_cpu_chunks_see_none(farm: FaultFarm) -> None:
    farm.start_agents("g1", slots=3, env=gpu_path(farm.folder))
    (node,) = json.loads(farm.cli("nodes", "--json"))
    assert [(g["index"], g["name"], g["memory"]) for g in node["gpus"]] == [
        (0, "Fake RTX A6000", 49140),
        (1, "Fake RTX A6000", 49140),
    ]
    gpu_job = farm.submit(farm.tally_argv(0.4), "--frames", "1-6", "--gpus", "1")
    cpu_job = farm.submit(farm.tally_argv(0.4), "--frames", "11-12")
    wait_until(
        lambda: farm.client.nodes()[0].gpus_busy == [0, 1],
        what="both GPUs in use",
    )
    assert re.search(r"g1 +online +\d/3 +\d/2 ", farm.cli("nodes"))
    for job in (gpu_job, cpu_job):
        farm.wait_job(job, "done")
    runs = farm.tally.runs()
    assert not farm.tally.problems(list(range(1, 7)) + [11, 12])
    gpu_runs = [run for frame in range(1, 7) for run in runs[frame]]
    assert {run.gpus for run in gpu_runs} <= {"0", "1"}
    shared = [(a, b) for a, b in overlapping(gpu_runs) if a.gpus == b.gpus]
    assert not shared, [f"{a.describe()} / {b.describe()} on GPU {a.gpus}" for a, b in shared]
    assert overlapping(gpu_runs), "two GPU chunks never ran side by side: the test proves nothing"
    assert {run.gpus for frame in (11, 12) for run in runs[frame]} == {""}


def test_a_gpu_only_node_takes_no_cpu_job_and_the_reason_says_so(farm: FaultFarm) -> None:
    farm.start_agents("g1", slots=1, extra=["--gpus", "0:24G", "--gpu-only"])
    job = farm.submit(farm.tally_argv(0.0), "--frames", "1")
    wait_until(
        lambda: (
            (farm.show(job)["job"].get("reason") or {}).get("text")
            == "every node it may use takes GPU jobs only"
        ),
        what="the reason line",
    )
    assert "0/1 only" in farm.cli("nodes")
    gpu_job = farm.submit(farm.tally_argv(0.0), "--frames", "2", "--gpus", "1")
    farm.wait_job(gpu_job, "done")
    assert farm.show(job)["job"]["state"] == "queued"


def test_a_licence_is_never_used_twice_even_when_its_node_is_killed(farm: FaultFarm) -> None:
    farm.cli("limit", "set", "lic", "1")
    farm.start_agents("a1", "a2", slots=2)
    # Frames longer than the agents' lease (1.2 s), and than a loaded machine's delays:
    # the killed render dies before its end.
    job = farm.submit(farm.tally_argv(4.0), "--frames", "1-3", "--limits", "lic")
    free = farm.submit(farm.tally_argv(0.2), "--frames", "11-14")
    wait_until(
        lambda: (
            (farm.show(job)["job"].get("reason") or {}).get("text")
            == "waiting for a lic licence (1/1 in use)"
        ),
        what="the licence reason",
    )

    def holder() -> str | None:
        """The node of the one licensed chunk running, once its renderer has started."""
        chunks = [c for c in farm.show(job)["chunks"] if c["state"] == "assigned"]
        running = [r for f in range(1, 4) for r in farm.tally.runs().get(f, []) if not r.end]
        return chunks[0]["node"] if len(chunks) == 1 and running else None

    farm.kill_agent(wait_until(holder, what="a licensed render to run"))  # kill -9
    detail = farm.wait_job(job, "done", timeout=60)
    farm.wait_job(free, "done")
    licensed = [run for frame in range(1, 4) for run in farm.tally.runs()[frame]]
    assert len(licensed) == 4, attempt_summary(detail)  # frame 1 twice: killed, then again
    assert not overlapping(licensed), attempt_summary(detail)
    ends = farm.tally.ended()
    assert all(ends.get(frame) == 1 for frame in range(1, 4)), attempt_summary(detail)
    (limit,) = json.loads(farm.cli("limit", "list", "--json"))
    assert (limit["name"], limit["units"], limit["in_use"]) == ("lic", 1, 0)


def test_limit_commands_refuse_bad_input_and_non_admins(farm: FaultFarm) -> None:
    def farm_cli(*args: str, token: str | None = None) -> subprocess.CompletedProcess[str]:
        env = farm.env()
        if token is not None:
            env["FARM_TOKEN"] = token
        return subprocess.run(
            [sys.executable, "-m", "farmtui", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    user = json.loads(farm.cli("token", "create", "--role", "user", "--name", "bob", "--json"))
    refused = farm_cli("limit", "set", "nuke", "5", token=user["token"])
    assert refused.returncode != 0
    assert len(refused.stderr.strip().splitlines()) == 1
    assert "admin" in refused.stderr or "not allowed" in refused.stderr
    for args in (("limit", "set", "nuke"), ("limit", "set", "bad name", "2"),
                 ("limit", "set", "nuke", "-1"), ("limit", "delete", "nothing")):  # fmt: skip
        done = farm_cli(*args)
        assert done.returncode != 0, args
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert json.loads(farm.cli("limit", "list", "--json")) == []
    job = farm_cli("submit", "--frames", "1", "--gpus", "2", "--gpu-memory", "lots", "--", "x")
    assert job.returncode != 0
    assert "--gpu-memory" in job.stderr


def test_frame_by_frame_dependants_start_as_each_upstream_frame_is_done(
    farm: FaultFarm,
) -> None:
    farm.start_agents("a1", "a2", slots=2)
    # Frames 1-3 are scouts: the render job holds after them, so frames 4-6 wait for
    # an operator while the comp's frames 1-3 must go ahead.
    render = farm.submit(
        farm.tally_argv(0.3), "--name", "render", "--frames", "1-6", "--scout", "1-3"
    )
    with Tally(farm.folder / "comp-tally") as comp_tally:
        comp_argv = [
            sys.executable, str(farm.script), "{start}", "{end}",
            "--tally", str(comp_tally.folder), "--sleep", "0.1",
        ]  # fmt: skip
        comp = farm.submit(
            comp_argv, "--frames", "1-6", "--after", f"{render}:frames", "--priority", "10"
        )
        shown = farm.cli("show", comp)
        assert f"frames of {render} (frame by frame)" in shown
        wait_until(lambda: all(comp_tally.ended().get(f) for f in (1, 2, 3)), what="comp 1-3")
        assert farm.show(render)["job"]["state"] == "holding"
        assert set(farm.tally.runs()) == {1, 2, 3}
        reason = farm.show(comp)["job"]["reason"]["text"]
        assert reason == "waiting on render frame 4 (waiting; job holding)"
        farm.cli("unhold", render)
        farm.wait_job(comp, "done", timeout=60)
        comp_runs = comp_tally.runs()
    render_runs = farm.tally.runs()
    for frame in range(1, 7):
        (upstream,) = render_runs[frame]
        (downstream,) = comp_runs[frame]
        assert upstream.end is not None
        assert downstream.start >= upstream.end, frame
