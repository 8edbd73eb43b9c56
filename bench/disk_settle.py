"""What a new file costs on the disk a benchmark writes to, and waiting until it is cheap again.

Every chunk attempt's log is a new file in the sync root, so a benchmark of
dispatch and completion pays a file's creation per chunk. On an ext4 without
a journal (this machine's: ``/sys/fs/ext4/<dev>/journal_task`` is
``<none>``), the kernel will not reuse an inode freed less than 60 s ago, or
360 s while its inode table block is dirty (``recently_deleted`` in
``fs/ext4/ialloc.c``): it steps over each such free inode, one buffer lookup
at a time. After a benchmark run
deletes its farm (100,000 chunk logs), every new file for the next minutes
costs 5-20 times what it does on a settled disk: ``perf record -g`` of the
leader's log writer in (c2) put 60% of its samples in ``recently_deleted``
and the lookups under it. The figures then measured the last run's
clean-up, not the leader.

So a run first waits (at most ``SETTLE_WITHIN``) until a new file costs at
most ``SETTLED_US`` of CPU, and every run records what one cost just before
it started. For two trees side by side, ``scale.py --keep`` leaves each
invocation's farms in place, so that no run follows the other's deletion;
delete them once done, then let the disk settle.

    python bench/disk_settle.py [FOLDER]      # the cost now, in FOLDER (default /tmp)
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

# A settled disk here: 22-48 µs a file (open, a short write, close); a disk after a
# farm's clean-up: 80-580 µs.
SETTLED_US = 60.0
SETTLE_WITHIN = 420.0  # the dirty window (360 s) and a writeback pass
LOOK_EVERY = 15.0
FILES = 500


def create_cost_us(folder: Path, files: int = FILES, looks: int = 3) -> float:
    """CPU µs this thread spends making one small log file in ``folder``'s file system:
    the median of ``looks`` folders of ``files`` (one look varied 20-520 µs here).

    The files are left in place: deleting them would itself make the next
    files dearer. They go with ``folder``.
    """
    return statistics.median(_one_look(folder, files) for _ in range(looks))


def _one_look(folder: Path, files: int) -> float:
    probe = Path(tempfile.mkdtemp(prefix="create-probe-", dir=folder))
    parent = os.open(probe, os.O_RDONLY | os.O_DIRECTORY)
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
    try:
        began = time.thread_time()
        for number in range(files):
            fd = os.open(f"chunk-{number:04d}.attempt-1.log", flags, 0o644, dir_fd=parent)
            os.write(fd, b"header\n")
            os.close(fd)
        return 1e6 * (time.thread_time() - began) / files
    finally:
        os.close(parent)


def settle(
    folder: Path,
    say: Callable[[str], None],
    below_us: float = SETTLED_US,
    within: float = SETTLE_WITHIN,
) -> float:
    """Wait until a new file in ``folder`` costs at most ``below_us``; the last cost seen."""
    deadline = time.monotonic() + within
    cost = create_cost_us(folder)
    if cost <= below_us:
        return cost
    say(
        f"  a new file costs {cost:.0f} µs on this disk (a settled one: under "
        f"{below_us:.0f}); waiting up to {within:.0f} s for it to settle"
    )
    while cost > below_us and time.monotonic() < deadline:
        time.sleep(LOOK_EVERY)
        cost = create_cost_us(folder)
    say(f"  a new file costs {cost:.0f} µs")
    return cost


if __name__ == "__main__":
    where = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.gettempdir())
    with tempfile.TemporaryDirectory(dir=where) as scratch:
        print(f"{create_cost_us(Path(scratch)):.0f} µs of CPU a new file in {where}")
