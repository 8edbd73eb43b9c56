"""The store's schema: one list of migrations for SQLite and PostgreSQL alike.

Each entry upgrades the schema by one version. SQLite keeps the version in
``PRAGMA user_version``, PostgreSQL in the ``schema_version`` table; both
run ``MIGRATIONS[version:]`` in order. An entry is one text wherever the two
engines agree; where they cannot (storage words only, never the meaning of a
column), it is a pair, with the reason beside it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple


class Migration(NamedTuple):
    sqlite: str
    postgresql: str


def portable(sql: str) -> Migration:
    """A migration both engines run as written."""
    return Migration(sql, sql)


_FIRST_SCHEMA = """
    CREATE TABLE jobs (
        id TEXT PRIMARY KEY,
        data TEXT NOT NULL
    );
    CREATE TABLE chunks (
        job_id TEXT NOT NULL,
        idx INTEGER NOT NULL,
        data TEXT NOT NULL,
        PRIMARY KEY (job_id, idx)
    ) {without_rowid};
    CREATE TABLE nodes (
        name TEXT PRIMARY KEY,
        data TEXT NOT NULL
    );
    CREATE TABLE tokens (
        hash TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        role TEXT NOT NULL,
        created {float8} NOT NULL
    );
    CREATE TABLE settings (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
"""

MIGRATIONS: list[Migration] = [
    # 1: the first schema. A pair for two storage words: SQLite keeps chunk rows in
    # key order without a rowid (PostgreSQL has no such clause), and PostgreSQL's
    # REAL is 4 bytes, which would round a token's creation time to minutes, where
    # SQLite's is 8 (DOUBLE PRECISION in both).
    Migration(
        sqlite=_FIRST_SCHEMA.format(without_rowid="WITHOUT ROWID", float8="REAL"),
        postgresql=_FIRST_SCHEMA.format(without_rowid="", float8="DOUBLE PRECISION"),
    ),
    # 2: chunk rows hold a StoredChunk (what changed since build_chunks); an older
    # leader would misread them, hence the version.
    portable("-- chunk rows are StoredChunk"),
    # 3: which leader is active on a shared PostgreSQL database, and its fencing term
    # (server.lease). One row; an expiry in the past lets the first leader take it.
    # SQLite has one leader, always active: it needs no lease.
    Migration(
        sqlite="-- no lease: a SQLite farm has one leader",
        postgresql="""
            CREATE TABLE leader_lease (
                id INTEGER PRIMARY KEY CHECK (id = 1),
                term BIGINT NOT NULL,
                holder TEXT NOT NULL,
                url TEXT NOT NULL,
                expires_at TIMESTAMPTZ NOT NULL
            );
            INSERT INTO leader_lease (id, term, holder, url, expires_at)
                VALUES (1, 0, '', '', '-infinity')
        """,
    ),
]

SCHEMA_VERSION = len(MIGRATIONS)


def statements(script: str) -> Iterator[str]:
    """The statements of a migration, without those that are only comments."""
    for statement in script.split(";"):
        code = [line for line in statement.splitlines() if not line.strip().startswith("--")]
        if "".join(code).strip():
            yield statement.strip()
