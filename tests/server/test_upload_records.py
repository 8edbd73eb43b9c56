"""Uploads a leader was killed in the middle of leave no temporary file for good."""

from __future__ import annotations

from pathlib import Path

from server.api_uploads import Upload
from server.upload_records import sweep_uploads


def leftovers(root: Path) -> list[str]:
    return sorted(p.name for p in root.rglob(".farmtui-*.upload"))


def test_a_leader_killed_mid_upload_removes_its_temporary_file_at_the_next_start(
    tmp_path: Path,
) -> None:
    """Break rounds 29d and 29f: a leader `kill -9`'d while a node uploaded a frame left
    `renders/j2/.farmtui-<hex>.upload` beside the frames, and nothing removed it."""
    root, records = tmp_path / "root", tmp_path / "data" / "uploads"
    root.mkdir()
    cut = Upload(root, "renders/j2/f_0001.exr", records)
    cut.write(b"half a frame")
    cut.handle.flush()  # the leader dies here: no commit, no abort
    whole = Upload(root, "renders/j2/f_0002.exr", records)
    whole.write(b"a frame")
    whole.commit()
    whole.abort()  # as a request's end does: its record goes with it
    assert len(leftovers(root)) == 1
    assert len(list(records.iterdir())) == 1

    assert sweep_uploads(root, records) == 1
    assert leftovers(root) == []
    assert list(records.iterdir()) == []
    assert (root / "renders/j2/f_0002.exr").read_bytes() == b"a frame"
    assert sweep_uploads(root, records) == 0  # nothing twice; no records folder is fine


def test_a_sweep_never_follows_a_symlink_put_on_the_way(tmp_path: Path) -> None:
    """A renderer that replaced the upload's folder by a symlink meanwhile does not make
    the sweep remove a file of that name elsewhere."""
    root, records, elsewhere = tmp_path / "root", tmp_path / "uploads", tmp_path / "elsewhere"
    root.mkdir()
    elsewhere.mkdir()
    cut = Upload(root, "renders/j3/f_0001.exr", records)
    cut.handle.flush()
    name = cut.name
    (root / "renders/j3" / name).rename(elsewhere / name)
    (root / "renders/j3").rmdir()
    (root / "renders/j3").symlink_to(elsewhere)
    assert sweep_uploads(root, records) == 0
    assert (elsewhere / name).exists()
    assert list(records.iterdir()) == []
