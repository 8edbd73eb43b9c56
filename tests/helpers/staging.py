"""What an agent's staging folder holds, for tests that it leaves nothing behind."""

from __future__ import annotations

from pathlib import Path


def left_in(folder: Path) -> list[str]:
    """Every file and folder under ``folder`` (relative), or [] when it is gone.

    A job's emptied folder may stay a while for the job's next chunk (``JOB_FOLDER_KEPT``):
    what matters is that no attempt's files are left in it.
    """
    if not folder.exists():
        return []
    return sorted(str(path.relative_to(folder)) for path in folder.rglob("*"))
