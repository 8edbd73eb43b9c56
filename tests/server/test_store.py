"""The SQLite store: round trip, schema version, only what changed is written."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest

from farmtui.protocol import AgentHello, JobSpec
from server import checkpointer
from server.errors import StoreError
from server.model import Changes
from server.scheduler import Scheduler, SchedulerConfig
from server.store import (
    SCHEMA_VERSION,
    WAL_SIZE_LIMIT,
    Store,
    encode_chunk,
    encode_job,
    encode_node,
)

SPEC = JobSpec(name="shot", frames="1-100", chunk=1, argv=["render"], output="r/f_####.png")


def farm_with_a_job() -> tuple[Scheduler, Changes]:
    scheduler = Scheduler(SchedulerConfig())
    changes = scheduler.submit("job1", SPEC, "alice", 1000.0)
    connected, _ = scheduler.node_connected(AgentHello(name="node1", slots=2), 1000.0)
    changes.merge(connected)
    changes.merge(scheduler.dispatch(1000.0))
    return scheduler, changes


def test_round_trip(tmp_path: Path) -> None:
    scheduler, changes = farm_with_a_job()
    store = Store(tmp_path / "farm.db")
    store.save(changes, scheduler)
    store.close()

    jobs, nodes = Store(tmp_path / "farm.db").load()
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


def test_schema_version_and_newer_database_refused(tmp_path: Path) -> None:
    store = Store(tmp_path / "farm.db")
    assert store.schema_version == SCHEMA_VERSION >= 1
    assert store.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    store.close()
    db = sqlite3.connect(tmp_path / "farm.db")
    db.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    db.close()
    with pytest.raises(StoreError, match="schema version"):
        Store(tmp_path / "farm.db")


def test_only_changed_chunks_are_written(tmp_path: Path) -> None:
    scheduler, changes = farm_with_a_job()
    store = Store(tmp_path / "farm.db")
    store.save(changes, scheduler)
    before = store.db.total_changes
    started = scheduler.chunk_started("node1", "job1", 0, 1, 1001.0)
    assert started.chunks == {("job1", 0)}
    store.save(started, scheduler)
    # One chunk row (and the job row if the scheduler names it), not a hundred.
    assert store.db.total_changes - before <= 2


def test_removed_jobs_are_deleted_with_their_chunks(tmp_path: Path) -> None:
    scheduler, changes = farm_with_a_job()
    store = Store(tmp_path / "farm.db")
    store.save(changes, scheduler)
    store.save(scheduler.job_action(["job1"], "delete", "alice", 1002.0), scheduler)
    assert store.db.execute("SELECT count(*) FROM jobs").fetchone()[0] == 0
    assert store.db.execute("SELECT count(*) FROM chunks").fetchone()[0] == 0


def test_nothing_to_save_is_no_transaction(tmp_path: Path) -> None:
    scheduler, _ = farm_with_a_job()
    store = Store(tmp_path / "farm.db")
    store.save(Changes(), scheduler)
    assert store.commits == 0


def test_settings_and_tokens(tmp_path: Path) -> None:
    store = Store(tmp_path / "farm.db")
    store.set_setting("root_id", "abc")
    store.add_token("hash1", "alice", "user")
    store.close()
    store = Store(tmp_path / "farm.db")
    assert store.setting("root_id") == "abc"
    assert store.setting("missing") is None
    assert [(t.hash, t.name, t.role) for t in store.tokens()] == [("hash1", "alice", "user")]


def test_commits_leave_checkpoints_to_a_thread_and_the_wal_stays_small(tmp_path: Path) -> None:
    # A checkpoint inside a commit stalled the event loop for tens of ms; here the
    # commits never checkpoint, a thread does, and the WAL gives its space back.
    store = Store(tmp_path / "farm.db")
    assert store.db.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0
    wal = tmp_path / "farm.db-wal"
    row = "x" * 2000
    for batch in range(200):  # ~8 MB through the WAL, twice its limit
        with store.db:
            store.db.executemany(
                "INSERT INTO nodes (name, data) VALUES (?, ?)",
                [(f"n{batch}-{i}", row) for i in range(20)],
            )
    grown = wal.stat().st_size
    assert grown > WAL_SIZE_LIMIT
    deadline = time.monotonic() + 30
    tick = 0
    while store.checkpointer.checkpoints == 0 or wal.stat().st_size >= grown:
        assert time.monotonic() < deadline, "the WAL was never checkpointed"
        tick += 1
        with store.db:  # a commit after a checkpoint starts the WAL again, cut back
            store.db.execute("UPDATE nodes SET data = ? WHERE name = 'n0-0'", (str(tick),))
        time.sleep(0.05)  # poll
    assert wal.stat().st_size <= WAL_SIZE_LIMIT
    store.close()
    assert (
        Store(tmp_path / "farm.db").db.execute("SELECT COUNT(*) FROM nodes").fetchone()[0] == 4000
    )


def test_the_wal_is_cut_back_while_commits_keep_coming(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A PASSIVE checkpoint never catches up with a steady stream of commits: the
    # WAL grew by 5 MB a second in the scale benchmark until RESTART came in.
    monkeypatch.setattr(checkpointer, "RESTART_BYTES", 2 * 1024 * 1024)
    store = Store(tmp_path / "farm.db")
    wal = tmp_path / "farm.db-wal"
    row = "x" * 2000
    grown = False
    deadline = time.monotonic() + 60
    batch = 0
    while not (grown and wal.stat().st_size <= WAL_SIZE_LIMIT):
        assert time.monotonic() < deadline, "the WAL was never cut back under load"
        batch += 1
        with store.db:
            store.db.executemany(
                "INSERT OR REPLACE INTO nodes (name, data) VALUES (?, ?)",
                [(f"n{batch % 50}-{i}", row) for i in range(20)],
            )
        grown = grown or wal.stat().st_size > 2 * WAL_SIZE_LIMIT
    assert store.checkpointer.restarts >= 1
    store.close()
