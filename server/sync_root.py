"""Which farm a sync root belongs to: its id, in the root and in the farm's store.

A leader marks its sync root with an id (``.farmtui-root``) that its agents
read to know they see the same storage. The id is the farm's first: it lives
in the store (the ``root_id`` setting), and the root only repeats it. A root
that names another farm is refused, since two farms rendering into one root
would each clean up the other's files, and a SQLite leader and a PostgreSQL
leader given the same root would otherwise both be active on it.
"""

from __future__ import annotations

import secrets
from pathlib import Path

from farmtui.protocol import ROOT_ID_FILE
from server.errors import LeaderError
from server.migrate import MOVED_TO, check_not_moved
from server.store import FarmStore, open_store
from server.store_url import parse_store_url

ROOT_ID_SETTING = "root_id"


def read_root_id(root: Path) -> str:
    """The id written in ``root``; empty when it has none (or does not exist yet)."""
    try:
        return (root / ROOT_ID_FILE).read_text(encoding="utf-8").strip()
    except (FileNotFoundError, NotADirectoryError):
        return ""


def check_root_id(root: Path, in_root: str, ours: str | None, where: str) -> None:
    """LeaderError in one line when ``root`` (its id ``in_root``) is another farm's."""
    if not in_root or in_root == ours:
        return
    if ours:
        raise LeaderError(
            f"the sync root {root} belongs to another farm (id {in_root}; this farm's is "
            f"{ours}): give each farm a root of its own"
        )
    raise LeaderError(
        f"the sync root {root} belongs to another farm (id {in_root}) and this farm's store "
        f"({where}) is new: give this farm a root of its own, or remove "
        f"{root / ROOT_ID_FILE} if that farm is gone for good"
    )


def claim_root(root: Path, store: FarmStore) -> str:
    """The farm's root id, written into ``root``; LeaderError when it is another farm's."""
    in_root = read_root_id(root)
    ours = store.setting(ROOT_ID_SETTING)
    check_root_id(root, in_root, ours, store.where)
    if not ours:
        # Stored before the root is marked, and never over another leader's: leaders
        # that start together on a new database agree on one id.
        ours = store.claim_setting(ROOT_ID_SETTING, secrets.token_hex(16))
    if in_root != ours:
        (root / ROOT_ID_FILE).write_text(ours + "\n", encoding="utf-8")
    return ours


def check_store_before_start(root: Path, store_url: str, data: Path) -> None:
    """The leader's refusals of its store and root, before it starts, creating nothing.

    A SQLite file in a folder that does not exist (the leader makes only its
    ``data`` folder), a farm moved away by ``farm migrate``, and a root that is
    another farm's (``claim_root``). A SQLite store that does not exist yet is
    a new farm: it is not created just to be told the root is taken.
    """
    kind, where = parse_store_url(store_url)
    folder = Path(where).parent
    if kind == "sqlite" and not folder.is_dir() and folder.resolve() != data.resolve():
        raise LeaderError(f"cannot open sqlite:{where}: the folder {folder} does not exist")
    ours, shown = None, where
    if kind == "postgresql" or Path(where).exists():
        store = open_store(store_url)
        try:
            check_not_moved(store.setting(MOVED_TO), store.where)
            if kind == "sqlite" and store.leaders_on_it():
                raise LeaderError(
                    f"another leader runs on {store.where}: stop it first (one leader per farm.db)"
                )
            ours, shown = store.setting(ROOT_ID_SETTING), store.where
        finally:
            store.close()
    check_root_id(root, read_root_id(root), ours, shown)
