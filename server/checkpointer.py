"""Copies the store's WAL into ``farm.db`` from a thread, so the event loop never waits for it.

SQLite checkpoints on the committing connection once the WAL passes 1,000
pages: that one commit then copies the whole WAL into the database file and
syncs it, tens of milliseconds on the event loop (34 ms measured here against
a median commit of 45 µs). The leader's connection turns that off
(``wal_autocheckpoint=0``) and this thread, on a connection of its own,
checkpoints ``PASSIVE`` whenever the WAL has grown: that never blocks the
writer, and SQLite releases the GIL while it copies.

Once a checkpoint has caught up, the next commit starts the WAL again from
its beginning, reusing the file. Under a steady stream of commits a
``PASSIVE`` checkpoint never quite catches up (new commits land while it
copies), and the WAL grew by 5 MB a second in the scale benchmark; so once it
passes ``RESTART_BYTES`` the thread follows its ``PASSIVE`` with a
``RESTART``, which lets the next commit start the WAL again. A ``RESTART``
holds every commit back while it copies what the ``PASSIVE`` left and syncs
the file (a commit on the loop waits on SQLite's busy timeout: the loop
stalls), so it runs only when the ``PASSIVE`` left at most
``RESTART_FRAMES_LEFT`` pages: with 300 agents it had run with far more left
and held the loop for over a second. Past ``FORCE_RESTART_BYTES`` the disk
comes first and it runs whatever is left.

A busy leader's WAL so keeps the size it grew to; its space is given back
(``TRUNCATE``) once no commit has come for a whole round. The commit that
starts the WAL again used to cut the file back itself (``journal_size_limit``):
freeing 20-45 MB of file took that commit 10-49 ms, on the event loop, every
two or three seconds with 300 agents.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
from pathlib import Path

log = logging.getLogger("farmtui.leader.store")

# How often the thread looks at the WAL (seconds).
INTERVAL = 0.5
# A WAL past this size is started again (``RESTART``) after its checkpoint.
RESTART_BYTES = 16 * 1024 * 1024
# A RESTART only when the PASSIVE before it left at most this many pages (4 KiB each).
RESTART_FRAMES_LEFT = 256
# ... unless the WAL is past this size: then whatever is left.
FORCE_RESTART_BYTES = 256 * 1024 * 1024


class Checkpointer:
    """A daemon thread checkpointing one database's WAL until ``close``."""

    def __init__(self, path: Path, interval: float = INTERVAL) -> None:
        self.path = path
        self.wal = path.with_name(path.name + "-wal")
        self.interval = interval
        self.restarts = 0
        self._stop = threading.Event()
        self._last_error = ""
        self._thread = threading.Thread(target=self._run, name="farmtui-checkpoint", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Ask the thread to end (it closes its connection), without waiting."""
        self._stop.set()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        try:
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            log.error("cannot open %s to checkpoint it: %s", self.path, exc)
            return
        try:
            # Never wait for a lock: the next round tries again.
            db.execute("PRAGMA busy_timeout=0")
            seen = None
            while not self._stop.wait(self.interval):
                try:
                    # fetchall: a statement not run to its end keeps a read open,
                    # and the WAL could never start again.
                    ((version,),) = db.execute("PRAGMA data_version").fetchall()
                except sqlite3.Error as exc:
                    self._failed(exc)
                    continue
                # data_version tells of another connection's commits: the WAL's size
                # does not, once a commit has started it again from its beginning.
                if version != seen:
                    seen = version
                    self._checkpoint(db)
                elif self._wal_size() > 0:
                    # Nothing committed for a whole round: a TRUNCATE holds no commit back.
                    self._truncate(db)
        finally:
            db.close()

    def _wal_size(self) -> int:
        try:
            return os.stat(self.wal).st_size
        except OSError:
            return 0

    def _checkpoint(self, db: sqlite3.Connection) -> None:
        try:
            (_, pages, copied) = db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()[0]
            size = self._wal_size()
            if size > FORCE_RESTART_BYTES or (
                size > RESTART_BYTES and pages - copied <= RESTART_FRAMES_LEFT
            ):
                # Without waiting: a RESTART that waited for a reader held every
                # commit back meanwhile (the loop stalled 0.2-0.4 s); busy, it
                # tries again next round.
                (busy, _, _) = db.execute("PRAGMA wal_checkpoint(RESTART)").fetchall()[0]
                self.restarts += not busy
        except sqlite3.Error as exc:
            self._failed(exc)
            return
        self._last_error = ""

    def _failed(self, exc: sqlite3.Error) -> None:
        # A full disk or a locked file: the WAL keeps every commit meanwhile.
        if str(exc) != self._last_error:
            log.warning("could not checkpoint %s (will retry): %s", self.path, exc)
            self._last_error = str(exc)

    def _truncate(self, db: sqlite3.Connection) -> None:
        # Busy (a reader or a writer came meanwhile): the WAL is left, and tried next round.
        try:
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        except sqlite3.Error as exc:
            self._failed(exc)
