"""Empty folders kept for the next attempts' working folders: a rename, not a mkdir and a rmdir.

Every attempt renders in a folder of its own in staging (``ChunkRun._prepare``),
made before it starts and removed once it is over. Making a folder cost this
machine's ext4 0.3-0.5 ms of kernel time at times and removing it ~0.1 ms,
where renaming one costs ~10 µs: for chunks of a fraction of a second that
was a good part of an agent's own time. So an attempt's folder that is left
empty is moved aside (``staging/.spare/N``) and renamed into place for a later
attempt. Only a real, empty folder is kept: never a symlink a renderer put in
its place, nor anything with files in it. What a previous agent left there
goes with the other leftovers at start (``Supervisor.clean_abandoned_staging``).
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path

SPARE = ".spare"
KEPT = 32  # at most, the empty folders waiting (a few per slot is plenty)


class SpareFolders:
    def __init__(self, staging_root: Path) -> None:
        self.staging_root = staging_root
        self.root = staging_root / SPARE
        self._free: list[Path] = []
        self._next = 0

    def make(self, folder: Path) -> None:
        """Make ``folder`` (and its parents), a spare one renamed into place when there is one.

        As ``mkdir(exist_ok=True)``: a folder already there is left as it is.
        """
        folder.parent.mkdir(parents=True, exist_ok=True)
        while self._free:
            spare = self._free.pop()
            try:
                os.rename(spare, folder)
                return
            except FileNotFoundError:
                continue  # someone cleaned staging: the next spare, or a new folder
            except OSError:
                self._free.append(spare)  # ``folder`` is there already, not empty
                break
        folder.mkdir(exist_ok=True)

    def keep(self, folder: Path) -> bool:
        """Keep ``folder`` for a later attempt if it is a real, empty folder in staging.

        False (and ``folder`` left as it is) otherwise: the caller removes it.
        """
        if len(self._free) >= KEPT or not folder.is_relative_to(self.staging_root):
            return False
        spare = self.root / str(self._next)
        try:
            if not stat.S_ISDIR(os.lstat(folder).st_mode):
                return False  # a symlink (or a file) a renderer left in its place
            with os.scandir(folder) as entries:
                if next(entries, None) is not None:
                    return False
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
