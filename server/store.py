"""The leader's SQLite store: one file, WAL, one writer, versioned schema.

Jobs, chunks and nodes are stored one row each as msgspec JSON of the model
records, so a field added to the model with a default needs no migration.
Only what a ``Changes`` names is written, in one transaction, and the leader
acknowledges nothing before that commit returns.

A chunk row holds only what a chunk's life changes (``StoredChunk``: state,
attempts, output seen ...), without the defaults: its frames, kind and index
follow from the job's spec (``build_chunks``), and a chunk that never left
its first state has no row at all. So submitting a job of a million frames
writes one job row, and a finished chunk rewrites one small row. A job row is
written only when one of its own fields changed, not for every chunk event.
Rows an older leader wrote (whole chunks) still load.

Durability: WAL with ``synchronous=NORMAL`` by default. A commit is then a
write into the WAL without an fsync, which survives a crash of the leader
process (the OS has the bytes) and keeps the database consistent on a power
cut, where only the last moments may be lost. It keeps a commit well under a
millisecond, so the store runs on the event loop thread. ``synchronous="full"``
in leader.toml fsyncs every commit for those who prefer that. Checkpoints,
which copy the WAL into the database and sync it, run on a thread of their
own (``server.checkpointer``).

A commit that fails (the disk is full, an I/O error) leaves the database as it
was and raises ``StoreError`` with one line for the client. SQLite rolls a
transaction back by itself on some of those errors, so we roll back only when
a transaction is still open: a ``ROLLBACK`` that fails must not hide the cause.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sqlite3
import time
import weakref
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Literal, NamedTuple

import msgspec

from farmtui.jobfields import JobFieldError, check_job
from farmtui.protocol import ChunkState
from server.checkpointer import Checkpointer
from server.errors import StoreError
from server.model import (
    Attempt,
    Changes,
    Chunk,
    ChunkLayout,
    ChunkList,
    Job,
    Node,
    chunks_decoded,
    chunks_encoded,
)
from server.scheduler import Scheduler
from server.scheduler_config import SchedulerError
from server.submission import build_chunks, upgrade_stored_job

# Each entry upgrades the schema by one version (PRAGMA user_version).
MIGRATIONS: list[str] = [
    # 1: the first schema.
    """
    CREATE TABLE jobs (
        id TEXT PRIMARY KEY,
        data TEXT NOT NULL
    );
    CREATE TABLE chunks (
        job_id TEXT NOT NULL,
        idx INTEGER NOT NULL,
        data TEXT NOT NULL,
        PRIMARY KEY (job_id, idx)
    ) WITHOUT ROWID;
    CREATE TABLE nodes (
        name TEXT PRIMARY KEY,
        data TEXT NOT NULL
    );
    CREATE TABLE tokens (
        hash TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        role TEXT NOT NULL,
        created REAL NOT NULL
    );
    CREATE TABLE settings (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    """,
    # 2: chunk rows hold a StoredChunk (what changed since build_chunks); an older
    # leader would misread them, hence the version.
    "-- chunk rows are StoredChunk",
]

SCHEMA_VERSION = len(MIGRATIONS)

DISK_FULL = "the leader's disk is full: nothing was changed"
# A full disk shows up as SQLITE_FULL, or as an I/O error from a write that found
# no room (the WAL, its shared-memory index, a journal), depending on where it hit.
_DISK_FULL_CODES = frozenset({sqlite3.SQLITE_FULL, sqlite3.SQLITE_IOERR})


class StoredChunk(msgspec.Struct, omit_defaults=True):
    """What a chunk's life changes; the rest of the chunk comes from ``build_chunks``."""

    state: ChunkState = "queued"
    node: str | None = None
    attempt: int = 0
    errors: int = 0
    retry_at: float | None = None
    started: float | None = None
    finished: float | None = None
    render_time: float | None = None
    staged: frozenset[int] = frozenset()
    done: frozenset[int] = frozenset()
    attempts: tuple[Attempt, ...] = ()
    stopping_node: str | None = None
    stopping_attempt: int = 0
    staged_on: str | None = None
    staged_attempt: int = 0


_STORED_FIELDS = StoredChunk.__struct_fields__

_encoder = msgspec.json.Encoder()
_job_encoder = msgspec.json.Encoder(enc_hook=chunks_encoded)
_job_decoder = msgspec.json.Decoder(Job, dec_hook=chunks_decoded)
_chunk_decoder = msgspec.json.Decoder(Chunk)
_stored_chunk_decoder = msgspec.json.Decoder(StoredChunk)
_node_decoder = msgspec.json.Decoder(Node)


class TokenRow(NamedTuple):
    hash: str
    name: str
    role: str
    created: float


def _decode_job(data: str) -> Job:
    """A job row; one that today's field limits refuse (an older leader's) is upgraded."""
    try:
        return _job_decoder.decode(data)
    except msgspec.ValidationError:
        return upgrade_stored_job(data)


def encode_job(job: Job) -> str:
    """The job without its chunks (they have their own rows)."""
    return _job_encoder.encode(dataclasses.replace(job, tally=None)).decode()


def encode_chunk(chunk: Chunk) -> str:
    """The chunk's row: its fields that ``build_chunks`` does not give, without defaults."""
    # Field by field rather than a dict of getattr: a row per finished chunk.
    stored = StoredChunk(
        state=chunk.state,
        node=chunk.node,
        attempt=chunk.attempt,
        errors=chunk.errors,
        retry_at=chunk.retry_at,
        started=chunk.started,
        finished=chunk.finished,
        render_time=chunk.render_time,
        staged=chunk.staged,
        done=chunk.done,
        attempts=chunk.attempts,
        stopping_node=chunk.stopping_node,
        stopping_attempt=chunk.stopping_attempt,
        staged_on=chunk.staged_on,
        staged_attempt=chunk.staged_attempt,
    )
    return _encoder.encode(stored).decode()


def pristine(chunk: Chunk) -> bool:
    """Never touched since ``build_chunks``: a fresh job's chunk like this needs no row."""
    return chunk.attempt == 0 and chunk.state == "queued" and not chunk.attempts


def _job_fingerprint(job: Job) -> tuple[object, ...]:
    """Every stored field of a job (chunks and counters apart), cheap to compare."""
    return (
        job.spec,
        job.owner,
        job.state,
        job.priority,
        job.queue_key,
        job.created,
        job.archived,
        job.reviewed,
        job.started,
        job.finished,
        tuple(job.blocked.items()),
        tuple(job.node_errors.items()),
        job.scout_released,
        job.submit_key,
        job.chunks.untouched,
    )


def _base_chunks(job: Job) -> ChunkList | None:
    """The job's chunks as submitted, from its spec and the cut in its row.

    None if the spec no longer cuts.
    """
    try:
        frames = check_job(job.spec)
        return build_chunks(job.id, job.spec, frames, job.chunks.layout.cut_version)
    except (JobFieldError, SchedulerError):
        return None


def _overlay(chunks: ChunkList, job_id: str, index: int, data: str) -> None:
    """Put one stored row onto the chunk it describes."""
    if not 0 <= index < len(chunks):
        return  # a row the spec no longer has a chunk for
    if data.startswith('{"job_id"'):
        # A whole chunk, as an older leader stored it.
        chunks[index] = _chunk_decoder.decode(data)
        return
    stored = _stored_chunk_decoder.decode(data)
    chunk = chunks[index]
    for name in _STORED_FIELDS:
        setattr(chunk, name, getattr(stored, name))


def encode_node(node: Node) -> str:
    # Online state is the live link's business, not the disk's. The attempts
    # holding its slots are kept: a restarted leader must still fence them.
    # Not ``dataclasses.replace``: a copy of the node for every row was most of its cost.
    online, node.online = node.online, False
    try:
        return _encoder.encode(node).decode()
    finally:
        node.online = online


# Bytes of WAL kept once a checkpoint has caught up (the rest is given back).
WAL_SIZE_LIMIT = 4 * 1024 * 1024


class Store:
    """The one writer of ``farm.db``. Not thread-safe: use it from one thread."""

    def __init__(self, path: Path, synchronous: Literal["normal", "full"] = "normal") -> None:
        self.path = path
        try:
            _private(path)
            self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=True)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute(f"PRAGMA synchronous={synchronous.upper()}")
            self.db.execute("PRAGMA foreign_keys=ON")
            # Checkpoints run on a thread (``server.checkpointer``), never in a commit;
            # a WAL that starts again is cut back to this size.
            self.db.execute("PRAGMA wal_autocheckpoint=0")
            self.db.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT}")
            self._migrate()
        except (sqlite3.Error, OSError) as exc:
            raise StoreError(f"cannot open {path}: {exc}") from None
        self.checkpointer = Checkpointer(path)
        # A store dropped without close() (scripts, tests) stops its thread too.
        weakref.finalize(self, self.checkpointer.stop)
        # Jobs already on disk: a job seen for the first time gets all its chunks written.
        self._persisted: set[str] = {row[0] for row in self.db.execute("SELECT id FROM jobs")}
        # What each job row on disk says (``_job_fingerprint``): an unchanged job is not rewritten.
        self._written: dict[str, tuple[object, ...]] = {}
        self.commits = 0

    def _migrate(self) -> None:
        version: int = self.db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"{self.path} has schema version {version}; this leader knows up to "
                f"{SCHEMA_VERSION} (upgrade farmtui)"
            )
        for number in range(version, SCHEMA_VERSION):
            self.db.execute("BEGIN IMMEDIATE")
            for statement in _statements(MIGRATIONS[number]):
                self.db.execute(statement)
            self.db.execute(f"PRAGMA user_version={number + 1}")
            self.db.execute("COMMIT")

    @property
    def schema_version(self) -> int:
        version: int = self.db.execute("PRAGMA user_version").fetchone()[0]
        return version

    def close(self) -> None:
        self.checkpointer.close()
        self.db.close()

    # --- the farm ---------------------------------------------------------------
    def load(self) -> tuple[list[Job], list[Node]]:
        """Every job (with its chunks, in index order) and every node; StoreError if unreadable."""
        jobs: dict[str, Job] = {}
        try:
            for (data,) in self.db.execute("SELECT data FROM jobs"):
                job = _decode_job(data)
                # The untouched chunks' state and the cut: all of its chunks in the row.
                untouched, cut = job.chunks.untouched, job.chunks.layout.cut_version
                job.chunks = _base_chunks(job) or ChunkList(job.id, ChunkLayout([], cut))
                job.chunks.untouched = untouched
                jobs[job.id] = job
            chunks = self.db.execute("SELECT job_id, idx, data FROM chunks ORDER BY job_id, idx")
            for job_id, index, data in chunks:
                owner = jobs.get(job_id)
                if owner is not None:
                    _overlay(owner.chunks, job_id, index, data)
            nodes = [
                _node_decoder.decode(data) for (data,) in self.db.execute("SELECT data FROM nodes")
            ]
        except sqlite3.Error as exc:
            raise StoreError(f"cannot read {self.path}: {exc}", str(exc)) from None
        for job in jobs.values():
            self._written[job.id] = _job_fingerprint(job)
        return list(jobs.values()), nodes

    def save(self, changes: Changes, scheduler: Scheduler) -> None:
        """Persist every job, chunk and node ``changes`` names, and the removals, in one commit.

        StoreError (and nothing written) when the commit fails.
        """
        if not (changes.jobs or changes.chunks or changes.nodes or changes.removed):
            return
        jobs = scheduler.jobs
        job_rows: list[tuple[str, str]] = []
        chunk_rows: list[tuple[str, int, str]] = []
        deleted: set[str] = set(changes.removed)
        fresh: list[Job] = []
        fingerprints: dict[str, tuple[object, ...]] = {}
        for job_id in changes.jobs:
            job = jobs.get(job_id)
            if job is None:
                deleted.add(job_id)
                continue
            fingerprint = _job_fingerprint(job)
            if job_id in self._persisted and self._written.get(job_id) == fingerprint:
                continue  # only its chunks changed
            fingerprints[job_id] = fingerprint
            job_rows.append((job_id, encode_job(job)))
            if job_id not in self._persisted:
                fresh.append(job)
        fresh_ids = {job.id for job in fresh}
        for job_id, index in changes.chunks:
            if job_id in deleted:
                continue
            job = jobs.get(job_id)
            if job is None:
                continue
            chunk = find_chunk(job, index)
            if chunk is None or (job_id in fresh_ids and pristine(chunk)):
                continue  # a fresh job's untouched chunk: load rebuilds it from the spec
            chunk_rows.append((job_id, index, encode_chunk(chunk)))
        node_rows = [
            (name, encode_node(scheduler.nodes[name]))
            for name in changes.nodes
            if name in scheduler.nodes
        ]
        db = self.db
        with _transaction(db):
            if deleted:
                gone = [(job_id,) for job_id in deleted]
                db.executemany("DELETE FROM chunks WHERE job_id = ?", gone)
                db.executemany("DELETE FROM jobs WHERE id = ?", gone)
            if job_rows:
                db.executemany("INSERT OR REPLACE INTO jobs (id, data) VALUES (?, ?)", job_rows)
            if chunk_rows:
                db.executemany(
                    "INSERT OR REPLACE INTO chunks (job_id, idx, data) VALUES (?, ?, ?)", chunk_rows
                )
            if node_rows:
                db.executemany("INSERT OR REPLACE INTO nodes (name, data) VALUES (?, ?)", node_rows)
        self._persisted -= deleted
        self._persisted.update(job_id for job_id, _ in job_rows)
        for job_id in deleted:
            self._written.pop(job_id, None)
        self._written.update(fingerprints)
        self.commits += 1

    # --- tokens -----------------------------------------------------------------
    def tokens(self) -> list[TokenRow]:
        return [
            TokenRow(*row)
            for row in self.db.execute("SELECT hash, name, role, created FROM tokens")
        ]

    def add_token(
        self, token_hash: str, name: str, role: str, created: float | None = None
    ) -> None:
        with _transaction(self.db):
            self.db.execute(
                "INSERT OR REPLACE INTO tokens (hash, name, role, created) VALUES (?, ?, ?, ?)",
                (token_hash, name, role, time.time() if created is None else created),
            )

    # --- the leader's own settings -------------------------------------------------
    def setting(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM settings WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_setting(self, key: str, value: str) -> None:
        with _transaction(self.db):
            self.db.execute(
                "INSERT OR REPLACE INTO settings (key, value) VALUES (?, ?)", (key, value)
            )


def _private(path: Path) -> None:
    """The database holds job environments and token hashes: owner only (0600).

    SQLite gives its WAL and shared-memory files the database's mode; files
    an older version left readable are tightened too.
    """
    os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
    for name in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        with contextlib.suppress(FileNotFoundError):
            os.chmod(name, 0o600)


def find_chunk(job: Job, index: int) -> Chunk | None:
    """The chunk with this index, to read (an untouched one is not kept), or None."""
    chunks = job.chunks
    return chunks.look(index) if 0 <= index < len(chunks) else None


def _statements(script: str) -> Iterable[str]:
    return (s.strip() for s in script.split(";") if s.strip())


@contextlib.contextmanager
def _transaction(db: sqlite3.Connection) -> Iterator[None]:
    """``BEGIN``/``COMMIT`` on an autocommit connection; on error, roll back and raise.

    A failed statement or ``COMMIT`` becomes ``StoreError``; the database is as before.
    """
    try:
        # Left open by a ROLLBACK that failed last time: without this, every later BEGIN fails.
        _roll_back(db)
        db.execute("BEGIN")
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
