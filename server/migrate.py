"""``farm migrate``: move a farm from one store to another (SQLite to PostgreSQL, mostly).

Every row is copied as stored (jobs, chunks, nodes, tokens, settings), never
decoded and encoded again, so the target holds exactly what the source held,
rows an older leader wrote included. The source is read in one snapshot; the
target must hold no farm yet, and receives the rows in one transaction (all
or nothing); the counts are then checked on a new connection and the copy
loaded as a leader would load it. Stop the leader first: what it commits
during the copy would not be copied. The source is then marked as moved
(``MOVED_TO``), and a leader refuses to start on it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from server.errors import FarmMoved, StoreError
from server.store import open_store
from server.store_url import parse_store_url, redacted

# The setting a migrated farm's old store keeps: where the farm went.
MOVED_TO = "moved_to"


@dataclass(frozen=True, slots=True)
class Migrated:
    """What ``migrate`` copied: rows per table, and where from and to (without passwords)."""

    source: str
    target: str
    counts: dict[str, int]


def migrate(source_url: str, target_url: str) -> Migrated:
    """Copy the farm at ``source_url`` into the empty store at ``target_url``; StoreError if not."""
    source_kind, source_where = parse_store_url(source_url)
    target_kind, target_where = parse_store_url(target_url)
    if (source_kind, source_where) == (target_kind, target_where):
        raise StoreError("--from and --to name the same store")
    if source_kind == "sqlite" and not Path(source_where).is_file():
        raise StoreError(f"no farm at {source_where}: --from names a leader's farm.db")
    source = open_store(source_url)
    try:
        check_not_moved(source.setting(MOVED_TO), source.where)
        running = source.leaders_on_it()
        if running:
            raise StoreError(
                f"{running} leader(s) run on {source.where}: stop every leader of the farm "
                "before farm migrate (what they commit meanwhile would not be copied)"
            )
        rows = source.export_rows()
    finally:
        source.close()
    target = open_store(target_url)
    try:
        target.import_rows(rows)
    finally:
        target.close()
    expected = rows.counts()
    check = open_store(target_url)
    try:
        copied = check.export_rows().counts()
        jobs, _ = check.load()
    finally:
        check.close()
    if copied != expected or len(jobs) != expected["jobs"]:
        raise StoreError(
            f"the copy in {redacted(target_url)} does not match its source: {copied} "
            f"rows ({len(jobs)} jobs load) where {expected} were copied"
        )
    # The old copy must never run again beside the new one (a service manager restarting
    # its leader would make two farms of one sync root): its leader now refuses it.
    source = open_store(source_url)
    try:
        source.set_setting(MOVED_TO, redacted(target_url))
    finally:
        source.close()
    return Migrated(redacted(source_url), redacted(target_url), copied)


def check_not_moved(moved_to: str | None, where: str) -> None:
    """FarmMoved in one line when the farm at ``where`` was moved to another store."""
    if moved_to:
        raise FarmMoved(
            f"the farm in {where} was moved to {moved_to} by farm migrate: start the "
            f"leader with --store {moved_to} (this copy is kept only as a backup)"
        )
