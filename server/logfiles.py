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
