"""A renderer stand-in for bench/cancel.py: a tree of 9 processes, one of them detached.

    python bench/tree.py DIR

Writes an empty file named after each process's pid into DIR, then every
process waits forever:

    root ── mid ── sleep, sleep
         ├─ mid ── sleep, sleep
         └─ (double fork + setsid) helper ── sleep      <- left the session, like AfterFX

1 root + 2 mid + 4 sleep + 1 helper + 1 sleep = 9 processes.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path


def mark(folder: Path, pid: int) -> None:
    (folder / str(pid)).touch()


def wait_forever() -> None:
    while True:
        time.sleep(3600)


def sleeps(folder: Path, count: int) -> list[subprocess.Popen[bytes]]:
    children = [subprocess.Popen(["sleep", "1000"]) for _ in range(count)]
    for child in children:
        mark(folder, child.pid)
    return children


def main() -> None:
    folder = Path(sys.argv[-1])
    folder.mkdir(parents=True, exist_ok=True)
    role = sys.argv[1] if len(sys.argv) > 2 else "root"
    if role == "mid":
        mark(folder, os.getpid())
        sleeps(folder, 2)
        wait_forever()
    mark(folder, os.getpid())
    for _ in range(2):
        subprocess.Popen([sys.executable, __file__, "mid", str(folder)])
    first = os.fork()
    if first == 0:
        os.setsid()
        if os.fork() > 0:
            os._exit(0)
        mark(folder, os.getpid())
        sleeps(folder, 1)
        wait_forever()
    os.waitpid(first, 0)
    wait_forever()


if __name__ == "__main__":
    main()
