"""Uploads in flight, noted in the leader's data folder so that a leader killed midway
can remove their temporary files at its next start.

An upload (``server.api_uploads.Upload``) writes its body to a temporary file beside
its target in the sync root and renames it into place when whole; killed midway, the
leader left that file there for good (break rounds 29d, 29f). Each upload notes its
target's path in a file of the data folder named by its temporary file's token while
that file may exist; a sweep of that folder at the start finds what is left, without
walking the sync root (a filer of millions of files).
"""

from __future__ import annotations

import contextlib
import re
from pathlib import Path, PurePosixPath

from farmtui.no_follow import NotAFolder, remove_in

# Random bytes of an upload's token (hex: twice as many characters).
TOKEN_BYTES = 8
_TOKEN = re.compile(rf"[0-9a-f]{{{2 * TOKEN_BYTES}}}")


def temporary_name(token: str) -> str:
    """The temporary file of the upload ``token``, in its target's folder."""
    return f".farmtui-{token}.upload"


def sweep_uploads(root: Path, records: Path) -> int:
    """Remove the temporary files of uploads a leader was killed in the middle of (their
    records in ``records``); how many. Each is found as it was made: from ``root`` a
    folder at a time, never through a symlink, and only a file of an upload's name."""
    removed = 0
    with contextlib.suppress(FileNotFoundError):
        for record in records.iterdir():
            with contextlib.suppress(OSError, ValueError, NotAFolder):
                if _TOKEN.fullmatch(record.name):
                    steps = PurePosixPath(record.read_text(encoding="utf-8")).parts[:-1]
                    removed += remove_in(root.resolve(), steps, temporary_name(record.name))
            with contextlib.suppress(OSError):
                record.unlink()
    return removed
