"""The leader's PostgreSQL store (psycopg 3): the same rows and promises as the SQLite one.

For a farm that must outlive its leader's machine: several leaders share
one database, one of them active (``server.lease``). It writes the rows
``server.store_rows`` builds, in the tables ``server.store_schema``
migrates, so ``farm migrate`` moves a farm from SQLite to here row for row.

A commit is one transaction: BEGIN, one ``executemany`` per table (psycopg
sends each batch in one go), COMMIT; so about four round trips to the server
for a typical commit (a chunk row and a node row). It runs on the event loop
thread, as SQLite's does, and the leader's group commit (``Leader.submit``)
folds the reports of one loop turn into one commit. Measured here (loopback,
PostgreSQL 15, one chunk and one node row per commit, medians of 2000 on a
busy 2-core machine): SQLite ``synchronous=normal`` 0.05 ms, ``full`` 0.5 ms;
PostgreSQL with fsync and synchronous commit on 0.8-1.0 ms, with fsync off
0.4-0.5 ms. That is acceptable on the loop for this first step; a database a
network away adds four round trips to every commit. Psycopg's pipeline mode
did not cut the waits here (it was slower on loopback); one statement of
data-modifying CTEs over ``unnest`` arrays would make a commit a single round
trip, the next step if commits to a remote database stall the loop. Moving
commits off the loop would let the scheduler run ahead of the database,
which "acknowledge after commit, rebuild on failure" does not allow without
more machinery.

A link to the server that breaks (server restarted, network cut) is opened
again on the next call. A commit that fails on a statement leaves the
database as it was (PostgreSQL rolled the transaction back) and raises
``StoreError``; one that loses the connection cannot know whether the server
committed, says so, and the leader's reload then shows what the database
holds. Timeouts bound how long a dead server can hold the loop:
``connect_timeout`` and ``tcp_user_timeout`` (both may be set in the URL),
and for a server that keeps the connection open but stops answering (frozen,
or a link that drops packets) a deadline of one lease on every write and
small read (``_Deadline``), after which the link is cut.

Fencing (``server.lease``): once the leader holds the lease, ``term`` is
set and every write transaction begins by locking the lease row in share
mode where it still holds that term; none: ``Fenced``, and nothing is
written. The row lock makes a takeover wait for a write in flight, and a
write wait for a takeover in flight (which then leaves no row to find). A
store without a term (before a leader first became active, ``farm migrate``)
writes unfenced. ``idle_in_transaction_session_timeout`` (the lease's length)
ends the session of a leader frozen inside a transaction, and the leader that
takes over ends the sessions of the one it replaces (by their
``application_name``), so a frozen leader's row lock cannot hold a takeover
back.

Every message goes through ``server.store_url.scrubbed``: a password in the
URL never reaches a log or an error.
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import TupleRow

from server.errors import StoreError
from server.lease import session_name
from server.model import Job, Node
from server.pg_cut import shut_down
from server.store import Fenced
from server.store_rows import (
    FarmRows,
    Rows,
    SavesChanges,
    TokenRow,
    WrittenRows,
    farm_from_rows,
)
from server.store_schema import MIGRATIONS, SCHEMA_VERSION, statements
from server.store_url import redacted, scrubbed

Connection = psycopg.Connection[TupleRow]

# Leaders that open one database at once migrate it one after the other.
MIGRATION_LOCK = 0x6661726D  # "farm"
# Unless the URL says otherwise: how long an unreachable server may hold the loop.
DEFAULT_OPTIONS: dict[str, Any] = {
    "connect_timeout": 5,
    # Unacknowledged writes on a dead link fail after this (ms), not TCP's 15 minutes.
    "tcp_user_timeout": 5000,
    "application_name": "farmtui leader",
}
# A connection idle this long (seconds) is checked before it is used again.
IDLE_CHECK_AFTER = 1.0
DATABASE_DISK_FULL = "the database's disk is full: nothing was changed"
_DISK_FULL_STATES = frozenset({"53100"})  # disk_full

_TABLES = ("jobs", "chunks", "nodes", "tokens", "settings")
# Each running leader names its sessions "farmtui leader ID" / "farmtui lease ID".
_LEADERS_CONNECTED = (
    "SELECT count(DISTINCT split_part(application_name, ' ', 3)) FROM pg_stat_activity "
    "WHERE datname = current_database() AND application_name ~ '^farmtui (leader|lease) .' "
    "AND pid <> pg_backend_pid()"
)
_FENCE = "SELECT term FROM leader_lease WHERE id = 1 AND term = %s FOR SHARE"
FENCED = "this leader was deposed: another leader holds the lease now; nothing was changed"
_UPSERT_JOB = (
    "INSERT INTO jobs (id, data) VALUES (%s, %s) "
    "ON CONFLICT (id) DO UPDATE SET data = excluded.data"
)
_UPSERT_CHUNK = (
    "INSERT INTO chunks (job_id, idx, data) VALUES (%s, %s, %s) "
    "ON CONFLICT (job_id, idx) DO UPDATE SET data = excluded.data"
)
_UPSERT_NODE = (
    "INSERT INTO nodes (name, data) VALUES (%s, %s) "
    "ON CONFLICT (name) DO UPDATE SET data = excluded.data"
)


class PostgresStore(SavesChanges):
    """The farm in a PostgreSQL database."""

    def __init__(
        self, url: str, idle_timeout: float | None = None, holder: str | None = None
    ) -> None:
        """``idle_timeout``: seconds a session may idle inside a transaction (the lease's);
        ``holder``: the leader's lease id, which names its sessions (``server.lease``)."""
        self.url = url
        self.where = redacted(url)
        self.commits = 0
        # The lease's term once this leader is active: every write checks it (``_writing``).
        self.term: int | None = None
        self.idle_timeout = idle_timeout
        # How long a write or a small read may wait for the server (the lease's length):
        # past it the link is cut (``_Deadline``), so a database that stopped answering
        # without closing the connection cannot hold the leader's loop for ever. A
        # leader stuck that long has lost its lease by then anyway.
        self.deadline = idle_timeout
        self._conn: Connection | None = None
        # Commits are written on a thread of their own (``server.commit_line``), the rest
        # on the event loop's: every use of the connection holds this.
        self._using = threading.RLock()
        self._used = time.monotonic()  # when the connection last answered
        try:
            given = conninfo_to_dict(url)
        except psycopg.Error as exc:
            raise self._error(f"cannot open {self.where}", exc) from None
        self._options = {k: v for k, v in DEFAULT_OPTIONS.items() if k not in given}
        if idle_timeout is not None and "connect_timeout" not in given:
            # Reconnecting after the idle check (half a lease) fits in the rest of it
            # (libpq waits at least 2 s): a frozen server must not hold the loop longer.
            self._options["connect_timeout"] = max(2, math.ceil(idle_timeout / 2))
        if holder is not None:
            # Whatever the URL says: the leader that takes over ends this session by name.
            self._options["application_name"] = session_name(holder)
        try:
            conn = self._connection()
            self._migrate(conn)
            persisted = [row[0] for row in conn.execute("SELECT id FROM jobs")]
        except psycopg.Error as exc:
            self.close()
            raise self._error(f"cannot open {self.where}", exc) from None
        except StoreError:
            self.close()
            raise
        self.written = WrittenRows(persisted)

    def _connection(self) -> Connection:
        """The open connection, or a new one when the last broke.

        A connection left idle a while is asked first whether it still works:
        a server that restarted meanwhile closed it, and a change must not fail
        (and a takeover must not stumble) on a link that was dead before it began.
        """
        conn = self._conn
        idle = time.monotonic() - self._used > IDLE_CHECK_AFTER
        if conn is not None and idle and not (conn.closed or conn.broken):
            try:
                with _Deadline(conn, None if self.deadline is None else self.deadline / 2):
                    conn.execute("SELECT 1")
            except psycopg.OperationalError:
                conn.close()
        if conn is None or conn.closed or conn.broken:
            if conn is not None:
                conn.close()
            self._conn = conn = psycopg.connect(self.url, autocommit=True, **self._options)
            if self.idle_timeout is not None:
                milliseconds = max(1, int(self.idle_timeout * 1000))
                conn.execute(f"SET idle_in_transaction_session_timeout = {milliseconds}")
        return conn

    def _migrate(self, conn: Connection) -> None:
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
            conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            row = conn.execute("SELECT version FROM schema_version").fetchone()
            if row is None:
                conn.execute("INSERT INTO schema_version (version) VALUES (0)")
            version: int = 0 if row is None else row[0]
            if version > SCHEMA_VERSION:
                raise StoreError(
                    f"{self.where} has schema version {version}; this leader knows up to "
                    f"{SCHEMA_VERSION} (upgrade farmtui)"
                )
            for number in range(version, SCHEMA_VERSION):
                for statement in statements(MIGRATIONS[number].postgresql):
                    conn.execute(statement)
            conn.execute("UPDATE schema_version SET version = %s", (SCHEMA_VERSION,))

    @property
    def schema_version(self) -> int:
        with self._reading("read the schema version of") as conn:
            row = conn.execute("SELECT version FROM schema_version").fetchone()
        return 0 if row is None else int(row[0])

    def close(self) -> None:
        with self._using:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def abandon(self) -> None:
        """Cut the link under the call on it, if any, without waiting for that call.

        A database frozen in the middle of a standby's takeover held its load,
        which has no deadline, for as long as it stayed frozen; the leader,
        deposed 2 s later, then waited for it to close the store, on its event
        loop, and no SIGTERM was heard until the database thawed.
        """
        conn = self._conn  # read without ``_using``: its holder is the call to end
        if conn is not None:
            shut_down(conn)

    # --- the farm ---------------------------------------------------------------
    def load(self) -> tuple[list[Job], list[Node]]:
        # A whole farm may take longer than any deadline (and runs off the loop at takeover).
        with self._reading("read", bounded=False) as conn:
            jobs, nodes = farm_from_rows(
                (data for (data,) in conn.execute("SELECT data FROM jobs")),
                conn.execute("SELECT job_id, idx, data FROM chunks ORDER BY job_id, idx"),
                (data for (data,) in conn.execute("SELECT data FROM nodes")),
            )
        self.written.loaded(jobs)
        return jobs, nodes

    def write(self, batches: Sequence[Rows]) -> None:
        """Write ``batches`` in order in one commit, from any thread (``server.commit_line``).

        StoreError (and nothing written, unless the link broke mid-commit) when it fails.
        """
        with self._writing() as cursor:
            for rows in batches:
                if rows.deleted:
                    gone = [(job_id,) for job_id in rows.deleted]
                    cursor.executemany("DELETE FROM chunks WHERE job_id = %s", gone)
                    cursor.executemany("DELETE FROM jobs WHERE id = %s", gone)
                if rows.jobs:
                    cursor.executemany(_UPSERT_JOB, rows.jobs)
                if rows.chunks:
                    cursor.executemany(_UPSERT_CHUNK, rows.chunks)
                if rows.nodes:
                    cursor.executemany(_UPSERT_NODE, rows.nodes)
        self.commits += 1

    # --- tokens -----------------------------------------------------------------
    def tokens(self) -> list[TokenRow]:
        with self._reading("read the tokens of") as conn:
            found = conn.execute("SELECT hash, name, role, created FROM tokens").fetchall()
        return [TokenRow(*row) for row in found]

    def add_token(
        self, token_hash: str, name: str, role: str, created: float | None = None
    ) -> None:
        with self._writing() as cursor:
            cursor.execute(
                "INSERT INTO tokens (hash, name, role, created) VALUES (%s, %s, %s, %s) "
                "ON CONFLICT (hash) DO UPDATE SET name = excluded.name, role = excluded.role, "
                "created = excluded.created",
                (token_hash, name, role, time.time() if created is None else created),
            )

    def remove_token(self, token_hash: str) -> None:
        with self._writing() as cursor:
            cursor.execute("DELETE FROM tokens WHERE hash = %s", (token_hash,))

    # --- the leader's own settings -------------------------------------------------
    def setting(self, key: str) -> str | None:
        with self._reading("read the settings of") as conn:
            row = conn.execute("SELECT value FROM settings WHERE key = %s", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_setting(self, key: str, value: str) -> None:
        with self._writing() as cursor:
            cursor.execute(
                "INSERT INTO settings (key, value) VALUES (%s, %s) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (key, value),
            )

    def hold(self) -> None:
        """Several leaders share a PostgreSQL farm: the lease says which one runs it."""

    def leaders_on_it(self) -> int:
        """Leaders connected to the database now, active or standing by (by session name)."""
        with self._reading("look for leaders on") as conn:
            row = conn.execute(_LEADERS_CONNECTED).fetchone()
        return 0 if row is None else int(row[0])

    def claim_setting(self, key: str, value: str) -> str:
        with self._writing() as cursor:
            cursor.execute(
                "INSERT INTO settings (key, value) VALUES (%s, %s) ON CONFLICT (key) DO NOTHING",
                (key, value),
            )
            row = cursor.execute("SELECT value FROM settings WHERE key = %s", (key,)).fetchone()
        assert row is not None  # written above, or by whoever was first
        return str(row[0])

    # --- every row, for ``farm migrate`` ---------------------------------------------
    def export_rows(self) -> FarmRows:
        with self._reading("read", bounded=False) as conn:
            return FarmRows(
                jobs=[(i, d) for i, d in conn.execute("SELECT id, data FROM jobs ORDER BY id")],
                chunks=[
                    (j, i, d)
                    for j, i, d in conn.execute(
                        "SELECT job_id, idx, data FROM chunks ORDER BY job_id, idx"
                    )
                ],
                nodes=[(n, d) for n, d in conn.execute("SELECT name, data FROM nodes ORDER BY 1")],
                tokens=[
                    TokenRow(*row)
                    for row in conn.execute("SELECT hash, name, role, created FROM tokens")
                ],
                settings=[
                    (k, v) for k, v in conn.execute("SELECT key, value FROM settings ORDER BY 1")
                ],
            )

    def import_rows(self, rows: FarmRows) -> None:
        from server.store import farm_not_empty

        with self._writing(bounded=False) as cursor:
            # No other leader or migration writes while we look and copy.
            cursor.execute("LOCK TABLE jobs, chunks, nodes, tokens, settings IN EXCLUSIVE MODE")
            counts: dict[str, int] = {}
            for table in _TABLES:
                cursor.execute(f"SELECT count(*) FROM {table}")
                found = cursor.fetchone()
                counts[table] = 0 if found is None else int(found[0])
            if any(counts.values()):
                raise farm_not_empty(self.where, counts)
            # COPY: a million chunk rows in seconds, not one statement each.
            for table, columns, table_rows in (
                ("jobs", "id, data", rows.jobs),
                ("chunks", "job_id, idx, data", rows.chunks),
                ("nodes", "name, data", rows.nodes),
                ("tokens", "hash, name, role, created", rows.tokens),
                ("settings", "key, value", rows.settings),
            ):
                copy_sql = f"COPY {table} ({columns}) FROM STDIN"
                with cursor.copy(copy_sql) as copy:
                    for row in table_rows:
                        copy.write_row(row)
        self.written = WrittenRows(job_id for job_id, _ in rows.jobs)

    # --- transactions -----------------------------------------------------------------
    @contextlib.contextmanager
    def _writing(self, bounded: bool = True) -> Iterator[psycopg.Cursor[TupleRow]]:
        """One transaction: BEGIN, the statements, COMMIT; within ``deadline`` if ``bounded``.

        Any failure becomes StoreError with one line; the database is as it was.
        """
        with self._using:
            yield from self._writing_now(bounded)

    def _writing_now(self, bounded: bool) -> Iterator[psycopg.Cursor[TupleRow]]:
        try:
            conn = self._connection()
        except psycopg.Error as exc:
            reason = self._reason(exc)
            raise StoreError(
                f"the leader cannot reach its database ({reason}): nothing was changed",
                f"{type(exc).__name__}: {reason}",
            ) from None
        term = self.term
        deadline = _Deadline(conn, self.deadline if bounded else None)
        try:
            with deadline, conn.transaction(), conn.cursor() as cursor:
                if term is not None:
                    cursor.execute(_FENCE, (term,))
                    if cursor.fetchone() is None:
                        raise Fenced(FENCED, f"term {term} is over")
                yield cursor
        except psycopg.Error as exc:
            raise self._save_error(exc, deadline.cut) from None
        self._used = time.monotonic()

    @contextlib.contextmanager
    def _reading(self, what: str, bounded: bool = True) -> Iterator[Connection]:
        """One read-only snapshot (REPEATABLE READ) of the database."""
        with self._using:
            yield from self._reading_now(what, bounded)

    def _reading_now(self, what: str, bounded: bool) -> Iterator[Connection]:
        deadline: _Deadline | None = None
        try:
            conn = self._connection()
            deadline = _Deadline(conn, self.deadline if bounded else None)
            with deadline, conn.transaction():
                conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                yield conn
            self._used = time.monotonic()
        except psycopg.Error as exc:
            self._forget_broken()
            if deadline is not None and deadline.cut:
                raise StoreError(
                    f"cannot {what} {self.where}: {deadline.said()}", deadline.said()
                ) from None
            raise self._error(f"cannot {what} {self.where}", exc) from None

    def _forget_broken(self) -> None:
        """Drop a connection that broke, so the next call opens a new one."""
        conn = self._conn
        if conn is not None and (conn.broken or conn.closed):
            conn.close()
            self._conn = None

    def _reason(self, exc: psycopg.Error) -> str:
        """The server's (or libpq's) reason in one line, without any password."""
        diag = exc.diag.message_primary if exc.sqlstate else None
        text = diag or str(exc) or type(exc).__name__
        return " ".join(scrubbed(text, self.url).split())[:200]

    def _error(self, message: str, exc: psycopg.Error) -> StoreError:
        reason = self._reason(exc)
        return StoreError(f"{message}: {reason}", f"{exc.sqlstate or type(exc).__name__}: {reason}")

    def _save_error(self, exc: psycopg.Error, cut: bool = False) -> StoreError:
        """The one line a client sees for a failed write, with the server's reason as detail."""
        lost = cut or (self._conn is not None and (self._conn.broken or self._conn.closed))
        self._forget_broken()
        reason = f"it did not answer within {self.deadline:g} s" if cut else self._reason(exc)
        detail = f"{exc.sqlstate or type(exc).__name__}: {reason}"
        if exc.sqlstate in _DISK_FULL_STATES:
            return StoreError(DATABASE_DISK_FULL, detail)
        if lost:
            # The COMMIT may have reached the server before the link broke.
            return StoreError(
                f"the leader lost its database while saving ({reason}): "
                "the change may not have been saved",
                detail,
            )
        return StoreError(
            f"the leader could not save the change ({reason}): nothing was changed", detail
        )


class _Deadline:
    """Cut the link if a call on it outlasts ``seconds`` (None: never).

    libpq waits on its socket with no time limit, and a server that is frozen
    (SIGSTOP, a paused VM) or a link that drops packets without a reset never
    ends that wait; ``tcp_user_timeout`` only covers data left unacknowledged.
    Shutting the socket down from a timer thread ends the wait at once with an
    error; the store then opens a new connection on its next call.
    """

    def __init__(self, conn: Connection, seconds: float | None) -> None:
        self.conn = conn
        self.seconds = seconds
        self.cut = False
        self._done = False
        self._lock = threading.Lock()
        self._timer: threading.Timer | None = None

    def __enter__(self) -> _Deadline:
        if self.seconds is not None:
            self._timer = threading.Timer(self.seconds, self._cut)
            self._timer.daemon = True
            self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            self._done = True  # a timer that fires from now on leaves the link alone
        if self._timer is not None:
            self._timer.cancel()

    def said(self) -> str:
        return f"the database did not answer within {self.seconds:g} s"

    def _cut(self) -> None:
        with self._lock:
            if self._done:
                return
            self.cut = True
            shut_down(self.conn)
