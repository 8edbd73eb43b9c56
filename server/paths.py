"""Paths taken from requests and jobs, confined to the sync root.

A relative path is accepted only if it stays inside the root: no absolute
paths, no ``..``, no backslashes or NUL, and, after resolving symlinks, still
under the root.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

from farmtui.path_limits import path_size_refusal
from farmtui.printable import has_control
from server.errors import BadRequest


def confine(root: Path, relative: str) -> Path:
    """``root / relative`` if it stays inside ``root``; BadRequest otherwise."""
    if not relative or not relative.strip():
        raise BadRequest("empty path")
    if "\x00" in relative or "\\" in relative:
        raise BadRequest(f"path {relative!r} has a backslash or NUL")
    if has_control(relative):
        raise BadRequest(f"path {relative!r} has a control character")
    if (too_big := path_size_refusal(relative, "the path")) is not None:
        raise BadRequest(too_big)
    pure = PurePosixPath(relative)
    if pure.is_absolute() or relative.startswith("~"):
        raise BadRequest(f"path {relative!r} must be relative to the sync root")
    if any(part == ".." for part in pure.parts):
        raise BadRequest(f"path {relative!r} escapes the sync root")
    base = root.resolve()
    try:
        target = (base / pure).resolve()
    except (OSError, RuntimeError) as exc:
        # A folder on its way swapped for a symlink as it was looked at (EINVAL), a loop.
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else "a symlink loop"
        raise BadRequest(f"path {relative!r} could not be followed ({why}); try again") from None
    if target != base and base not in target.parents:
        raise BadRequest(f"path {relative!r} escapes the sync root")
    return target
