"""A commit beside a busy thread: one statement a row, a few, or one for all.

SQLite lets go of the GIL for each step of a statement. ``executemany`` steps
once a row, so a commit of N rows lets go of it N times; when another thread
of the leader is busy in Python (the event loop, or the job logs' writer at
thousands of chunks a second), each time the committing thread waits up to a
switch interval (5 ms) to get it back. The leader wrote rows in batches of up
to 256 (a statement a table and a batch size, as below), and now writes a
commit in one statement (``server.store.INCOMING``).

The three ways side by side, alone and beside a thread that only counts,
medians of ``--commits`` commits each:

    python bench/gil_convoy.py            # --rows 200 --commits 30
"""

from __future__ import annotations

import argparse
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from server.store import _WRITE_INCOMING, INCOMING, _incoming  # noqa: E402
from server.store_rows import Rows as StoreRows  # noqa: E402

Rows = list[tuple[object, ...]]


def one_a_row(db: sqlite3.Connection, rows: Rows) -> None:
    db.executemany("INSERT OR REPLACE INTO chunks (job_id, idx, data) VALUES (?, ?, ?)", rows)


def batched(db: sqlite3.Connection, rows: Rows) -> None:
    """A statement of ``VALUES (?, ?, ?), ...`` for each power of two of rows, up to 256."""
    done = 0
    while done < len(rows):
        count = min(256, 1 << ((len(rows) - done).bit_length() - 1))
        values = ", ".join(["(?, ?, ?)"] * count)
        db.execute(
            f"INSERT OR REPLACE INTO chunks (job_id, idx, data) VALUES {values}",
            [value for row in rows[done : done + count] for value in row],
        )
        done += count


def one_statement(db: sqlite3.Connection, rows: Rows) -> None:
    """The store's way: the rows as JSON, into a view whose trigger writes them."""
    chunks = [(str(job_id), int(str(index)), str(data)) for job_id, index, data in rows]
    db.execute(_WRITE_INCOMING, (_incoming([StoreRows(set(), [], chunks, [])]),))


def commit_ms(
    db: sqlite3.Connection, write: Callable[[sqlite3.Connection, Rows], None], rows: Rows
) -> float:
    began = time.perf_counter()
    if write is one_statement:  # its own transaction
        write(db, rows)
    else:
        db.execute("BEGIN")
        write(db, rows)
        db.execute("COMMIT")
    return (time.perf_counter() - began) * 1000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200)
    parser.add_argument("--commits", type=int, default=30)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="farm-convoy-"))
    db = sqlite3.connect(folder / "farm.db", isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.executescript(
        """
        CREATE TABLE jobs (id TEXT PRIMARY KEY, data TEXT NOT NULL);
        CREATE TABLE chunks (
            job_id TEXT, idx INTEGER, data TEXT, PRIMARY KEY (job_id, idx)
        ) WITHOUT ROWID;
        CREATE TABLE nodes (name TEXT PRIMARY KEY, data TEXT NOT NULL);
        """
        + INCOMING
    )
    rows: Rows = [("job1", i, "x" * 300) for i in range(args.rows)]
    busy = threading.Event()
    stop = threading.Event()

    def count() -> None:
        while not stop.is_set():
            if busy.is_set():
                sum(range(1000))
            else:
                busy.wait(0.01)

    threading.Thread(target=count, daemon=True).start()
    print(f"commits of {args.rows} rows, median (max) of {args.commits}, ms")
    for beside in ("alone", "beside a busy thread"):
        if beside != "alone":
            busy.set()
        for name, write in (
            ("one statement a row", one_a_row),
            ("batches of up to 256", batched),
            ("one statement", one_statement),
        ):
            times = [commit_ms(db, write, rows) for _ in range(args.commits)]
            print(f"  {beside:22} {name:22} {statistics.median(times):8.2f} ({max(times):.2f})")
    stop.set()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
