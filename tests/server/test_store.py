"""The store on both backends (SQLite, PostgreSQL): round trip, schema, only what changed.

The same tests run on each store ``open_store`` can open; the WAL tests at the
end are SQLite's own. ``store_url`` is ``sqlite:<tmp>/farm.db`` or a fresh
database in the worker's throwaway PostgreSQL cluster (``tests/conftest.py``).
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

import msgspec
import psycopg
import pytest

from farmtui.protocol import AgentHello, JobSpec
from server import checkpointer
from server.errors import StoreError
from server.model import Changes
from server.scheduler import Scheduler, SchedulerConfig
from server.store import (
    SCHEMA_VERSION,
    FarmStore,
    Store,
    encode_chunk,
    encode_job,
    encode_node,
    open_store,
)
from server.store_postgres import PostgresStore
from server.store_url import parse_store_url, redacted, scrubbed
from tests.e2e.e2e_support import wait_until

SPEC = JobSpec(name="shot", frames="1-100", chunk=1, argv=["render"], output="r/f_####.png")


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:{tmp_path / 'farm.db'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


def query(url: str, sql: str) -> list[tuple[Any, ...]]:
    """Rows of ``sql`` read on a connection of the test's own, beside the store's."""
    kind, where = parse_store_url(url)
    if kind == "sqlite":
        db = sqlite3.connect(where)
        try:
            return db.execute(sql).fetchall()
        finally:
            db.close()
    with psycopg.connect(where, autocommit=True) as conn:
        return conn.execute(sql).fetchall()


def count(url: str, table: str) -> int:
    value: int = query(url, f"SELECT count(*) FROM {table}")[0][0]
    return value


def farm_with_a_job() -> tuple[Scheduler, Changes]:
    scheduler = Scheduler(SchedulerConfig())
    changes = scheduler.submit("job1", SPEC, "alice", 1000.0)
    connected, _ = scheduler.node_connected(AgentHello(name="node1", slots=2), 1000.0)
    changes.merge(connected)
    changes.merge(scheduler.dispatch(1000.0))
    return scheduler, changes


def test_round_trip(store_url: str) -> None:
    scheduler, changes = farm_with_a_job()
    store = open_store(store_url)
    store.save(changes, scheduler)
    store.close()

    jobs, nodes = open_store(store_url).load()
    assert [encode_job(job) for job in jobs] == [encode_job(scheduler.jobs["job1"])]
    assert [encode_chunk(c) for c in jobs[0].chunks] == [
        encode_chunk(c) for c in scheduler.jobs["job1"].chunks
    ]
    assert [encode_node(node) for node in nodes] == [encode_node(scheduler.nodes["node1"])]
    assert jobs[0].chunks[0].attempts[0].node == "node1"
    # A new scheduler adopts it.
    fresh = Scheduler(SchedulerConfig())
    fresh.load(jobs, nodes, 2000.0)
    assert fresh.job_view("job1").stats.chunks_total == 100


def test_schema_version_and_newer_database_refused(store_url: str) -> None:
    store = open_store(store_url)
    assert store.schema_version == SCHEMA_VERSION >= 1
    store.close()
    kind, where = parse_store_url(store_url)
    if kind == "sqlite":
        db = sqlite3.connect(where)
        db.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
        db.close()
    else:
        with psycopg.connect(where, autocommit=True) as conn:
            conn.execute("UPDATE schema_version SET version = %s", (SCHEMA_VERSION + 1,))
    with pytest.raises(StoreError, match="schema version"):
        open_store(store_url)


def test_sqlite_runs_in_wal_mode(tmp_path: Path) -> None:
    store = Store(tmp_path / "farm.db")
    assert store.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def rows_written(store: FarmStore, url: str) -> Any:
    """A mark to compare: SQLite's change counter, or every row's version (xmin) in PostgreSQL."""
    if isinstance(store, Store):
        return store.db.total_changes
    return set(query(url, "SELECT 'c', job_id, idx, xmin::text FROM chunks")) | set(
        query(url, "SELECT 'j', id, 0, xmin::text FROM jobs")
    )


def test_only_changed_chunks_are_written(store_url: str) -> None:
    scheduler, changes = farm_with_a_job()
    store = open_store(store_url)
    store.save(changes, scheduler)
    before = rows_written(store, store_url)
    alive = scheduler.chunk_alive("node1", "job1", 0, 1, 1001.0)  # its first output line
    assert alive.chunks == {("job1", 0)}
    store.save(alive, scheduler)
    # One chunk row (and the job row if the scheduler names it), not a hundred.
    after = rows_written(store, store_url)
    written = after - before if isinstance(after, int) else len(after - before)
    assert 1 <= written <= 2


def test_removed_jobs_are_deleted_with_their_chunks(store_url: str) -> None:
    scheduler, changes = farm_with_a_job()
    store = open_store(store_url)
    store.save(changes, scheduler)
    assert count(store_url, "jobs") == 1
    store.save(scheduler.job_action(["job1"], "delete", "alice", 1002.0), scheduler)
    assert count(store_url, "jobs") == 0
    assert count(store_url, "chunks") == 0


def busy_farm(jobs: dict[str, str]) -> tuple[Scheduler, Changes]:
    """Jobs of the given frames, every chunk of them running (so every one has a row)."""
    scheduler = Scheduler(SchedulerConfig())
    changes = Changes()
    for name, frames in jobs.items():
        spec = msgspec.structs.replace(SPEC, frames=frames)
        changes.merge(scheduler.submit(name, spec, "alice", 1000.0))
    total = sum(len(scheduler.jobs[name].chunks) for name in jobs)
    connected, _ = scheduler.node_connected(AgentHello(name="node1", slots=total), 1000.0)
    changes.merge(connected)
    while True:  # a pass assigns at most ASSIGN_BUDGET chunks
        assigned = scheduler.dispatch(1000.0)
        if not assigned.chunks:
            break
        changes.merge(assigned)
    assert len(changes.chunks) == total
    return scheduler, changes


def test_hundreds_of_rows_are_saved_and_deleted_whole(store_url: str) -> None:
    # SQLite writes them in one statement, PostgreSQL in a pipeline.
    scheduler, changes = busy_farm({"big": "1-600", "odd": "1-257", "one": "7"})
    store = open_store(store_url)
    store.save(changes, scheduler)
    assert count(store_url, "chunks") == 600 + 257 + 1
    jobs, _ = open_store(store_url).load()
    saved = {job.id: [encode_chunk(c) for c in job.chunks] for job in jobs}
    assert saved == {
        job_id: [encode_chunk(c) for c in scheduler.jobs[job_id].chunks]
        for job_id in ("big", "odd", "one")
    }
    store.save(scheduler.job_action(["big", "one"], "delete", "alice", 1002.0), scheduler)
    assert query(store_url, "SELECT id FROM jobs") == [("odd",)]
    assert count(store_url, "chunks") == 257


def test_a_sqlite_commit_is_one_statement_however_many_rows(tmp_path: Path) -> None:
    # Each statement lets go of the GIL and waits to get it back: beside a busy event
    # loop up to 5 ms, once a statement. executemany was a statement a row.
    scheduler, changes = busy_farm({"big": "1-1000"})
    store = Store(tmp_path / "farm.db")
    statements: list[str] = []
    store.db.set_trace_callback(statements.append)
    store.save(changes, scheduler)
    # The trigger's statements are traced as the statement that fired them.
    assert {statement.split(" SELECT ")[0] for statement in statements} == {"INSERT INTO incoming"}
    assert count(f"sqlite:{tmp_path / 'farm.db'}", "chunks") == 1000


def test_nothing_to_save_is_no_transaction(store_url: str) -> None:
    scheduler, _ = farm_with_a_job()
    store = open_store(store_url)
    store.save(Changes(), scheduler)
    assert store.commits == 0


def test_a_claimed_setting_keeps_the_first_value(store_url: str) -> None:
    first, second = open_store(store_url), open_store(store_url)
    assert first.claim_setting("root_id", "from-a") == "from-a"
    assert second.claim_setting("root_id", "from-b") == "from-a"  # started together: one id
    assert open_store(store_url).setting("root_id") == "from-a"


def test_settings_and_tokens(store_url: str) -> None:
    store = open_store(store_url)
    store.set_setting("root_id", "abc")
    store.set_setting("root_id", "abd")  # a setting is replaced, not added
    store.add_token("hash1", "alice", "user", created=1_700_000_000.123456)
    store.close()
    store = open_store(store_url)
    assert store.setting("root_id") == "abd"
    assert store.setting("missing") is None
    assert [tuple(t) for t in store.tokens()] == [("hash1", "alice", "user", 1_700_000_000.123456)]
    store.add_token("hash2", "bob", "viewer")
    store.remove_token("hash1")  # revoked: gone for good
    store.close()
    assert [t.name for t in open_store(store_url).tokens()] == ["bob"]


def test_open_store_picks_the_store_from_the_url(tmp_path: Path, postgres_url: str) -> None:
    assert isinstance(open_store(f"sqlite:{tmp_path / 'a.db'}"), Store)
    assert isinstance(open_store(tmp_path / "b.db"), Store)  # a plain path
    assert (tmp_path / "a.db").is_file()
    assert (tmp_path / "b.db").is_file()
    assert isinstance(open_store(postgres_url), PostgresStore)
    with pytest.raises(StoreError, match=r"^unknown store mysql://\.\.\.: use sqlite:PATH"):
        open_store("mysql://farm:secret@db/farm")
    with pytest.raises(StoreError, match="sqlite: needs a path"):
        open_store("sqlite:")


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://farm:s3cret@db:5432/farm", "postgresql://farm:***@db:5432/farm"),
        ("postgresql://farm@db/farm", "postgresql://farm@db/farm"),
        ("postgres://farm:p@ss/w@db/farm", "postgres://farm:***@db/farm"),
        (
            "postgresql://db/farm?user=farm&password=s3cret",
            "postgresql://db/farm?user=farm&password=***",
        ),
        ("sqlite:/data/farm.db", "sqlite:/data/farm.db"),
        # libpq ends the user part at the first "@": a "?" or "#" is the password's.
        ("postgresql://farm:Qx?leak@db:5432/farm", "postgresql://farm:***@db:5432/farm"),
        ("postgresql://farm@db/farm?password=Oo#leak", "postgresql://farm@db/farm?password=***"),
        (
            "postgresql://farm:a#b@db/farm?sslmode=require",
            "postgresql://farm:***@db/farm?sslmode=require",
        ),
    ],
)
def test_a_url_is_shown_without_its_password(url: str, shown: str) -> None:
    assert redacted(url) == shown
    assert "leak" not in scrubbed(f"FATAL: cannot connect to {url}", url)


def test_a_libpq_keyword_string_is_refused_not_taken_for_a_sqlite_path() -> None:
    for given in (
        "host=db port=5432 user=farm password=KvSecret9 dbname=farm",
        "sslmode=disable host=db password=KvSecret9",
    ):
        with pytest.raises(StoreError, match="use a postgresql:// URL") as refused:
            parse_store_url(given)
        assert "KvSecret9" not in str(refused.value)


# --- SQLite's own: the WAL ----------------------------------------------------------


def _fill(store: Store, batch: int, names: int = 10**9) -> None:
    """One commit of 20 rows of 2 KB."""
    with store.db:
        store.db.executemany(
            "INSERT OR REPLACE INTO nodes (name, data) VALUES (?, ?)",
            [(f"n{batch % names}-{i}", "x" * 2000) for i in range(20)],
        )


def test_commits_leave_checkpoints_to_a_thread_and_the_wal_gives_its_space_back(
    tmp_path: Path,
) -> None:
    # A checkpoint inside a commit stalled the event loop for tens of ms; here the
    # commits never checkpoint, a thread does, and once they stop it empties the WAL.
    store = Store(tmp_path / "farm.db")
    assert store.db.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0
    # Cutting the WAL back in a commit took that commit 10-49 ms on the loop.
    assert store.db.execute("PRAGMA journal_size_limit").fetchone()[0] == -1
    wal = tmp_path / "farm.db-wal"
    for batch in range(200):  # ~8 MB through the WAL
        _fill(store, batch)
    assert wal.stat().st_size > 4 * 1024 * 1024
    wait_until(lambda: wal.stat().st_size == 0, what="the WAL of an idle store to be emptied")
    store.close()
    assert (
        Store(tmp_path / "farm.db").db.execute("SELECT COUNT(*) FROM nodes").fetchone()[0] == 4000
    )


def test_under_load_the_wal_is_started_again_and_its_file_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A PASSIVE checkpoint never catches up with a steady stream of commits: the
    # WAL grew by 5 MB a second in the scale benchmark until RESTART came in.
    monkeypatch.setattr(checkpointer, "RESTART_BYTES", 2 * 1024 * 1024)
    store = Store(tmp_path / "farm.db")
    wal = tmp_path / "farm.db-wal"
    batch = 0
    deadline = time.monotonic() + 60
    while store.checkpointer.restarts < 1:
        assert time.monotonic() < deadline, "the WAL was never started again under load"
        batch += 1
        _fill(store, batch, names=50)
        # The leader commits once a group (a few ms apart), not back to back: a
        # checkpoint that starts the WAL again needs a moment with no writer.
        time.sleep(0.005)
    size = wal.stat().st_size
    assert size > checkpointer.RESTART_BYTES
    for more in range(3):
        _fill(store, batch + more, names=50)
    # Those commits went to the file's beginning, and none cut it back: that took the
    # commit 10-49 ms on the event loop with 300 agents.
    assert wal.stat().st_size == size
    store.close()
