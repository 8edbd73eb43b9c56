"""Room on the leader's disk: changes are refused before the disk is full, not after.

A commit that fails for lack of room is undone by reloading the whole farm
from the store (``Leader._rebuild_from_store``): 0.2-0.4 s of the event loop
with 1.25 million frames in it. On a full disk every report and request
failed that way, so the leader spent its time reloading; and an operator
could not delete jobs to make room, since a delete needs room in the WAL too.

So while the free space (the file system's, plus the room SQLite already
holds in ``farm.db``'s free pages for all but ``ON_DISK_SHARE`` of it: a
commit first grows the WAL on the file system) is below a reserve, the
leader refuses every change but deleting jobs, at once and with nothing to
undo, and the reserve is left to the deletes and to the checkpoints
(Elasticsearch's "flood stage" does the same). Its own tick waits too: lost
nodes, ended blocks and due retries are judged once there is room. Reads go
on as before; renders go on too (leases are renewed without a commit), and
their reports wait in the agents' outboxes until there is room.

The reserve is ``disk_reserve_mb`` (leader.toml), or ``RESERVE_SHARE`` of the
file system on a small one. SQLite only: a PostgreSQL server keeps its own disk.

Another process may take the reserve too: a render writing into the data
folder's disk fills it to its last byte, and a hello or a delete then has no
page to write its WAL to (an idle leader's WAL was emptied by the last
checkpoint, a busy one's is full of what waits for a checkpoint). It failed
its commit and was undone by the reload; the node could not come back and
nothing could be deleted. So a file of its own, the ballast, holds room of
half the reserve's size beyond it (``BALLAST_NAME`` beside ``farm.db``;
CockroachDB's emergency ballast does the same). It is deleted the moment the disk is found
short, before the change that found it, and made again (on a thread) once
there is room for it beyond the reserve; it never counts as room itself. A
commit that still finds the disk full (another process took the ballast's
room as well) fails as before and is undone by the reload.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import stat
import threading
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
# The share of the reserve that must be free on the file system itself, whatever farm.db
# holds free (see ``DiskRoom._short``).
ON_DISK_SHARE = 0.5
# The ballast: the file, beside farm.db, and its size as a share of the reserve (held
# beyond it: a hello needs a few pages, a delete of a big job megabytes).
BALLAST_NAME = "disk-reserve.ballast"
BALLAST_SHARE = 0.5
# What a refused change is told (one line; ``farm`` prints it as it is).
REFUSAL = "the leader's disk is full: nothing was changed (deleting jobs still works)"


class DiskRoom:
    """Whether ``folder``'s file system has room for changes beyond the reserve."""

    def __init__(
        self,
        folder: Path,
        reserve_bytes: int,
        free_in_store: Callable[[], int],
        ballast: bool = False,
    ) -> None:
        self.folder = folder
        self.reserve_bytes = reserve_bytes
        self.free_in_store = free_in_store
        self.short = False  # below the reserve at the last look
        self.ballast = Ballast(folder / BALLAST_NAME) if ballast else None
        # Short was assumed at the start (no ballast found): said only if it is so.
        self._assumed = False

    def start(self) -> None:
        """Look at the disk once; make the ballast (on a thread) if there is room for it.

        Without a ballast (a first start, or the last run ended short, or was
        killed while making one) the disk counts as short until there is room
        as when it comes back from short: room beyond the reserve for the
        ballast too. Without a reserve, a ballast an earlier leader left goes.
        """
        if self.ballast is None:
            return
        try:
            disk = os.statvfs(self.folder)
        except OSError:
            return
        size = self._ballast_size(self._reserve(disk))
        if self.reserve_bytes <= 0 or size <= 0:
            self.ballast.drop()  # its room is the disk's again
            return
        self.ballast.drop_leftover()
        if self.ballast.held() < size:
            self.short = self._assumed = True
        self.refusal()

    def _reserve(self, disk: os.statvfs_result) -> int:
        return _reserve(disk, self.reserve_bytes)

    def _ballast_size(self, reserve: int) -> int:
        if self.ballast is None:
            return 0
        return int(reserve * BALLAST_SHARE) // 4096 * 4096  # whole pages

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
        reserve = self._reserve(disk)
        ballast = self._ballast_size(reserve)
        short = self._short(free, reserve, ballast)
        assumed, self._assumed = self._assumed, False
        if short != self.short:
            self.short = short
            if self.ballast is not None:
                # Before the change that looked: it may need the room (a hello, a delete).
                if short:
                    self.ballast.drop()
                else:
                    self.ballast.make(ballast)
            if short:
                self._say_short(free, reserve, ballast)
            elif not assumed:
                log.warning("room again on the disk of %s (%s free)", self.folder, _size(free))
        elif short:
            if assumed:
                self._say_short(free, reserve, ballast)
            if self.ballast is not None:
                self.ballast.drop()  # again: the last drop may have failed
        return REFUSAL if short else None

    def _short(self, free: int, reserve: int, ballast: int) -> bool:
        """Whether the disk is short: ``free`` bytes on the file system, ``ballast`` the
        ballast's size (not counted: held beyond the reserve, made again with the room)."""
        # A commit first grows the WAL, on the file system itself: farm.db's free pages
        # take its pages only once a checkpoint copies them over. So part of the reserve
        # must be free on the file system whatever farm.db holds free (counting those
        # pages alone, a disk at its last byte passed for roomy, and every commit failed).
        if self.short:
            # Room back only with a margin, and room for the ballast beyond it: making it
            # must not make the disk short again. (On a disk of a few megabytes the WAL
            # a busy farm fills between two checkpoints is larger than the margin, and
            # the farm goes short for a moment every few seconds; asking for that room
            # too left such a disk short for good, as a break round found.)
            on_disk = int(reserve * ON_DISK_SHARE * LEAVE_SHORT_AT) + ballast
            needed = int(reserve * LEAVE_SHORT_AT) + ballast
        else:
            on_disk, needed = int(reserve * ON_DISK_SHARE), reserve
        if free < on_disk:
            return True
        if free >= needed:
            return False
        try:
            free += self.free_in_store()
        except Exception:  # noqa: BLE001 - a count we only add; the commit will say
            log.debug("cannot count the store's free pages", exc_info=True)
        return free < needed

    def _say_short(self, free: int, reserve: int, ballast: int) -> None:
        log.error(
            "the disk of %s is nearly full (%s free, %s kept for deletes): "
            "refusing every change but deleting jobs until about %s are free",
            self.folder,
            _size(free),
            _size(reserve),
            _size(int(reserve * LEAVE_SHORT_AT) + ballast),
        )


def give_back_if_full(folder: Path, reserve_bytes: int) -> None:
    """Before the store is opened: drop the ballast if the disk is nearly full.

    SQLite makes its ``-shm`` and ``-wal`` files as it opens the database; on a
    disk another process filled to its last byte after a clean stop, the leader
    could not even start ("disk I/O error").
    """
    if reserve_bytes <= 0:
        return
    try:
        disk = os.statvfs(folder)
    except OSError:
        return
    if disk.f_bavail * disk.f_frsize < int(_reserve(disk, reserve_bytes) * ON_DISK_SHARE):
        Ballast(folder / BALLAST_NAME).drop()


def _reserve(disk: os.statvfs_result, reserve_bytes: int) -> int:
    """The reserve on ``disk``: ``reserve_bytes``, or ``RESERVE_SHARE`` of a small disk."""
    return min(reserve_bytes, int(disk.f_blocks * disk.f_frsize * RESERVE_SHARE))


def _size(count: int) -> str:
    return f"{count / 1024**2:.1f} MB" if count >= 1024**2 else f"{count / 1024:.0f} KB"


class Ballast:
    """A file that holds room for the reserve: dropped at once, made again on a thread.

    ``drop`` runs on the event loop (an unlink); ``make`` hands the writing to a
    thread, which allocates the file under another name and puts it in place
    only if it is still wanted, so a drop while it writes wins. Deleted by
    hand, it is made again when room next comes back, or at the next start
    (a look for it at every group commit would cost each a ``stat``).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._making = path.with_name(path.name + ".new")
        self._lock = threading.Lock()
        self._wanted = 0  # bytes; 0: not wanted
        self._thread: threading.Thread | None = None
        self._drop_failed = False  # and said so

    def held(self) -> int:
        """Bytes the ballast holds on the disk now (0 without one)."""
        try:
            info = os.stat(self.path, follow_symlinks=False)
        except OSError:
            return 0
        return info.st_blocks * 512 if stat.S_ISREG(info.st_mode) else 0

    def drop(self) -> None:
        """Give its room back to the disk now (a half-made one's too). Never raises."""
        with self._lock:
            self._wanted = 0
            failed = False
            for path in (self.path, self._making):
                try:
                    path.unlink()
                except FileNotFoundError:
                    pass
                except OSError as exc:
                    failed = True
                    if not self._drop_failed:  # once: it is tried again at every look
                        log.error("cannot delete %s to make room: %s", path, exc.strerror or exc)
            self._drop_failed = failed

    def drop_leftover(self) -> None:
        """Give back what a leader killed while making the ballast left half made."""
        with self._lock:
            if self._thread is None:
                self._discard_making()

    def make(self, size: int) -> None:
        """Have a ballast of ``size`` bytes (on a thread), unless dropped meanwhile."""
        with self._lock:
            self._wanted = size
            if size <= 0 or self._thread is not None:
                return
            self._thread = threading.Thread(target=self._make, name="farmtui-ballast", daemon=True)
            self._thread.start()

    def _make(self) -> None:
        while True:
            with self._lock:
                size = self._wanted
                if size <= 0 or self._has(size):
                    self._thread = None
                    return
            try:
                _allocate(self._making, size)
            except OSError as exc:
                with self._lock:
                    self._discard_making()
                    self._thread = None
                # No room for it (the next time room comes back it is tried again), or a
                # file system that cannot hold one: the reserve still refuses changes.
                log.warning("no ballast in %s: %s", self.path.parent, exc.strerror or exc)
                return
            with self._lock:
                if self._wanted != size:
                    self._discard_making()
                    continue  # dropped (or resized) while it was written: look again
                try:
                    os.replace(self._making, self.path)
                except FileNotFoundError:
                    continue  # dropped and wanted again meanwhile: made again
                except OSError as exc:  # something else holds its name (a folder)
                    self._discard_making()
                    log.warning("no ballast in %s: %s", self.path.parent, exc.strerror or exc)
                self._thread = None
                return

    def _discard_making(self) -> None:
        with contextlib.suppress(OSError):
            self._making.unlink()

    def _has(self, size: int) -> bool:
        try:
            info = os.stat(self.path, follow_symlinks=False)
        except OSError:
            return False
        return stat.S_ISREG(info.st_mode) and info.st_size == size and info.st_blocks * 512 >= size


def _allocate(path: Path, size: int) -> None:
    """A new file of ``size`` bytes that really holds them on the disk (not a sparse one).

    Made afresh, never through what is there (a file left by a leader killed while
    making it, or a symlink planted in its place).
    """
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        try:
            os.posix_fallocate(fd, 0, size)
        except OSError as exc:
            if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
                raise
            block = b"\0" * (1 << 20)
            written = 0
            while written < size:
                written += os.write(fd, block[: size - written])
    finally:
        os.close(fd)
