"""A folder on a small tmpfs of its own, and a file that fills it: a full disk for real.

Mounting needs root; without it (or where mounting is refused) the test is skipped.
"""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest


@contextlib.contextmanager
def small_disk(folder: Path, size: str = "1m", mode: str = "") -> Iterator[Path]:
    """``folder`` (made if missing) on a tmpfs of ``size``, unmounted afterwards."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs for a full disk needs root")
    folder.mkdir(parents=True, exist_ok=True)
    options = f"size={size}" + (f",mode={mode}" if mode else "")
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {mounted.stderr.strip() or mounted.returncode}")
    try:
        yield folder
    finally:
        if subprocess.run(["umount", str(folder)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(folder)], capture_output=True, check=False)


def fill(path: Path) -> int:
    """Write ``path`` until its disk has no room, to the last bytes; the errno that stopped it."""
    with path.open("wb", buffering=0) as out:
        for block in (1 << 20, 1 << 16, 1 << 12, 1 << 9):
            data = b"\0" * block
            while True:
                try:
                    out.write(data)
                except OSError as exc:
                    if exc.errno != errno.ENOSPC:
                        return exc.errno or 0
                    break
    return errno.ENOSPC
