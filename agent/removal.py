"""Removing what is in staging, where renderers (running as the agent's user) may have
put anything under any name: never following a symlink, never raising."""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
from pathlib import Path


def remove_entry(path: Path) -> None:
    """Remove whatever has this name (never what a symlink points to); never raises."""
    try:
        mode = os.lstat(path).st_mode
    except OSError:
        return
    with contextlib.suppress(OSError):
        if stat.S_ISDIR(mode):
            shutil.rmtree(path, ignore_errors=True)
        else:
            os.unlink(path)


def remove_folder(folder: Path) -> None:
    """Remove an attempt's folder and what is in it; never raises.

    Most attempts leave their working folder empty: one ``rmdir`` removes it,
    where ``shutil.rmtree`` (a scan, a stat and a descriptor per level) was the
    largest part of an agent's own time per chunk. A folder that is not empty
    goes through ``rmtree``; a symlink (or a file) a renderer left in its place
    is unlinked (``rmdir`` never follows a symlink), its target never touched.
    """
    try:
        os.rmdir(folder)
    except FileNotFoundError:
        pass
    except OSError:
        remove_entry(folder)
