"""The ballast file that holds room for the leader's reserve (``server.disk_room.Ballast``)."""

from __future__ import annotations

import os
from pathlib import Path

from server.disk_room import Ballast
from tests.e2e.fault_support import wait_until


def made(path: Path, size: int) -> bool:
    try:
        info = os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        return False
    return info.st_size == size


def test_a_ballast_is_made_whole_and_dropped_at_once(tmp_path: Path) -> None:
    ballast = Ballast(tmp_path / "b")
    ballast.make(64 * 1024)
    wait_until(lambda: made(tmp_path / "b", 64 * 1024), 10.0, "the ballast")
    assert ballast.held() >= 64 * 1024  # allocated, not sparse
    ballast.drop()
    assert not (tmp_path / "b").exists()
    assert ballast.held() == 0


def test_a_symlink_planted_in_its_place_is_never_written_through(tmp_path: Path) -> None:
    outside = tmp_path / "precious"
    outside.write_bytes(b"keep me")
    (tmp_path / "b.new").symlink_to(outside)  # as if left while it was being made
    ballast = Ballast(tmp_path / "b")
    ballast.make(8192)
    wait_until(lambda: made(tmp_path / "b", 8192), 10.0, "the ballast")
    assert outside.read_bytes() == b"keep me"
    assert not (tmp_path / "b").is_symlink()

    (tmp_path / "b").unlink()
    (tmp_path / "b").symlink_to(outside)
    assert ballast.held() == 0  # a symlink holds no room of ours
    ballast.drop()  # removes the link, not what it points to
    assert outside.read_bytes() == b"keep me"
    assert not (tmp_path / "b").is_symlink()


def test_a_drop_while_it_is_made_wins(tmp_path: Path) -> None:
    ballast = Ballast(tmp_path / "b")
    ballast.make(32 * 1024 * 1024)
    ballast.drop()
    wait_until(lambda: ballast._thread is None, 10.0, "the maker to finish")
    assert not (tmp_path / "b").exists()
    assert not (tmp_path / "b.new").exists()


def test_what_a_killed_leader_left_half_made_is_given_back_too(tmp_path: Path) -> None:
    (tmp_path / "b.new").write_bytes(b"\0" * 8192)
    Ballast(tmp_path / "b").drop()
    assert not (tmp_path / "b.new").exists()


def test_a_folder_in_its_place_leaves_no_half_made_ballast(tmp_path: Path) -> None:
    (tmp_path / "b").mkdir()
    ballast = Ballast(tmp_path / "b")
    ballast.make(8192)
    wait_until(lambda: ballast._thread is None, 10.0, "the maker to give up")
    assert not (tmp_path / "b.new").exists()
    assert (tmp_path / "b").is_dir()
