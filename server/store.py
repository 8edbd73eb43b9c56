"""The leader's store: the interface, how a URL picks one, and the SQLite store.

Two stores keep the farm: ``Store`` here, on embedded SQLite (the default:
one file, WAL, one writer), and ``server.store_postgres.PostgresStore`` for
farms that outgrow one machine. ``open_store`` picks one from a URL
(``sqlite:PATH`` or a plain path, ``postgresql://...``). Both write the same
rows (``server.store_rows``) from the same schema migrations
(``server.store_schema``) and keep the same promises (``FarmStore``): only
what a ``Changes`` names is written, in one transaction, and the leader
acknowledges nothing before that commit returns; a commit that fails leaves
the database as it was and raises ``StoreError`` with one line.

SQLite durability: WAL with ``synchronous=NORMAL`` by default. A commit is
then a write into the WAL without an fsync, which survives a crash of the
leader process (the OS has the bytes) and keeps the database consistent on a
power cut, where only the last moments may be lost. It keeps a commit well
under a millisecond. ``synchronous="full"`` in leader.toml fsyncs every
commit for those who prefer that. Either way commits are written on a thread
of their own (``server.commit_line``), never on the event loop's.
Checkpoints, which copy the WAL into the database and sync it, run on a
thread of their own too (``server.checkpointer``).

A SQLite commit that fails (the disk is full, an I/O error) leaves the
database as it was. SQLite rolls a transaction back by itself on some of
those errors, so we roll back only when a transaction is still open: a
``ROLLBACK`` that fails must not hide the cause.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import os
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Concatenate, Literal, ParamSpec, Protocol, TypeVar

import msgspec

from server.checkpointer import Checkpointer
from server.errors import StoreError
from server.model import Changes, Job, Node
from server.scheduler import Scheduler
from server.store_rows import (
    FarmRows,
    Rows,
    SavesChanges,
    StoredChunk,
    TokenRow,
    WrittenRows,
    encode_chunk,
    encode_job,
    encode_node,
    farm_from_rows,
    find_chunk,
    pristine,
)
from server.store_schema import MIGRATIONS, SCHEMA_VERSION, statements
from server.store_url import parse_store_url

__all__ = [
    "DISK_FULL",
    "SCHEMA_VERSION",
    "FarmStore",
    "Fenced",
    "Store",
    "StoredChunk",
    "TokenRow",
    "encode_chunk",
    "encode_job",
    "encode_node",
    "find_chunk",
    "open_store",
    "pristine",
    "save_error",
]

DISK_FULL = "the leader's disk is full: nothing was changed"
# A full disk shows up as SQLITE_FULL, or as an I/O error from a write that found
# no room (the WAL, its shared-memory index, a journal), depending on where it hit.
_DISK_FULL_CODES = frozenset({sqlite3.SQLITE_FULL, sqlite3.SQLITE_IOERR})

Synchronous = Literal["normal", "full"]


class FarmStore(Protocol):
    """What the leader, its tokens and ``farm migrate`` need of a store.

    Safe to use from two threads: the leader writes its commits on a thread of
    their own (``server.commit_line``) and does the rest on the event loop's.
    """

    # Where the farm is, for messages: a path, or the URL without its password.
    where: str
    # Commits that wrote something.
    commits: int

    @property
    def schema_version(self) -> int: ...

    def load(self) -> tuple[list[Job], list[Node]]:
        """Every job (with its chunks) and every node; StoreError if unreadable."""
        ...

    # What the rows on disk say (the rows a ``Changes`` writes come from here).
    written: WrittenRows

    def save(self, changes: Changes, scheduler: Scheduler) -> None:
        """Write what ``changes`` names in one transaction; StoreError and nothing written."""
        ...

    def write(self, batches: Sequence[Rows]) -> None:
        """Write ``batches`` (``WrittenRows.queued``, ``merge_rows``) in order in one
        transaction, from any thread; StoreError and nothing written."""
        ...

    def tokens(self) -> list[TokenRow]: ...

    def add_token(
        self, token_hash: str, name: str, role: str, created: float | None = None
    ) -> None: ...

    def remove_token(self, token_hash: str) -> None: ...

    def setting(self, key: str) -> str | None: ...

    def set_setting(self, key: str, value: str) -> None: ...

    def claim_setting(self, key: str, value: str) -> str:
        """Store ``value`` unless ``key`` has one already; the value stored either way.

        Never overwrites, so leaders that start together agree on one value.
        """
        ...

    def export_rows(self) -> FarmRows:
        """Every row as stored, read in one transaction."""
        ...

    def import_rows(self, rows: FarmRows) -> None:
        """Write ``rows`` into an empty farm in one transaction; StoreError if it is not empty."""
        ...

    def close(self) -> None: ...

    def abandon(self) -> None:
        """From any thread: end at once whatever call waits on the store now (it fails),
        for a leader that stepped down and will not use it again."""
        ...

    def hold(self) -> None:
        """Claim the store for this leader while it runs (SQLite: one leader at a time);
        StoreError when another leader holds it."""
        ...

    def leaders_on_it(self) -> int:
        """How many leaders (other processes) run on this store now."""
        ...


class Fenced(StoreError):
    """Another leader holds the lease (a newer term): this one must never write again."""


def open_store(
    url: str | Path,
    synchronous: Synchronous = "normal",
    *,
    lease: float | None = None,
    holder: str | None = None,
) -> FarmStore:
    """The store ``url`` names: ``sqlite:PATH`` or a path, or ``postgresql://...``.

    ``synchronous`` is SQLite's; a PostgreSQL commit is durable as the server
    is configured (``synchronous_commit``). ``lease``: the leader lease's length
    (PostgreSQL; see ``server.lease``), and ``holder`` the leader's id there,
    which names its sessions. StoreError when it cannot be opened.
    """
    kind, where = parse_store_url(str(url))
    if kind == "postgresql":
        # Only a farm on PostgreSQL loads psycopg.
        from server.store_postgres import PostgresStore

        return PostgresStore(where, idle_timeout=lease, holder=holder)
    return Store(Path(where), synchronous)


def farm_not_empty(where: str, counts: dict[str, int]) -> StoreError:
    """Refusal of ``import_rows`` into a database that already holds a farm."""
    held = ", ".join(f"{count} {table}" for table, count in counts.items() if count)
    return StoreError(f"{where} already holds a farm ({held}): migrate into an empty database")


_TABLES = ("jobs", "chunks", "nodes", "tokens", "settings")


_P = ParamSpec("_P")
_R = TypeVar("_R")


def _one_at_a_time(
    method: Callable[Concatenate[Store, _P], _R],
) -> Callable[Concatenate[Store, _P], _R]:
    """The connection used by one thread at a time: the loop's, or the commits' own."""

    @functools.wraps(method)
    def one_at_a_time(store: Store, /, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        with store._using:
            return method(store, *args, **kwargs)

    return one_at_a_time


class Store(SavesChanges):
    """The one writer of ``farm.db`` (SQLite).

    Commits are written on a thread of their own (``server.commit_line``), the
    rest on the event loop's: every use of the connection holds ``_using``.
    """

    def __init__(self, path: Path, synchronous: Synchronous = "normal") -> None:
        self.path = path
        self.where = str(path)
        self._using = threading.RLock()
        try:
            _private(path)
            self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute(f"PRAGMA synchronous={synchronous.upper()}")
            self.db.execute("PRAGMA foreign_keys=ON")
            # Checkpoints run on a thread (``server.checkpointer``), never in a commit,
            # and so does cutting the WAL back (no journal_size_limit here).
            self.db.execute("PRAGMA wal_autocheckpoint=0")
            self._migrate()
            self.db.executescript(INCOMING)
            persisted = [row[0] for row in self.db.execute("SELECT id FROM jobs")]
        except (sqlite3.Error, OSError) as exc:
            raise StoreError(f"cannot open {path}: {exc}") from None
        self.checkpointer = Checkpointer(path)
        # A store dropped without close() (scripts, tests) stops its thread too.
        weakref.finalize(self, self.checkpointer.stop)
        self.written = WrittenRows(persisted)
        self.commits = 0
        self._held: Callable[[], object] | None = None  # frees the leader's lock (``hold``)

    def _migrate(self) -> None:
        version: int = self.db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"{self.path} has schema version {version}; this leader knows up to "
                f"{SCHEMA_VERSION} (upgrade farmtui)"
            )
        for number in range(version, SCHEMA_VERSION):
            self.db.execute("BEGIN IMMEDIATE")
            for statement in statements(MIGRATIONS[number].sqlite):
                self.db.execute(statement)
            self.db.execute(f"PRAGMA user_version={number + 1}")
            self.db.execute("COMMIT")

    @property
    @_one_at_a_time
    def schema_version(self) -> int:
        version: int = self.db.execute("PRAGMA user_version").fetchone()[0]
        return version

    @_one_at_a_time
    def free_bytes(self) -> int:
        """Room SQLite already holds: ``farm.db``'s free pages, which new rows reuse.

        Not the WAL's file: commits reuse it only from its beginning, once a
        checkpoint has copied all of it into ``farm.db``, which on a full disk
        cannot grow to take it. Counted, a WAL of a few megabytes passed for
        room on a disk filled to its last byte: changes were let through until
        it was used up, then failed their commits and were undone by reloading
        the farm (``bench/full_disk.py``: 0.2 s a refusal instead of 2 ms). Its
        room comes back to the disk when the checkpointer empties it.
        """
        pages: int = self.db.execute("PRAGMA freelist_count").fetchone()[0]
        size: int = self.db.execute("PRAGMA page_size").fetchone()[0]
        return pages * size

    def _lock_path(self) -> Path:
        return self.path.with_name(self.path.name + ".leader")

    def hold(self) -> None:
        """An exclusive lock beside ``farm.db`` for as long as this process runs on it."""
        try:
            fd = os.open(self._lock_path(), os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise StoreError(f"cannot lock {self.path}: {exc.strerror or exc}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise StoreError(
                f"another leader runs on {self.path}: stop it first (one leader per farm.db)"
            ) from None
        # Closed, and the lock freed, by close(), or when this store is dropped (a leader
        # that failed to start must not keep the next one out), or when the process ends.
        self._held = weakref.finalize(self, os.close, fd)

    def leaders_on_it(self) -> int:
        try:
            fd = os.open(self._lock_path(), os.O_RDWR)
        except FileNotFoundError:
            return 0
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return 1
        finally:
            os.close(fd)  # a lock we took is freed with it
        return 0

    @_one_at_a_time
    def close(self) -> None:
        if self._held is not None:
            self._held()  # once, whichever comes first
            self._held = None
        self.checkpointer.close()
        self.db.close()

    def abandon(self) -> None:
        """Nothing to do: a local file does not freeze (a SQLite leader never steps down)."""

    # --- the farm ---------------------------------------------------------------
    @_one_at_a_time
    def load(self) -> tuple[list[Job], list[Node]]:
        """Every job (with its chunks, in index order) and every node; StoreError if unreadable."""
        db = self.db
        try:
            jobs, nodes = farm_from_rows(
                (data for (data,) in db.execute("SELECT data FROM jobs")),
                db.execute("SELECT job_id, idx, data FROM chunks ORDER BY job_id, idx"),
                (data for (data,) in db.execute("SELECT data FROM nodes")),
            )
        except sqlite3.Error as exc:
            raise StoreError(f"cannot read {self.path}: {exc}", str(exc)) from None
        self.written.loaded(jobs)
        return jobs, nodes

    @_one_at_a_time
    def write(self, batches: Sequence[Rows]) -> None:
        """Write ``batches`` in order in one commit, from any thread (``server.commit_line``).

        StoreError (and nothing written) when the commit fails.
        """
        db = self.db
        _roll_back(db)  # left open by a ROLLBACK that failed last time
        try:
            # One statement, so its own transaction: see ``INCOMING``.
            db.execute(_WRITE_INCOMING, (_incoming(batches),))
        except sqlite3.Error as exc:
            _roll_back(db)
            raise save_error(exc) from None
        self.commits += 1

    # --- tokens -----------------------------------------------------------------
    @_one_at_a_time
    def tokens(self) -> list[TokenRow]:
        return [
            TokenRow(*row)
            for row in self.db.execute("SELECT hash, name, role, created FROM tokens")
        ]

    @_one_at_a_time
    def add_token(
        self, token_hash: str, name: str, role: str, created: float | None = None
    ) -> None:
        with _transaction(self.db):
            self.db.execute(
                "INSERT OR REPLACE INTO tokens (hash, name, role, created) VALUES (?, ?, ?, ?)",
                (token_hash, name, role, time.time() if created is None else created),
            )

    @_one_at_a_time
    def remove_token(self, token_hash: str) -> None:
        with _transaction(self.db):
            self.db.execute("DELETE FROM tokens WHERE hash = ?", (token_hash,))

    # --- the leader's own settings -------------------------------------------------
    @_one_at_a_time
    def setting(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM settings WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    @_one_at_a_time
    def set_setting(self, key: str, value: str) -> None:
        with _transaction(self.db):
            self.db.execute(
                "INSERT OR REPLACE INTO settings (key, value) VALUES (?, ?)", (key, value)
            )

    @_one_at_a_time
    def claim_setting(self, key: str, value: str) -> str:
        with _transaction(self.db):
            self.db.execute(
                "INSERT OR IGNORE INTO settings (key, value) VALUES (?, ?)", (key, value)
            )
            row = self.db.execute("SELECT value FROM settings WHERE key = ?", (key,)).fetchone()
        return str(row[0])

    # --- every row, for ``farm migrate`` ---------------------------------------------
    @_one_at_a_time
    def export_rows(self) -> FarmRows:
        db = self.db
        with _transaction(db):  # one snapshot of the five tables
            return FarmRows(
                jobs=list(db.execute("SELECT id, data FROM jobs ORDER BY id")),
                chunks=list(db.execute("SELECT job_id, idx, data FROM chunks ORDER BY 1, 2")),
                nodes=list(db.execute("SELECT name, data FROM nodes ORDER BY name")),
                tokens=[
                    TokenRow(*row)
                    for row in db.execute("SELECT hash, name, role, created FROM tokens")
                ],
                settings=list(db.execute("SELECT key, value FROM settings ORDER BY key")),
            )

    @_one_at_a_time
    def import_rows(self, rows: FarmRows) -> None:
        db = self.db
        with _transaction(db, "BEGIN IMMEDIATE"):
            counts = {t: db.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in _TABLES}
            if any(counts.values()):
                raise farm_not_empty(self.where, counts)
            db.executemany("INSERT INTO jobs (id, data) VALUES (?, ?)", rows.jobs)
            db.executemany("INSERT INTO chunks (job_id, idx, data) VALUES (?, ?, ?)", rows.chunks)
            db.executemany("INSERT INTO nodes (name, data) VALUES (?, ?)", rows.nodes)
            db.executemany(
                "INSERT INTO tokens (hash, name, role, created) VALUES (?, ?, ?, ?)", rows.tokens
            )
            db.executemany("INSERT INTO settings (key, value) VALUES (?, ?)", rows.settings)
        self.written = WrittenRows(job_id for job_id, _ in rows.jobs)


def _private(path: Path) -> None:
    """The database holds job environments and token hashes: owner only (0600).

    SQLite gives its WAL and shared-memory files the database's mode; files
    an older version left readable are tightened too.
    """
    os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
    for name in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        with contextlib.suppress(FileNotFoundError):
            os.chmod(name, 0o600)


# A commit's rows go to SQLite in one statement, which is its own transaction
# (autocommit): a JSON array of ``[kind, key, index, data]`` read by ``json_each``
# into a view whose trigger writes each row where it belongs, in the array's order.
# The commits' thread lets go of the GIL for each statement's step and waits for it
# again after, up to a switch interval (5 ms) while the event loop is busy: in a
# statement a row, a commit of 200 rows took 1,029 ms beside a busy thread; in
# batches of up to 256 rows (a statement a table and a size), 22-81 ms; in one
# statement, 6-10 ms (``bench/gil_convoy.py``). Temporary: made by each connection.
INCOMING = """
    CREATE TEMP VIEW incoming (kind, key, idx, data) AS SELECT NULL, NULL, NULL, NULL WHERE 0;
    CREATE TEMP TRIGGER incoming_row INSTEAD OF INSERT ON incoming BEGIN
        DELETE FROM chunks WHERE NEW.kind = 0 AND job_id = NEW.key;
        DELETE FROM jobs WHERE NEW.kind = 0 AND id = NEW.key;
        INSERT OR REPLACE INTO jobs (id, data) SELECT NEW.key, NEW.data WHERE NEW.kind = 1;
        INSERT OR REPLACE INTO chunks (job_id, idx, data)
            SELECT NEW.key, NEW.idx, NEW.data WHERE NEW.kind = 2;
        INSERT OR REPLACE INTO nodes (name, data) SELECT NEW.key, NEW.data WHERE NEW.kind = 3;
    END;
"""
_WRITE_INCOMING = (
    "INSERT INTO incoming SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]'), "
    "json_extract(value, '$[2]'), json_extract(value, '$[3]') FROM json_each(?)"
)
_DELETE, _JOB, _CHUNK, _NODE = range(4)
_incoming_encoder = msgspec.json.Encoder()


def _incoming(batches: Sequence[Rows]) -> str:
    """``batches`` as ``INCOMING``'s array: deletions first, then jobs, chunks, nodes.

    Text: SQLite 3.45 and later read a BLOB given to ``json_each`` as its binary JSON.
    """
    return _incoming_encoder.encode(
        [
            row
            for rows in batches
            for row in (
                *((_DELETE, job_id, None, None) for job_id in sorted(rows.deleted)),
                *((_JOB, job_id, None, data) for job_id, data in rows.jobs),
                *((_CHUNK, job_id, index, data) for job_id, index, data in rows.chunks),
                *((_NODE, name, None, data) for name, data in rows.nodes),
            )
        ]
    ).decode()


@contextlib.contextmanager
def _transaction(db: sqlite3.Connection, begin: str = "BEGIN") -> Iterator[None]:
    """``BEGIN``/``COMMIT`` on an autocommit connection; on error, roll back and raise.

    A failed statement or ``COMMIT`` becomes ``StoreError``; the database is as before.
    """
    try:
        # Left open by a ROLLBACK that failed last time: without this, every later BEGIN fails.
        _roll_back(db)
        db.execute(begin)
        yield
        db.execute("COMMIT")
    except sqlite3.Error as exc:
        _roll_back(db)
        raise save_error(exc) from None
    except BaseException:
        _roll_back(db)
        raise


def _roll_back(db: sqlite3.Connection) -> None:
    """Roll back what is still open; SQLite has already done it after SQLITE_FULL and friends."""
    if not db.in_transaction:
        return
    # The error being raised says why the transaction failed; a failed ROLLBACK must not
    # replace it. The next transaction tries the ROLLBACK again.
    with contextlib.suppress(sqlite3.Error):
        db.execute("ROLLBACK")


def save_error(exc: sqlite3.Error) -> StoreError:
    """The one line a client sees for a failed write, with SQLite's reason as the detail."""
    code = getattr(exc, "sqlite_errorcode", None)
    name = getattr(exc, "sqlite_errorname", None) or type(exc).__name__
    reason = " ".join(str(exc).split())[:120] or name
    detail = f"{name}: {reason}"
    # Extended codes keep the primary code in their low byte (SQLITE_IOERR_WRITE = IOERR | 3<<8).
    if code is not None and (code & 0xFF) in _DISK_FULL_CODES:
        return StoreError(DISK_FULL, detail)
    message = f"the leader could not save the change ({reason}): nothing was changed"
    return StoreError(message, detail)
