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
import errno
import os
import secrets
import stat
from collections.abc import Callable, Sequence
from pathlib import Path

from agent.errors import OutputRefused, PathEscapeError
from farmtui import no_follow as folders
from farmtui.no_follow import FOLDER_FLAGS

# Blocking: an entry of a folder taken back cannot turn into a FIFO, and one the user
# holds a lease on is given up to the agent (after /proc/sys/fs/lease-break-time at most).
_FILE = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
# A copy the kernel will not make this way here: the next way is tried.
_NOT_HERE = (errno.EXDEV, errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP)
# The most a copy asks of the kernel in one call (``copy_data``): between two, it may be
# stopped. A fraction of a second on a filer; the kernel's own copy loop is no faster.
COPY_BLOCK = 16 * 1024 * 1024
# A render user's folders this deep are not taken back (nor delivered): no frame needs it.
MOST_LEVELS = 64
# Files of several names (hard links) in one attempt's folder, each held open while it
# is taken back: more are refused rather than copied once per name.
MOST_SHARED = 256
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


def take_back(base: Path, parts: Sequence[str], render_uid: int, *, files: bool = True) -> None:
    """Make the folder a render user wrote in, and what it wrote there, the agent's again.

    Once its renderer is gone, nothing a chunk left may change before it is
    delivered, or while it is kept for a retry sync (days, maybe), by the
    renderers of other jobs running as the same user. Each folder becomes the
    agent's before what is in it is looked at, so no entry in it can be
    swapped meanwhile; each regular file of the user's is replaced by the
    agent's own copy of it (``_TakeBack.take_file``), without its set-id bits.
    A regular file of anyone else's is removed: a renderer has no way to make
    one here but a hard link to another's file. Symlinks and other odd
    entries stay as they are: nothing follows or reads them (a delivery
    refuses them). Folders are walked a branch at a time: a wide tree holds
    no more descriptors than a deep one. OutputRefused for a tree deeper
    than ``MOST_LEVELS``. ``files``: False, the folders only (a folder about
    to be removed: its files are not copied only to be deleted).
    """
    try:
        top = open_folder(base, parts)
    except FileNotFoundError:
        return
    try:
        _TakeBack(top, render_uid, files).run()
    finally:
        os.close(top)


class _TakeBack:
    def __init__(self, top: int, render_uid: int, files: bool) -> None:
        self.top = top
        self.render_uid = render_uid
        self.files = files
        # The copy made of each file of several names (its device and inode): where it
        # is, from the top, and the file itself, held open so that its inode number is not
        # another file's meanwhile (break round 26g). The file's other names here link to
        # that copy: a renderer's 2,000 names for one frame made the agent write it 2,000
        # times (break round 26f).
        self.copies: dict[tuple[int, int], tuple[tuple[str, ...], str, int]] = {}

    def run(self) -> None:
        try:
            self.walk()
        finally:
            for _, _, held in self.copies.values():
                os.close(held)

    def walk(self) -> None:
        # The open folders from the top down to the one looked into: each with where it
        # is and the names of its folders still to look into.
        _claim(self.top)
        branch: list[tuple[int, tuple[str, ...], list[str]]] = []
        branch.append((self.top, (), self.take_entries(self.top, ())))
        try:
            while branch:
                folder, where, waiting = branch[-1]
                if not waiting:
                    if folder != self.top:
                        os.close(folder)
                    branch.pop()
                    continue
                name = waiting.pop()
                inner = os.open(name, FOLDER_FLAGS, dir_fd=folder)
                if len(branch) > MOST_LEVELS:
                    os.close(inner)
                    raise OutputRefused(f"its folder is over {MOST_LEVELS} levels deep; refused")
                try:
                    _claim(inner)
                    inner_where = (*where, name)
                    branch.append((inner, inner_where, self.take_entries(inner, inner_where)))
                except BaseException:
                    os.close(inner)
                    raise
        finally:
            for folder, _, _ in branch:
                if folder != self.top:
                    os.close(folder)

    def take_entries(self, folder: int, where: tuple[str, ...]) -> list[str]:
        """Take back the files in ``folder`` (the agent's already); the names of its folders."""
        folders = []
        for name in os.listdir(folder):
            try:
                kind = os.stat(name, dir_fd=folder, follow_symlinks=False).st_mode
            except FileNotFoundError:
                continue
            if stat.S_ISDIR(kind):
                folders.append(name)
            elif stat.S_ISREG(kind) and self.files:
                self.take_file(folder, where, name)
        return folders

    def take_file(self, folder: int, where: tuple[str, ...], name: str) -> None:
        """Replace a file of the user's with the agent's own copy; remove anyone else's.

        A copy, never the file itself given to the agent: the user may have given
        it another name anywhere it can write (a hard link), even as it is taken
        back (break round 26d: the next chunk of the job, rendering as the same
        user, linked its files elsewhere between a look at their link count and
        their chown, and left files of its content root's there, 2,877 of them;
        a link still under way in the kernel beat even a second look). And a
        descriptor the user opened on it earlier writes into its file, not the copy.
        """
        fd = os.open(name, _FILE, dir_fd=folder)
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                return
            if info.st_uid != self.render_uid:
                os.unlink(name, dir_fd=folder)
                return
            key = (info.st_dev, info.st_ino)
            copied = self.copies.get(key)
            if copied is not None:
                self.link_copy(copied, folder, name)
                return
            _replace_with_copy(folder, name, fd, info)
            if info.st_nlink > 1:
                if len(self.copies) >= MOST_SHARED:
                    raise OutputRefused(
                        f"over {MOST_SHARED} of its files have several names; refused"
                    )
                self.copies[key] = (where, name, fd)
                fd = -1  # held till the end
        finally:
            if fd >= 0:
                os.close(fd)

    def link_copy(self, copied: tuple[tuple[str, ...], str, int], folder: int, name: str) -> None:
        """Give ``name`` in ``folder`` the copy already made of its file."""
        where, copy_name, _ = copied
        origin = _open_below(self.top, where)
        link_name = f".farmtui-{secrets.token_hex(6)}.link"
        try:
            os.link(copy_name, link_name, src_dir_fd=origin, dst_dir_fd=folder)
            os.replace(link_name, name, src_dir_fd=folder, dst_dir_fd=folder)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(link_name, dir_fd=folder)
            raise
        finally:
            if origin != self.top:
                os.close(origin)


def _claim(fd: int) -> None:
    info = os.fstat(fd)
    os.fchown(fd, os.geteuid(), os.getegid())
    os.fchmod(fd, stat.S_IMODE(info.st_mode) & ~_DROPPED_MODE)


def _open_below(top: int, where: tuple[str, ...]) -> int:
    """A folder below ``top`` already taken back (the agent's: nothing swaps it now)."""
    fd = top
    for part in where:
        inner = os.open(part, FOLDER_FLAGS, dir_fd=fd)
        if fd != top:
            os.close(fd)
        fd = inner
    return fd


def _replace_with_copy(folder: int, name: str, fd: int, info: os.stat_result) -> None:
    copy_name = f".farmtui-{secrets.token_hex(6)}.copy"  # short: any name fits beside it
    mode = stat.S_IMODE(info.st_mode) & ~_DROPPED_MODE
    copy = os.open(copy_name, _NEW_FILE, mode, dir_fd=folder)
    try:
        copy_data(fd, copy, info.st_size)
        os.fchmod(copy, mode)
        os.replace(copy_name, name, src_dir_fd=folder, dst_dir_fd=folder)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(copy_name, dir_fd=folder)
        raise
    finally:
        os.close(copy)


def copy_data(source: int, target: int, size: int, check: Callable[[], None] | None = None) -> None:
    """The first ``size`` bytes of ``source`` into ``target``, holes left as holes.

    Only the parts that hold data are copied (``SEEK_DATA``/``SEEK_HOLE``): a
    renderer's sparse terabyte costs the agent no more disk than it cost the
    renderer. Bytes past ``size`` (the file growing meanwhile) are not copied.
    ``check`` is called before each ``COPY_BLOCK`` and may raise to stop the copy:
    a copy runs on a thread nobody can cancel, and one kernel call of a whole large
    frame kept a stopped attempt (or an agent told to go at once) copying to its end.
    """
    offset = 0
    while offset < size:
        try:
            start = os.lseek(source, offset, os.SEEK_DATA)
        except OSError as exc:
            if exc.errno == errno.ENXIO:  # no data past offset: the rest is a hole
                break
            raise
        if start >= size:
            break
        end = min(os.lseek(source, start, os.SEEK_HOLE), size)
        while start < end:
            if check is not None:
                check()
            copied = _copy_range(source, target, start, min(end - start, COPY_BLOCK))
            if copied == 0:  # it shrank meanwhile
                end = start
                break
            start += copied
        offset = end if end > offset else size
    os.ftruncate(target, size)


def _copy_range(source: int, target: int, offset: int, count: int) -> int:
    """Copy up to ``count`` bytes at ``offset``, in the kernel where it can; how many.

    ``copy_file_range`` within one file system; across two (a node's staging and
    an NFS sync root: EXDEV) ``sendfile``; bytes read and written, else.
    """
    try:
        return os.copy_file_range(source, target, count, offset, offset)
    except OSError as exc:
        if exc.errno not in _NOT_HERE:
            raise
    os.lseek(target, offset, os.SEEK_SET)
    try:
        return os.sendfile(target, source, offset, count)
    except OSError as exc:
        if exc.errno not in _NOT_HERE:
            raise
    data = os.pread(source, min(count, 1024 * 1024), offset)
    written = 0
    while written < len(data):
        written += os.pwrite(target, data[written:], offset + written)
    return len(data)
