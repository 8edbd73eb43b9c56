"""Empty folders kept for the next attempts' working folders: a rename, not a mkdir and a rmdir.

Every attempt renders in a folder of its own in staging (``ChunkRun._prepare``),
made before it starts and removed once it is over. Making a folder cost this
machine's ext4 0.3-0.5 ms of kernel time at times and removing it ~0.1 ms,
where renaming one costs ~10 µs: for chunks of a fraction of a second that
was a good part of an agent's own time. So an attempt's folder that is left
empty is moved aside (``staging/.spare/N``) and renamed into place for a later
attempt. Only a real, empty folder is kept: never a symlink a renderer put in
its place, nor anything with files in it; and a spare is checked again when
it is taken, since renderers can write here too. What a previous agent left there
goes with the other leftovers at start (``Supervisor.clean_abandoned_staging``).
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path

from agent.removal import remove_entry

SPARE = ".spare"
KEPT = 32  # at most, the empty folders waiting (a few per slot is plenty)


class SpareFolders:
    def __init__(self, staging_root: Path, *, reuse: bool = True) -> None:
        """``reuse``: False, every folder is made anew and none kept (renderers run as
        another user, who could write in a spare folder until it is taken)."""
        self.staging_root = staging_root
        self.reuse = reuse
        self.root = staging_root / SPARE
        self._free: list[Path] = []
        self._next = 0

    def make(self, folder: Path) -> None:
        """Make ``folder`` a new, empty, real folder (its parents too); OSError if it cannot.

        Whatever already has its name goes first: renderers run as the agent's
        user, so one may have planted a folder (or a symlink) where a later
        attempt's folder will be, or in a spare folder waiting here. A spare is
        checked once it is in place, and thrown away unless it is a real, empty
        folder: it cannot be swapped between the check and its use by anyone
        who could not as well write into the attempt's folder itself.
        """
        folder.parent.mkdir(parents=True, exist_ok=True)
        remove_entry(folder)
        while self._free:
            spare = self._free.pop()
            try:
                os.rename(spare, folder)
            except OSError:
                continue  # gone (someone cleaned staging), or something took its place
            if _empty_real_folder(folder):
                return
            remove_entry(folder)  # a renderer put something in it while it waited
        os.mkdir(folder)

    def keep(self, folder: Path) -> bool:
        """Keep ``folder`` for a later attempt if it is a real, empty folder in staging.

        False (and ``folder`` left as it is) otherwise: the caller removes it.
        """
        if (
            not self.reuse
            or len(self._free) >= KEPT
            or not folder.is_relative_to(self.staging_root)
        ):
            return False
        spare = self.root / str(self._next)
        try:
            if not _empty_real_folder(folder):
                return False  # a symlink a renderer left in its place, or files in it
            try:
                os.rename(folder, spare)
            except FileNotFoundError:  # the first one kept
                self.root.mkdir(parents=True, exist_ok=True)
                os.rename(folder, spare)
        except OSError:
            return False
        self._next += 1
        self._free.append(spare)
        return True

    def clear(self) -> None:
        """Remove the spare folders (the agent stops); never raises."""
        for spare in self._free:
            with contextlib.suppress(OSError):
                spare.rmdir()
        self._free.clear()
        with contextlib.suppress(OSError):
            self.root.rmdir()


def _empty_real_folder(path: Path) -> bool:
    """A folder, not a symlink to one, with nothing in it."""
    try:
        if not stat.S_ISDIR(os.lstat(path).st_mode):
            return False
        with os.scandir(path) as entries:
            return next(entries, None) is None
    except OSError:
        return False
