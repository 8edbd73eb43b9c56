"""Folders reached one step at a time, never through a symlink; a render user's taken back.

The agent writes into folders its renderers can write too: the sync root (a
job's output folder, the per-attempt folder inside it when staging is off)
and each attempt's staging folder. A path checked first and used after
(``os.path.realpath``, then ``open``) leaves a moment in which a renderer can
swap a folder on the way for a symlink: run as root with renderers as
another user (``agent.render_user``), the agent then wrote files of a job's
choosing into ``/etc/cron.d`` (break round 26). So what the agent writes
there it reaches through descriptors: each folder opened in the one before
it with ``O_NOFOLLOW``, every file made, renamed or removed in an open
folder. A symlink on the way is refused, whatever it points to.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Sequence
from pathlib import Path

from agent.errors import OutputRefused, PathEscapeError

_FOLDER = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
# A render user's folders this deep are not taken back (nor delivered): no frame needs it.
MOST_LEVELS = 64
# What the render user may not keep once a file or folder is the agent's again: the
# set-id bits (its program would run as root), and writing by group or others.
_DROPPED_MODE = stat.S_ISUID | stat.S_ISGID | stat.S_ISVTX | stat.S_IWGRP | stat.S_IWOTH


def open_folder(base: Path, parts: Sequence[str], *, make: bool = False, what: str = "") -> int:
    """A descriptor of ``base/parts...``, each step opened without following a symlink.

    ``make``: missing folders are made. PathEscapeError when a step is a symlink
    or not a folder; FileNotFoundError when one is missing and not to be made.
    ``base`` itself is the operator's (the sync root, the staging folder): followed.
    """
    fd = os.open(base, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for part in parts:
            following = _step(fd, part, make, what or "/".join(parts))
            os.close(fd)
            fd = following
    except BaseException:
        os.close(fd)
        raise
    return fd


def _step(folder: int, part: str, make: bool, what: str) -> int:
    for _ in range(2):  # made between a look and a mkdir by someone else: looked at again
        try:
            return os.open(part, _FOLDER, dir_fd=folder)
        except FileNotFoundError:
            if not make:
                raise
            with contextlib.suppress(FileExistsError):
                os.mkdir(part, dir_fd=folder)
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                raise PathEscapeError(
                    f"{what}: {part} on its way is a symlink or not a folder; refused"
                ) from None
            raise
    return os.open(part, _FOLDER, dir_fd=folder)


def make_folder(base: Path, parts: Sequence[str], owner: tuple[int, int] | None = None) -> None:
    """Make ``base/parts...`` (and what is missing on the way), never through a symlink;
    ``owner``: the last folder given to that (uid, gid), through its descriptor."""
    fd = open_folder(base, parts, make=True)
    try:
        if owner is not None:
            os.fchown(fd, *owner)
    finally:
        os.close(fd)


def take_back(base: Path, parts: Sequence[str], render_uid: int) -> None:
    """Make the folder a render user wrote in, and what it wrote there, the agent's again.

    Once its renderer is gone, nothing a chunk left may change before it is
    delivered, or while it is kept for a retry sync (days, maybe), by the
    renderers of other jobs running as the same user. Each folder becomes the
    agent's before what is in it is looked at, so no entry in it can be
    swapped meanwhile; each regular file of the user's becomes the agent's
    (through its descriptor: the file looked at is the file changed), without
    its set-id bits. A regular file of anyone else's is removed: a renderer
    has no way to make one here but a hard link to another's file. Symlinks
    and other odd entries stay as they are: nothing follows or reads them
    (a delivery refuses them). OutputRefused for a tree deeper than
    ``MOST_LEVELS``.
    """
    try:
        top = open_folder(base, parts)
    except FileNotFoundError:
        return
    folders = [(top, 0)]
    try:
        while folders:
            folder, depth = folders.pop()
            try:
                _claim(folder)
                for name in os.listdir(folder):
                    opened = _take_entry(folder, name, render_uid)
                    if opened is not None:
                        if depth + 1 > MOST_LEVELS:
                            os.close(opened)
                            raise OutputRefused(
                                f"its folder is over {MOST_LEVELS} levels deep; refused"
                            )
                        folders.append((opened, depth + 1))
            finally:
                os.close(folder)
    finally:
        for folder, _ in folders:
            os.close(folder)


def _claim(fd: int) -> None:
    info = os.fstat(fd)
    os.fchown(fd, os.geteuid(), os.getegid())
    os.fchmod(fd, stat.S_IMODE(info.st_mode) & ~_DROPPED_MODE)


def _take_entry(folder: int, name: str, render_uid: int) -> int | None:
    """Take one entry back; a folder's descriptor, to be looked into."""
    try:
        kind = os.stat(name, dir_fd=folder, follow_symlinks=False).st_mode
    except FileNotFoundError:
        return None
    if stat.S_ISDIR(kind):
        return os.open(name, _FOLDER, dir_fd=folder)
    if not stat.S_ISREG(kind):
        return None
    fd = os.open(name, _FILE, dir_fd=folder)
    try:
        info = os.fstat(fd)
        if info.st_uid == render_uid and stat.S_ISREG(info.st_mode):
            _claim(fd)
            return None
    finally:
        os.close(fd)
    os.unlink(name, dir_fd=folder)
    return None
