"""Room on the leader's disk: changes are refused before the disk is full, not after.

A commit that fails for lack of room is undone by reloading the whole farm
from the store (``Leader._rebuild_from_store``): 0.2-0.4 s of the event loop
with 1.25 million frames in it. On a full disk every report and request
failed that way, so the leader spent its time reloading; and an operator
could not delete jobs to make room, since a delete needs room in the WAL too.

So while the free space (the file system's, plus the room SQLite already
holds: ``farm.db``'s free pages and the WAL's file, both reused) is below a
reserve, the leader refuses every change but deleting jobs, at once and with
nothing to undo, and the reserve is left to the deletes and to the checkpoints
(Elasticsearch's "flood stage" does the same). Its own tick waits too: lost
nodes, ended blocks and due retries are judged once there is room. Reads go
on as before; renders go on too (leases are renewed without a commit), and
their reports wait in the agents' outboxes until there is room.

The reserve is ``disk_reserve_mb`` (leader.toml), or ``RESERVE_SHARE`` of the
file system on a small one. A commit that still finds the disk full (another
process filled it faster than the reserve) fails as before and is undone by
the reload. SQLite only: a PostgreSQL server keeps its own disk.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger("farmtui.leader.store")

# The reserve on a file system smaller than 20 x disk_reserve_mb: a share of it.
RESERVE_SHARE = 0.05
# Once short, room is back only at this many times the reserve. At the reserve itself
# the farm flapped about once a second: the agents' hellos and resent reports took it
# back under, and the WAL's checkpoint gave it back (a break round: 87 ERROR lines in
# 20 s and no frame done 8 KB above the reserve).
LEAVE_SHORT_AT = 1.5
# What a refused change is told (one line; ``farm`` prints it as it is).
REFUSAL = "the leader's disk is full: nothing was changed (deleting jobs still works)"


class DiskRoom:
    """Whether ``folder``'s file system has room for changes beyond the reserve."""

    def __init__(
        self,
        folder: Path,
        reserve_bytes: int,
        free_in_store: Callable[[], int],
        on_change: Callable[[bool], None] | None = None,
    ) -> None:
        self.folder = folder
        self.reserve_bytes = reserve_bytes
        self.free_in_store = free_in_store
        self.on_change = on_change  # called with ``short`` whenever it changes
        self.short = False  # below the reserve at the last look

    def refusal(self) -> str | None:
        """None when there is room; else the one line a refused change is told.

        A ``statvfs`` (a few microseconds), once a group commit; the room the store
        holds is counted only when the file system alone is short.
        """
        if self.reserve_bytes <= 0:
            return None
        try:
            disk = os.statvfs(self.folder)
        except OSError:
            return None  # cannot tell: the commit will say
        free = disk.f_bavail * disk.f_frsize
        reserve = min(self.reserve_bytes, int(disk.f_blocks * disk.f_frsize * RESERVE_SHARE))
        needed = int(reserve * LEAVE_SHORT_AT) if self.short else reserve
        if free < needed:
            try:
                free += self.free_in_store()
            except Exception:  # noqa: BLE001 - a count we only add; the commit will say
                log.debug("cannot count the store's free pages", exc_info=True)
        short = free < needed
        if short != self.short:
            self.short = short
            if self.on_change is not None:
                self.on_change(short)
            if short:
                log.error(
                    "the disk of %s is nearly full (%s free, %s kept for deletes): "
                    "refusing every change but deleting jobs until there is room",
                    self.folder,
                    _size(free),
                    _size(reserve),
                )
            else:
                log.warning("room again on the disk of %s (%s free)", self.folder, _size(free))
        return REFUSAL if short else None


def _size(count: int) -> str:
    return f"{count / 1024**2:.1f} MB" if count >= 1024**2 else f"{count / 1024:.0f} KB"
