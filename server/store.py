"""The leader's SQLite store: one file, WAL, one writer, versioned schema.

Jobs, chunks and nodes are stored one row each as msgspec JSON of the model
records, so a field added to the model with a default needs no migration.
Only what a ``Changes`` names is written, in one transaction, and the leader
acknowledges nothing before that commit returns.

Durability: WAL with ``synchronous=NORMAL`` by default. A commit is then a
write into the WAL without an fsync, which survives a crash of the leader
process (the OS has the bytes) and keeps the database consistent on a power
cut, where only the last moments may be lost. It keeps a commit well under a
millisecond, so the store runs on the event loop thread. ``synchronous="full"``
in leader.toml fsyncs every commit for those who prefer that.
"""

from __future__ import annotations

import dataclasses
import sqlite3
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Literal, NamedTuple

import msgspec

from server.errors import StoreError
from server.model import Changes, Chunk, Job, Node
from server.scheduler import Scheduler

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
]

SCHEMA_VERSION = len(MIGRATIONS)

_encoder = msgspec.json.Encoder()
_job_decoder = msgspec.json.Decoder(Job)
_chunk_decoder = msgspec.json.Decoder(Chunk)
_node_decoder = msgspec.json.Decoder(Node)


class TokenRow(NamedTuple):
    hash: str
    name: str
    role: str
    created: float


def encode_job(job: Job) -> str:
    """The job without its chunks (they have their own rows)."""
    return _encoder.encode(dataclasses.replace(job, chunks=[])).decode()


def encode_chunk(chunk: Chunk) -> str:
    return _encoder.encode(chunk).decode()


def encode_node(node: Node) -> str:
    # Online state and running chunks are the live link's business, not the disk's.
    return _encoder.encode(dataclasses.replace(node, online=False, running=set())).decode()


class Store:
    """The one writer of ``farm.db``. Not thread-safe: use it from one thread."""

    def __init__(self, path: Path, synchronous: Literal["normal", "full"] = "normal") -> None:
        self.path = path
        try:
            self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=True)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute(f"PRAGMA synchronous={synchronous.upper()}")
            self.db.execute("PRAGMA foreign_keys=ON")
            self._migrate()
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open {path}: {exc}") from None
        # Jobs already on disk: a job seen for the first time gets all its chunks written.
        self._persisted: set[str] = {row[0] for row in self.db.execute("SELECT id FROM jobs")}
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
        self.db.close()

    # --- the farm ---------------------------------------------------------------
    def load(self) -> tuple[list[Job], list[Node]]:
        """Every job (with its chunks, in index order) and every node."""
        jobs: dict[str, Job] = {}
        for (data,) in self.db.execute("SELECT data FROM jobs"):
            job = _job_decoder.decode(data)
            jobs[job.id] = job
        for job_id, data in self.db.execute("SELECT job_id, data FROM chunks ORDER BY job_id, idx"):
            owner = jobs.get(job_id)
            if owner is not None:
                owner.chunks.append(_chunk_decoder.decode(data))
        nodes = [
            _node_decoder.decode(data) for (data,) in self.db.execute("SELECT data FROM nodes")
        ]
        return list(jobs.values()), nodes

    def save(self, changes: Changes, scheduler: Scheduler) -> None:
        """Persist every job, chunk and node ``changes`` names, and the removals, in one commit."""
        if not (changes.jobs or changes.chunks or changes.nodes or changes.removed):
            return
        jobs = scheduler.jobs
        job_rows: list[tuple[str, str]] = []
        chunk_rows: list[tuple[str, int, str]] = []
        deleted: set[str] = set(changes.removed)
        fresh: list[Job] = []
        for job_id in changes.jobs:
            job = jobs.get(job_id)
            if job is None:
                deleted.add(job_id)
                continue
            job_rows.append((job_id, encode_job(job)))
            if job_id not in self._persisted:
                fresh.append(job)
        for job in fresh:
            chunk_rows.extend((job.id, c.index, encode_chunk(c)) for c in job.chunks)
        fresh_ids = {job.id for job in fresh}
        for job_id, index in changes.chunks:
            if job_id in fresh_ids or job_id in deleted:
                continue
            job = jobs.get(job_id)
            if job is None:
                continue
            chunk = find_chunk(job, index)
            if chunk is not None:
                chunk_rows.append((job_id, index, encode_chunk(chunk)))
        node_rows = [
            (name, encode_node(scheduler.nodes[name]))
            for name in changes.nodes
            if name in scheduler.nodes
        ]
        db = self.db
        db.execute("BEGIN")
        try:
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
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        self._persisted -= deleted
        self._persisted.update(job_id for job_id, _ in job_rows)
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


def find_chunk(job: Job, index: int) -> Chunk | None:
    """The chunk with this index (chunks are normally stored at their index)."""
    chunks = job.chunks
    if 0 <= index < len(chunks) and chunks[index].index == index:
        return chunks[index]
    for chunk in chunks:
        if chunk.index == index:
            return chunk
    return None


def _statements(script: str) -> Iterable[str]:
    return (s.strip() for s in script.split(";") if s.strip())


class _transaction:
    """``BEGIN``/``COMMIT`` (``ROLLBACK`` on error) on an autocommit connection."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> None:
        self.db.execute("BEGIN")

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self.db.execute("ROLLBACK" if exc_type is not None else "COMMIT")
