"""A leader whose data folder fills up for real: a small tmpfs, a leader subprocess, `farm`.

What the CLI was told is what the leader shows, and what it still has after
``kill -9`` and a restart: a submit refused for lack of space leaves no ghost
job, and works again once there is room. Needs root (to mount the tmpfs).
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from farmtui.localfarm import LocalFarm, free_port
from tests.helpers.farm import LiveLeader, needs_leader
from tests.helpers.small_disk import fill as fill_disk
from tests.helpers.small_disk import small_disk as tmpfs

pytestmark = [pytest.mark.slow, needs_leader]

# Room for the leader's database and logs, little more.
TMPFS_SIZE = "3m"
# Enough chunk rows that each submit needs many new pages.
BIG_JOB = ["--frames", "1-300", "--chunk", "1", "--", "true"]
MAX_SUBMITS = 60


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A folder on its own small tmpfs, unmounted afterwards."""
    with tmpfs(tmp_path / "data", TMPFS_SIZE, mode="0700") as folder:
        yield folder


@pytest.fixture
def leader_on_small_disk(small_disk: Path, tmp_path: Path) -> Iterator[LiveLeader]:
    farm = LocalFarm(small_disk, tmp_path / "root", port=free_port())
    try:
        farm.start_leader()
        yield LiveLeader(farm, tmp_path / "config")
    finally:
        farm.stop(grace=5.0)


def fill(folder: Path) -> Path:
    """Write a file until the file system has no room left; returns it."""
    filler = folder / "filler"
    assert fill_disk(filler) == errno.ENOSPC
    return filler


def jobs_on(leader: LiveLeader) -> dict[str, str]:
    done = leader.cli("jobs", "--json")
    assert done.returncode == 0, done.stderr
    jobs: list[dict[str, Any]] = json.loads(done.stdout)
    return {job["id"]: job["state"] for job in jobs}


def one_line(done: subprocess.CompletedProcess[str]) -> str:
    assert done.stderr.count("\n") == 1, done.stderr
    return done.stderr.strip()


def test_a_full_disk_refuses_submits_without_ghosts_and_recovers(
    leader_on_small_disk: LiveLeader,
) -> None:
    leader = leader_on_small_disk
    acknowledged: dict[str, str] = {}

    first = leader.cli("submit", "--name", "first", "--", "true")
    assert first.returncode == 0, first.stderr
    acknowledged[first.stdout.strip()] = "queued"

    filler = fill(leader.data)
    refused = None
    for _ in range(MAX_SUBMITS):
        done = leader.cli("submit", "--name", "big", *BIG_JOB)
        if done.returncode != 0:
            refused = done
            break
        # Room the file system still had (SQLite reuses what it already holds).
        acknowledged[done.stdout.strip()] = "queued"
    assert refused is not None, f"{MAX_SUBMITS} submits fitted on a full disk"
    assert refused.stdout == ""
    assert one_line(refused) == "farm submit: the leader's disk is full: nothing was changed"
    assert jobs_on(leader) == acknowledged, "no ghost job"

    # A pause either fits in what SQLite already holds or is refused: either way the
    # leader shows what the CLI was told.
    job_id = next(iter(acknowledged))
    paused = leader.cli("pause", job_id)
    if paused.returncode == 0:
        acknowledged[job_id] = "paused"
    else:
        assert "disk is full" in one_line(paused)
    assert jobs_on(leader) == acknowledged

    filler.unlink()
    again = leader.cli("submit", "--name", "big", *BIG_JOB)
    assert again.returncode == 0, again.stderr
    acknowledged[again.stdout.strip()] = "queued"
    assert jobs_on(leader) == acknowledged

    # kill -9 and a restart on the same folders: exactly the acknowledged jobs.
    child = leader.farm.leader
    assert child is not None
    os.killpg(child.process.pid, signal.SIGKILL)
    child.process.wait(timeout=10)
    leader.farm.start_leader()
    assert jobs_on(leader) == acknowledged
