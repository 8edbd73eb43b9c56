"""Log files under the sync root, opened without ever following a symlink.

Renderers run users' commands on nodes that may share the sync root, so
anything below it may have been planted: a symlink where another job's
chunk log will go, a FIFO, a hard link to a file elsewhere. Every folder on
the way down from the root is opened relative to its parent (``dir_fd``) with
``O_NOFOLLOW | O_DIRECTORY``, and the file itself with ``O_NOFOLLOW``, so a
write lands in a regular file inside the leader's own folders or nowhere.

Writing takes back a name the leader owns (``jobs/<job>``, a chunk log, a
node log) when something else sits there: a symlink, FIFO or hard link is
unlinked (never what it points at) and the file made anew with ``O_EXCL``.
The top folders (``jobs``, ``nodes``) are never replaced, only refused: an
admin may have set them up. Reading never follows a symlink either, and
treats anything but a regular file as absent (a FIFO would block the reader).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
import stat
from collections.abc import Iterator, Sequence
from pathlib import Path

log = logging.getLogger("farmtui.leader.logfiles")

_FOLDER = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# O_NONBLOCK: opening a FIFO must fail (ENXIO) or return at once, never wait for a peer.
_APPEND = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_READ = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
# Folders below these many levels (jobs/<job>) are the leader's to take back.
_KEPT_LEVELS = 1


class UnsafeLogPath(OSError):
    """Something that is not the leader's sits where a log goes, and could not be taken back."""


def parts_of(relative: str) -> list[str]:
    """``jobs/abc/events.log`` as its names; ValueError for anything but plain names."""
    parts = relative.split("/")
    for part in parts:
        if part in ("", ".", "..") or "\x00" in part or "\\" in part:
            raise ValueError(f"log path {relative!r} is not a plain relative path")
    return parts


@contextlib.contextmanager
def _folder(root: Path, names: Sequence[str], *, create: bool) -> Iterator[int]:
    """An fd of ``root/names...``, each level opened without following symlinks."""
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for level, name in enumerate(names):
            where = "/".join(names[: level + 1])
            child = _subfolder(fd, name, where, create=create, reclaim=level >= _KEPT_LEVELS)
            os.close(fd)
            fd = child
        yield fd
    finally:
        os.close(fd)


def _subfolder(parent: int, name: str, where: str, *, create: bool, reclaim: bool) -> int:
    for _ in range(3):
        try:
            return os.open(name, _FOLDER, dir_fd=parent)
        except FileNotFoundError:
            if not create:
                raise
            with contextlib.suppress(FileExistsError):
                os.mkdir(name, 0o755, dir_fd=parent)
        except OSError as exc:
            # ELOOP: a symlink; ENOTDIR: a file. Neither is written through.
            if exc.errno not in (errno.ELOOP, errno.ENOTDIR) or not (create and reclaim):
                raise UnsafeLogPath(exc.errno, f"{where} is not a folder") from None
            _take_back(parent, name, where)
    raise UnsafeLogPath(errno.ELOOP, f"{where} keeps being replaced")


def _take_back(parent: int, name: str, where: str) -> None:
    """Unlink a planted entry (the link itself, never its target)."""
    os.unlink(name, dir_fd=parent)
    log.warning("removed %s from the sync root: it was not the leader's own log", where)


def open_append(root: Path, relative: str) -> int:
    """An fd appending to the regular file ``root/relative``, made if missing."""
    *folders, name = parts_of(relative)
    with _folder(root, folders, create=True) as parent:
        return _open_in(parent, name, relative)


class Folders:
    """The folders logs go to, kept open: a new chunk log costs one ``stat``, not a walk.

    A chunk's log is a new file in ``jobs/<job>/`` for every attempt; walking
    down from the root for each (an ``open`` and a ``close`` per level, none
    following a symlink) was most of what writing it cost. A kept folder is
    used only while the name it was opened under still leads to it (same
    device and inode, checked with ``stat`` without following a symlink from
    its parent); if a renderer moved it or put a symlink there, it is opened
    afresh the safe way, taking the name back. Used by one thread only.
    """

    MAX_KEPT = 64

    def __init__(self, root: Path) -> None:
        self.root = root
        # folder path -> (fd, device, inode), least recently used first.
        self._kept: dict[tuple[str, ...], tuple[int, int, int]] = {}

    def open_append(self, relative: str) -> int:
        """As ``open_append(root, relative)``."""
        *folders, name = parts_of(relative)
        return _open_in(self._folder(tuple(folders)), name, relative)

    def _folder(self, names: tuple[str, ...]) -> int:
        """The kept fd of ``root/names...``, checked or opened afresh level by level."""
        if not names:
            kept = self._kept.get(names)
            if kept is None:
                fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
                kept = self._keep(names, fd)
            return kept[0]
        parent = self._folder(names[:-1])
        kept = self._kept.pop(names, None)
        if kept is not None:
            fd, device, inode = kept
            if self._still_there(parent, names[-1], device, inode):
                self._kept[names] = kept  # most recently used last
                return fd
            os.close(fd)
        where = "/".join(names)
        fd = _subfolder(parent, names[-1], where, create=True, reclaim=len(names) > _KEPT_LEVELS)
        return self._keep(names, fd)[0]

    def _keep(self, names: tuple[str, ...], fd: int) -> tuple[int, int, int]:
        info = os.fstat(fd)
        kept = self._kept[names] = (fd, info.st_dev, info.st_ino)
        while len(self._kept) > self.MAX_KEPT:
            oldest = next(iter(self._kept))
            if not oldest:  # the root stays
                self._kept[oldest] = self._kept.pop(oldest)
                continue
            os.close(self._kept.pop(oldest)[0])
        return kept

    @staticmethod
    def _still_there(parent: int, name: str, device: int, inode: int) -> bool:
        try:
            info = os.stat(name, dir_fd=parent, follow_symlinks=False)
        except OSError:
            return False
        return stat.S_ISDIR(info.st_mode) and (info.st_dev, info.st_ino) == (device, inode)

    def forget(self, prefix: tuple[str, ...]) -> None:
        """Close the kept folders at or under ``prefix`` (a job's folder is deleted)."""
        for names in [n for n in self._kept if n[: len(prefix)] == prefix]:
            os.close(self._kept.pop(names)[0])

    def close(self) -> None:
        for fd, _, _ in self._kept.values():
            os.close(fd)
        self._kept.clear()


def _open_in(parent: int, name: str, relative: str) -> int:
    """An fd appending to the regular file ``name`` in the folder ``parent``, made if missing."""
    flags = _APPEND
    for _ in range(3):
        try:
            fd = os.open(name, flags, 0o644, dir_fd=parent)
        except FileExistsError:  # O_EXCL after a take-back: planted again
            continue
        except OSError as exc:
            # ELOOP: a symlink; ENXIO: a FIFO or socket nobody reads.
            if exc.errno not in (errno.ELOOP, errno.ENXIO):
                raise
            _take_back(parent, name, relative)
            flags = _APPEND | os.O_EXCL
            continue
        info = os.fstat(fd)
        if stat.S_ISREG(info.st_mode) and info.st_nlink == 1:
            return fd
        os.close(fd)  # a FIFO someone reads, or a hard link to a file elsewhere
        _take_back(parent, name, relative)
        flags = _APPEND | os.O_EXCL
    raise UnsafeLogPath(errno.ELOOP, f"{relative} keeps being replaced")


def read_tail(root: Path, relative: str, max_bytes: int) -> tuple[bytes, bool] | None:
    """The last ``max_bytes`` of a log and whether it was cut; None if there is none.

    A symlink or anything but a regular file on the way counts as no log.
    """
    *folders, name = parts_of(relative)
    try:
        with _folder(root, folders, create=False) as parent:
            fd = os.open(name, _READ, dir_fd=parent)
    except (FileNotFoundError, NotADirectoryError, UnsafeLogPath):
        return None
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENXIO):
            return None
        raise
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1:
            return None  # a FIFO, or a hard link planted to a file elsewhere
        size = handle.seek(0, os.SEEK_END)
        start = max(0, size - max_bytes)
        handle.seek(start)
        return handle.read(max_bytes), start > 0


def remove_folder(root: Path, relative: str) -> None:
    """Delete ``root/relative`` and what is in it, never following a symlink."""
    *folders, name = parts_of(relative)
    try:
        with _folder(root, folders, create=False) as parent:
            info = os.stat(name, dir_fd=parent, follow_symlinks=False)
            if stat.S_ISDIR(info.st_mode):
                shutil.rmtree(name, dir_fd=parent)
            else:
                os.unlink(name, dir_fd=parent)
    except FileNotFoundError:
        pass
    except OSError as exc:
        log.error("cannot delete %s: %s", relative, exc.strerror or type(exc).__name__)
