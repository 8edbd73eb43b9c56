"""The agent's side of ``farmtui.no_follow``; a render user's folders taken back.

The agent writes into folders its renderers can write too: the sync root (a
job's output folder, the per-attempt folder inside it when staging is off)
and each attempt's staging folder; it reaches them a step at a time without
following a symlink (``farmtui.no_follow``). Run as root with renderers as
another user (``agent.render_user``), it also takes an attempt's folders
back from that user once its renderer is gone (``take_back``).
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Sequence
from pathlib import Path

from agent.errors import OutputRefused, PathEscapeError
from farmtui import no_follow as folders
from farmtui.no_follow import FOLDER_FLAGS

_FILE = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
# A render user's folders this deep are not taken back (nor delivered): no frame needs it.
MOST_LEVELS = 64
# What the render user may not keep once a file or folder is the agent's again: the
# set-id bits (its program would run as root), and writing by group or others.
_DROPPED_MODE = stat.S_ISUID | stat.S_ISGID | stat.S_ISVTX | stat.S_IWGRP | stat.S_IWOTH


def open_folder(base: Path, parts: Sequence[str], *, make: bool = False, what: str = "") -> int:
    """``farmtui.no_follow.open_folder``; PathEscapeError for a symlink on the way (the
    chunk fails, its output not kept: it would be refused again)."""
    try:
        return folders.open_folder(base, parts, make=make, what=what)
    except folders.NotAFolder as exc:
        raise PathEscapeError(str(exc)) from None


def make_folder(base: Path, parts: Sequence[str], owner: tuple[int, int] | None = None) -> None:
    """``farmtui.no_follow.make_folder``; PathEscapeError for a symlink on the way."""
    try:
        folders.make_folder(base, parts, owner)
    except folders.NotAFolder as exc:
        raise PathEscapeError(str(exc)) from None


def take_back(base: Path, parts: Sequence[str], render_uid: int) -> None:
    """Make the folder a render user wrote in, and what it wrote there, the agent's again.

    Once its renderer is gone, nothing a chunk left may change before it is
    delivered, or while it is kept for a retry sync (days, maybe), by the
    renderers of other jobs running as the same user. Each folder becomes the
    agent's before what is in it is looked at, so no entry in it can be
    swapped meanwhile; each regular file of the user's becomes the agent's
    (through its descriptor: the file looked at is the file changed), without
    its set-id bits. A file with other names (hard links: one may be outside,
    where the user put it, even while it is taken back) goes back to the user
    and is replaced here by a copy of its own. A regular file of anyone else's
    is removed: a renderer has no way to make one here but a hard link to
    another's file. Symlinks and other odd entries stay as they are: nothing
    follows or reads them (a delivery refuses them). Folders are walked a
    branch at a time: a wide tree holds no more descriptors than a deep one.
    OutputRefused for a tree deeper than ``MOST_LEVELS``.
    """
    try:
        top = open_folder(base, parts)
    except FileNotFoundError:
        return
    # The open folders from the top down to the one looked into, each with the names of
    # its folders still to look into.
    branch: list[tuple[int, list[str]]] = []
    try:
        _claim(top)
        branch.append((top, _take_entries(top, render_uid)))
        while branch:
            folder, waiting = branch[-1]
            if not waiting:
                os.close(folder)
                branch.pop()
                continue
            inner = os.open(waiting.pop(), FOLDER_FLAGS, dir_fd=folder)
            if len(branch) > MOST_LEVELS:
                os.close(inner)
                raise OutputRefused(f"its folder is over {MOST_LEVELS} levels deep; refused")
            try:
                _claim(inner)
                branch.append((inner, _take_entries(inner, render_uid)))
            except BaseException:
                os.close(inner)
                raise
    finally:
        for folder, _ in branch:
            os.close(folder)


def _claim(fd: int) -> None:
    info = os.fstat(fd)
    os.fchown(fd, os.geteuid(), os.getegid())
    os.fchmod(fd, stat.S_IMODE(info.st_mode) & ~_DROPPED_MODE)


def _take_entries(folder: int, render_uid: int) -> list[str]:
    """Take back the files in ``folder`` (the agent's already); the names of its folders."""
    folders = []
    for name in os.listdir(folder):
        try:
            kind = os.stat(name, dir_fd=folder, follow_symlinks=False).st_mode
        except FileNotFoundError:
            continue
        if stat.S_ISDIR(kind):
            folders.append(name)
        elif stat.S_ISREG(kind):
            _take_file(folder, name, render_uid)
    return folders


def _take_file(folder: int, name: str, render_uid: int) -> None:
    fd = os.open(name, _FILE, dir_fd=folder)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            return
        if info.st_uid != render_uid:
            os.unlink(name, dir_fd=folder)
            return
        if info.st_nlink > 1:
            _detach(folder, name, fd, info)
            return
        _claim(fd)
        # The agent's now, the user can give it no other name (fs.protected_hardlinks).
        # One it gave it between the look and the claim (another of its renderers racing:
        # break round 26d made 2,877 files root's that way) counts now. That name may be
        # anywhere the user chose: the file goes back to the user as it was, and this
        # name gets a copy of its own.
        if os.fstat(fd).st_nlink > 1:
            os.fchown(fd, info.st_uid, info.st_gid)
            os.fchmod(fd, stat.S_IMODE(info.st_mode))
            _detach(folder, name, fd, info)
    finally:
        os.close(fd)


def _detach(folder: int, name: str, fd: int, info: os.stat_result) -> None:
    """Put a copy of its own (the agent's) in place of ``name``, a file with other names."""
    copy_name = f".{name}.farmtui-{os.getpid()}.copy"
    mode = stat.S_IMODE(info.st_mode) & ~_DROPPED_MODE
    os.set_blocking(fd, True)
    copy = os.open(
        copy_name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode, dir_fd=folder
    )
    try:
        while os.sendfile(copy, fd, None, 2**30):
            pass
        os.fchmod(copy, mode)
        os.replace(copy_name, name, src_dir_fd=folder, dst_dir_fd=folder)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(copy_name, dir_fd=folder)
        raise
    finally:
        os.close(copy)
