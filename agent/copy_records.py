"""Copies into the sync root in flight, noted in staging so that an agent killed midway
removes their temporary files at its next start.

A copy (``agent.staging.CopyToSyncRoot``) writes a frame to a temporary file beside
its target and renames it into place when whole; an agent killed midway (kill -9, a
crash, a power cut of the node) left that file in the sync root for good, one a kill,
taking the room whose lack had often made the copy fail in the first place (break
round 30b). Each copy notes its temporary file (the record's name) and its folder
(the record's text) in staging while that file may exist; the sweep at the next
Welcome that shows the sync root finds what is left, without walking the sync root.
As the leader does for its uploads (``server.upload_records``).
"""

from __future__ import annotations

import contextlib
import re
import threading
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

from farmtui.no_follow import NotAFolder, remove_in

# Under the staging root, beside the journal (``agent.supervisor.JOURNAL``).
RECORDS = ".copies"
# What a copy's temporary file is called (``agent.staging._land_copy``): nothing else is
# removed, whatever a record names.
TEMPORARY = re.compile(r"\..+\.farmtui-[0-9a-f]{8}\.tmp", re.DOTALL)


def temporary_name(name: str, token: str) -> str:
    """The temporary file of a copy of ``name`` (``token``: 8 hex digits), in its folder."""
    return f".{name}.farmtui-{token}.tmp"


class CopyRecords:
    """The copies of this agent whose temporary files may exist, noted from their threads."""

    def __init__(self, staging_root: Path) -> None:
        self.folder = staging_root / RECORDS
        self._lock = threading.Lock()
        # Noted by this process: never swept (a Welcome comes again while they copy).
        self._live: set[str] = set()

    def note(self, temporary: str, steps: Sequence[str]) -> bool:
        """Note ``temporary`` (in the folder ``steps`` from the sync root) before it is
        made; whether it was. A copy goes on unnoted (a full staging disk): the note
        helps a clean-up, it is not a condition of the copy."""
        if not TEMPORARY.fullmatch(temporary):
            return False
        with self._lock:
            self._live.add(temporary)
        try:
            try:
                (self.folder / temporary).write_text("/".join(steps), encoding="utf-8")
            except FileNotFoundError:
                self.folder.mkdir(parents=True, exist_ok=True)
                (self.folder / temporary).write_text("/".join(steps), encoding="utf-8")
        except OSError:
            self.done(temporary)
            return False
        return True

    def done(self, temporary: str) -> None:
        """Its temporary file is gone (renamed into place, or removed). Never raises."""
        with contextlib.suppress(OSError):
            (self.folder / temporary).unlink()
        with self._lock:
            self._live.discard(temporary)

    def sweep(self, root: Path) -> int:
        """Remove the temporary files of copies an earlier run of the agent was killed in
        the middle of; how many. Each is reached as it was made: from ``root`` a folder at
        a time, never through a symlink, and only a name a copy gives its file."""
        removed = 0
        with contextlib.suppress(FileNotFoundError):
            for record in self.folder.iterdir():
                with self._lock:
                    if record.name in self._live:
                        continue
                with contextlib.suppress(OSError, ValueError, NotAFolder):
                    if TEMPORARY.fullmatch(record.name):
                        text = record.read_text(encoding="utf-8")
                        steps = PurePosixPath(text).parts if text else ()
                        if ".." in steps or (steps and steps[0] == "/"):
                            raise ValueError(f"not a folder in the sync root: {text!r}")
                        # Not there: killed before it was made, or after it was renamed.
                        removed += remove_in(root, steps, record.name)
                with contextlib.suppress(OSError):
                    record.unlink()
        return removed
