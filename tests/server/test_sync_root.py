"""Which farm a sync root belongs to (``server.sync_root``): one farm per root."""

from __future__ import annotations

import dataclasses
import errno
from pathlib import Path
from typing import Any

import pytest

from farmtui.protocol import ROOT_ID_FILE
from server.config import LeaderSettings
from server.errors import LeaderError
from server.leader import Leader
from server.log_process import LogProcess
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


def test_a_leader_refused_its_root_leaves_its_database_unlocked(tmp_path: Path) -> None:
    """A start refused after the store was opened (here: the root is another farm's)
    held the database's lock for as long as the failed leader was referenced (by its
    error's traceback, in ``run_leader``): the next try said another leader ran on it."""
    root = tmp_path / "root"
    root.mkdir()
    (root / ROOT_ID_FILE).write_text("0123456789abcdef0123456789abcdef\n")
    settings = LeaderSettings(data=tmp_path / "data", root=root)
    with pytest.raises(LeaderError, match="belongs to another farm") as refused:
        Leader(settings)
    assert refused.value.__traceback__ is not None  # the refused leader is still referenced
    leader = Leader(dataclasses.replace(settings, root=tmp_path / "its-own-root"))
    assert leader.role == "active"
    leader.store.close()


def test_a_leader_that_cannot_start_its_log_writer_leaves_its_database_unlocked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same for a failure later in its set-up (here: no descriptor left)."""

    def no_descriptor(self: Any, root: Path) -> None:
        raise OSError(errno.EMFILE, "Too many open files")

    settings = LeaderSettings(data=tmp_path / "data", root=tmp_path / "root")
    with monkeypatch.context() as patched:
        patched.setattr(LogProcess, "__init__", no_descriptor)
        with pytest.raises(OSError, match="Too many open files") as refused:
            Leader(settings)
    assert refused.value.__traceback__ is not None
    leader = Leader(settings)
    assert leader.role == "active"
    leader.store.close()
