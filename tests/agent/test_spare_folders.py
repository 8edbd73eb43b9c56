"""An attempt's folder is always new, empty and real, though renderers can write in staging.

Renderers run as the agent's user: one could plant files in a spare folder
waiting for a later attempt (another job's, which would then be credited with
frames it never rendered), or put a symlink there (the next attempt would
render in whatever it points to), or make the folder a later attempt will get.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.spare_folders import SpareFolders


@pytest.fixture
def staging(tmp_path: Path) -> Path:
    root = tmp_path / "staging"
    root.mkdir()
    return root


def spare_waiting(spares: SpareFolders, staging: Path) -> Path:
    used = staging / "job1" / "1.1"
    spares.make(used)
    assert spares.keep(used)
    (spare,) = list((staging / ".spare").iterdir())
    return spare


def test_files_planted_in_a_waiting_spare_never_reach_the_next_attempt(staging: Path) -> None:
    spares = SpareFolders(staging)
    spare = spare_waiting(spares, staging)
    (spare / "renders").mkdir()
    (spare / "renders" / "out_0002.png").write_text("PLANTED")

    folder = staging / "job2" / "2.1"
    spares.make(folder)
    assert folder.is_dir()
    assert not folder.is_symlink()
    assert list(folder.iterdir()) == []


def test_a_spare_swapped_for_a_symlink_is_never_the_next_attempts_folder(
    staging: Path, tmp_path: Path
) -> None:
    target = tmp_path / "sync-root"
    target.mkdir()
    (target / "shot.exr").write_text("kept")
    spares = SpareFolders(staging)
    spare = spare_waiting(spares, staging)
    spare.rmdir()
    spare.symlink_to(target)

    folder = staging / "job2" / "2.1"
    spares.make(folder)
    assert not folder.is_symlink()
    assert list(folder.iterdir()) == []
    assert (target / "shot.exr").read_text() == "kept", "the symlink's target was touched"


def test_a_folder_planted_where_an_attempts_folder_will_be_is_replaced(
    staging: Path, tmp_path: Path
) -> None:
    spares = SpareFolders(staging)
    planted = staging / "job2" / "2.1"
    (planted / "renders").mkdir(parents=True)
    (planted / "renders" / "out_0002.png").write_text("PLANTED")
    spares.make(planted)
    assert list(planted.iterdir()) == []

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    later = staging / "job2" / "3.1"
    later.symlink_to(elsewhere)
    spares.make(later)
    assert not later.is_symlink()
    assert elsewhere.is_dir()
