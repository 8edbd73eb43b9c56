"""Which farm a sync root belongs to (``server.sync_root``): one farm per root."""

from __future__ import annotations

from pathlib import Path

import pytest

from farmtui.protocol import ROOT_ID_FILE
from server.errors import LeaderError
from server.store import open_store
from server.sync_root import check_store_before_start, claim_root


def test_a_new_farm_marks_its_root_and_keeps_the_id_across_restarts(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    store = open_store(tmp_path / "farm.db")
    first = claim_root(root, store)
    assert (root / ROOT_ID_FILE).read_text().strip() == first
    assert store.setting("root_id") == first
    (root / ROOT_ID_FILE).unlink()  # a new, empty filer for the same farm
    assert claim_root(root, store) == first
    assert (root / ROOT_ID_FILE).read_text().strip() == first


def test_a_root_of_another_farm_is_refused_and_left_as_it_was(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    claim_root(root, open_store(tmp_path / "a.db"))
    theirs = (root / ROOT_ID_FILE).read_text()
    with pytest.raises(LeaderError, match="belongs to another farm .* is new"):
        claim_root(root, open_store(tmp_path / "b.db"))
    other = tmp_path / "other"
    other.mkdir()
    ours = claim_root(other, open_store(tmp_path / "c.db"))
    with pytest.raises(LeaderError, match=f"this farm's is {ours}"):
        claim_root(root, open_store(tmp_path / "c.db"))
    assert (root / ROOT_ID_FILE).read_text() == theirs
    assert open_store(tmp_path / "b.db").setting("root_id") is None


def test_the_check_before_start_creates_no_database(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (root / ROOT_ID_FILE).write_text("0123abcd\n")
    with pytest.raises(LeaderError, match="belongs to another farm"):
        check_store_before_start(root, f"sqlite:{tmp_path / 'new.db'}", tmp_path)
    assert not (tmp_path / "new.db").exists()
    check_store_before_start(tmp_path / "fresh-root", f"sqlite:{tmp_path / 'new.db'}", tmp_path)
