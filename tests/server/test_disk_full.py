"""A leader whose data folder fills up for real: a small tmpfs, a leader subprocess, `farm`.

What the CLI was told is what the leader shows, and what it still has after
``kill -9`` and a restart: a submit refused for lack of space leaves no ghost
job, and works again once there is room; deleting jobs still works on a
nearly full disk, and makes that room. Needs root (to mount the tmpfs).
"""

from __future__ import annotations

import asyncio
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
from server.disk_room import BALLAST_NAME, REFUSAL, RESERVE_SHARE, DiskRoom
from tests.e2e.fault_support import wait_until
from tests.helpers.fake_agent import FakeAgent
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


def kill_and_restart(farm: LocalFarm) -> None:
    """``kill -9`` the leader and start it again on the same folders."""
    child = farm.leader
    assert child is not None
    os.killpg(child.process.pid, signal.SIGKILL)
    child.process.wait(timeout=10)
    farm.start_leader()


def wait_for_an_empty_wal(data: Path) -> None:
    """Until the checkpointer has emptied the WAL (a round with no commit)."""
    wal = data / "farm.db-wal"
    wait_until(lambda: not wal.exists() or wal.stat().st_size == 0, 30.0, "an empty WAL")


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
    assert one_line(refused) == f"farm submit: {REFUSAL}"
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
    kill_and_restart(leader.farm)
    assert jobs_on(leader) == acknowledged


def leave_free(filler: Path, room: int) -> None:
    """Give back ``room`` bytes of a disk ``filler`` filled."""
    with filler.open("r+b") as out:
        out.truncate(max(0, filler.stat().st_size - room))


@pytest.fixture
def full_store(small_disk: Path, tmp_path: Path) -> Iterator[tuple[LocalFarm, LiveLeader]]:
    """A leader with a reserve (5% of the 3 MB disk: ~150 KB, disk_reserve_mb is more)
    and twelve jobs that fill its store, its WAL emptied: what is left is all there is."""
    (small_disk / "leader.toml").write_text("disk_reserve_mb = 1\n")
    farm = LocalFarm(small_disk, tmp_path / "root", port=free_port())
    try:
        farm.start_leader()
        leader = LiveLeader(farm, tmp_path / "config")
        for number in range(12):
            done = leader.cli("submit", "--name", f"old-{number}", *BIG_JOB)
            assert done.returncode == 0, done.stderr
            # A chunk gets a row of its own once it changes: these jobs fill the store.
            marked = leader.cli("chunks", done.stdout.strip(), "set-done", "0-299")
            assert marked.returncode == 0, marked.stderr
        wait_for_an_empty_wal(small_disk)
        yield farm, leader
    finally:
        farm.stop(grace=5.0)


def test_deleting_jobs_works_on_a_nearly_full_disk_and_makes_room(
    full_store: tuple[LocalFarm, LiveLeader],
) -> None:
    farm, leader = full_store
    acknowledged = jobs_on(leader)

    # Under the reserve, with room left on the disk: a submit that would fit is
    # refused all the same, and so is a pause; nothing changes.
    filler = fill(leader.data)
    leave_free(filler, 140 * 1024)
    refused = leader.cli("submit", "--name", "new", *BIG_JOB)
    assert refused.returncode != 0
    assert refused.stdout == ""
    assert one_line(refused) == f"farm submit: {REFUSAL}"
    first = next(iter(acknowledged))
    assert one_line(leader.cli("pause", first)) == f"farm pause: {REFUSAL}"
    assert jobs_on(leader) == acknowledged

    # Deleting jobs uses the reserve, and the pages they held are room again once the
    # WAL that held the deletes is emptied (a second later): an operator deletes old
    # jobs one by one until a submit is accepted again.
    def submitted() -> str | None:
        wait_for_an_empty_wal(leader.data)
        again = leader.cli("submit", "--name", "new", *BIG_JOB)
        if again.returncode != 0:
            assert one_line(again) == f"farm submit: {REFUSAL}"
            return None
        return again.stdout.strip()

    accepted = None
    for job_id in list(acknowledged)[:11]:
        deleted = leader.cli("delete", job_id, "--yes")
        assert deleted.returncode == 0, deleted.stderr
        del acknowledged[job_id]
        accepted = submitted()
        if accepted is not None:
            break
    assert accepted is not None, "no room after deleting eleven of twelve jobs"
    acknowledged[accepted] = "queued"
    assert jobs_on(leader) == acknowledged

    # kill -9 and a restart: the deletes and the submit were committed.
    kill_and_restart(farm)
    assert jobs_on(leader) == acknowledged


def test_room_comes_back_only_well_above_the_reserve(tmp_path: Path) -> None:
    """Short below the reserve; room again only at 1.5 times it (no flapping around it)."""
    with tmpfs(tmp_path / "disk", "1m") as disk:
        room = DiskRoom(disk, 1024**3, lambda: 0)  # capped: 5% of 1 MB
        reserve = int(disk_size(disk) * RESERVE_SHARE)
        filler = fill(disk)
        leave_free(filler, reserve // 2)
        assert room.refusal() == REFUSAL
        leave_free(filler, reserve // 2 + 4096)  # just above the reserve, under 1.5 x
        assert room.refusal() == REFUSAL
        leave_free(filler, reserve)  # now 2 x the reserve free
        assert room.refusal() is None


def test_free_pages_in_the_store_do_not_make_a_full_file_system_roomy(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "disk", "1m") as disk:
        room = DiskRoom(disk, 1024**3, lambda: 1024**3)  # farm.db all free pages
        filler = fill(disk)
        assert room.refusal() == REFUSAL  # a commit would have nowhere to grow its WAL
        leave_free(filler, int(disk_size(disk) * RESERVE_SHARE))
        assert room.refusal() is None  # the file system has its share: the pages count


def test_a_leader_stopped_cleanly_starts_on_a_disk_filled_to_its_last_byte(
    leader_on_small_disk: LiveLeader,
) -> None:
    """SQLite makes its -shm and -wal files as it opens the database: the ballast's room
    is given back before, or the leader could not start."""
    leader = leader_on_small_disk
    first = leader.cli("submit", "--name", "first", "--", "true")
    assert first.returncode == 0, first.stderr
    wait_until((leader.data / BALLAST_NAME).exists, 10.0, "the ballast")
    leader.farm.stop(grace=10.0)  # a clean stop: SQLite removes -shm and -wal
    fill(leader.data)
    leader.farm.start_leader()
    assert jobs_on(leader) == {first.stdout.strip(): "queued"}
    refused = leader.cli("submit", "--name", "second", "--", "true")
    assert one_line(refused) == f"farm submit: {REFUSAL}"


def test_a_start_without_a_ballast_needs_the_room_to_make_one(tmp_path: Path) -> None:
    """No ballast at the start (the last run ended short): short until there is room as
    when the disk comes back from short, for the ballast too; then it is made."""
    with tmpfs(tmp_path / "disk", "1m") as disk:
        reserve = int(disk_size(disk) * RESERVE_SHARE)
        filler = fill(disk)
        leave_free(filler, reserve * 5 // 4)  # above the reserve, below 1.5 x + ballast
        room = DiskRoom(disk, 1024**3, lambda: 0, ballast=True)
        room.start()
        assert room.refusal() == REFUSAL
        assert not (disk / BALLAST_NAME).exists()
        leave_free(filler, reserve)
        assert room.refusal() is None
        wait_until((disk / BALLAST_NAME).exists, 10.0, "the ballast")


def test_the_ballast_gives_its_room_back_when_short_and_comes_back_without_flapping(
    tmp_path: Path,
) -> None:
    with tmpfs(tmp_path / "disk", "1m") as disk:
        room = DiskRoom(disk, 1024**3, lambda: 0, ballast=True)
        reserve = int(disk_size(disk) * RESERVE_SHARE)
        ballast = disk / BALLAST_NAME
        room.start()
        wait_until(ballast.exists, 10.0, "the ballast")
        size = ballast.stat().st_size
        assert size >= reserve // 2 - 4096

        filler = fill(disk)  # to the last byte
        assert room.refusal() == REFUSAL
        assert not ballast.exists()
        assert os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize >= size  # its room
        # 1.5 x the reserve free (the ballast's room included) is not enough: room comes
        # back only with enough for the ballast beyond it.
        leave_free(filler, reserve * 3 // 2 - size + 4096)
        assert room.refusal() == REFUSAL
        leave_free(filler, size)
        assert room.refusal() is None
        wait_until(ballast.exists, 10.0, "the ballast made again")
        assert room.refusal() is None  # made, and still room: no flapping


def disk_size(folder: Path) -> int:
    disk = os.statvfs(folder)
    return disk.f_blocks * disk.f_frsize


def test_a_delete_too_big_for_the_room_left_says_to_delete_fewer(
    full_store: tuple[LocalFarm, LiveLeader],
) -> None:
    _, leader = full_store
    acknowledged = jobs_on(leader)
    leave_free(fill(leader.data), 64 * 1024)  # short, and less than 12 jobs' pages
    refused = leader.cli("delete", *acknowledged, "--yes")
    assert refused.returncode != 0
    assert one_line(refused).endswith(
        "(too little room for it: delete fewer jobs at a time, or free space on the leader's disk)"
    )
    assert jobs_on(leader) == acknowledged
    one = leader.cli("delete", next(iter(acknowledged)), "--yes")
    assert one.returncode == 0, one.stderr


def test_a_disk_another_process_filled_to_its_last_byte_still_takes_hellos_and_deletes(
    full_store: tuple[LocalFarm, LiveLeader],
) -> None:
    """Idle, its WAL emptied, its disk filled by someone else to the last byte: the
    ballast gives its room back, so a node can still connect and a job be deleted."""
    farm, leader = full_store
    ballast = leader.data / BALLAST_NAME
    wait_until(ballast.exists, 10.0, "the ballast")  # made on a thread at the start
    acknowledged = jobs_on(leader)
    # Old jobs deleted: farm.db holds free pages, more than the reserve, but a commit
    # must first grow the WAL on the file system, which will have nothing left.
    for job_id in list(acknowledged)[:8]:
        deleted = leader.cli("delete", job_id, "--yes")
        assert deleted.returncode == 0, deleted.stderr
        del acknowledged[job_id]
    wait_for_an_empty_wal(leader.data)
    fill(leader.data)

    async def hello() -> None:
        ws_url = leader.url.replace("http://", "ws://", 1)
        async with FakeAgent.connect(ws_url, leader.agent_token, "late-node") as agent:
            assert agent.welcome is not None

    asyncio.run(hello())
    first = next(iter(acknowledged))
    deleted = leader.cli("delete", first, "--yes")
    assert deleted.returncode == 0, deleted.stderr
    del acknowledged[first]
    assert not ballast.exists()
    assert jobs_on(leader) == acknowledged

    # kill -9 and a restart: the node's hello and the delete were committed.
    kill_and_restart(farm)
    assert jobs_on(leader) == acknowledged
    nodes = leader.cli("nodes", "--json")
    assert nodes.returncode == 0, nodes.stderr
    assert "late-node" in {node["name"] for node in json.loads(nodes.stdout)}
