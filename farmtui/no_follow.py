"""Folders reached one step at a time, never through a symlink.

Both the agent and the leader write where renderers can write too (the sync
root's output folders; an attempt's own folder). A path checked first and
used after (``os.path.realpath``, then ``open``) leaves a moment in which a
renderer can swap a folder on the way for a symlink: an agent run as root
wrote files of a job's choosing into ``/etc/cron.d`` that way (break round
26). So what is written there is reached through descriptors: each folder
opened in the one before it with ``O_NOFOLLOW``, every file made, renamed or
removed in an open folder. A symlink on the way is refused, whatever it
points to (``NotAFolder``).
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Sequence
from pathlib import Path

FOLDER_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class NotAFolder(ValueError):
    """A step of the way is a symlink, or not a folder."""


def open_folder(base: Path, parts: Sequence[str], *, make: bool = False, what: str = "") -> int:
    """A descriptor of ``base/parts...``, each step opened without following a symlink.

    ``make``: missing folders are made. NotAFolder when a step is a symlink
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
    try:
        return _open_step(folder, part, what)
    except FileNotFoundError:
        if not make:
            raise
    with contextlib.suppress(FileExistsError):  # made by someone else meanwhile: as it is
        os.mkdir(part, dir_fd=folder)
    return _open_step(folder, part, what)


def _open_step(folder: int, part: str, what: str) -> int:
    try:
        return os.open(part, FOLDER_FLAGS, dir_fd=folder)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise NotAFolder(
                f"{what}: {part} on its way is a symlink or not a folder; refused"
            ) from None
        raise


def remove_in(base: Path, parts: Sequence[str], name: str) -> bool:
    """Remove ``name`` from ``base/parts...``, reached as ``open_folder`` does; whether it
    was there. What a clean-up at start-up removes (a temporary file a killed process
    left in the sync root) is found this way, never through a symlink planted since."""
    folder = open_folder(base, parts)
    try:
        os.unlink(name, dir_fd=folder)
        return True
    except FileNotFoundError:
        return False
    finally:
        os.close(folder)


def make_folder(base: Path, parts: Sequence[str], owner: tuple[int, int] | None = None) -> None:
    """Make ``base/parts...`` (and what is missing on the way), never through a symlink;
    ``owner``: the last folder given to that (uid, gid), through its descriptor."""
    fd = open_folder(base, parts, make=True)
    try:
        if owner is not None:
            os.fchown(fd, *owner)
    finally:
        os.close(fd)
