"""``farm migrate``: a farm moves from SQLite to PostgreSQL row for row, or not at all."""

from __future__ import annotations

import gc
import json
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from farmtui import cli
from farmtui.localfarm import free_port
from server.errors import StoreError
from server.migrate import migrate
from server.store import Store, encode_chunk, encode_job, encode_node, open_store
from tests.helpers.postgres import PostgresCluster
from tests.server.test_store import farm_with_a_job


def sqlite_farm(path: Path) -> Store:
    """A farm with a dispatched job, a node, a token and a setting, in SQLite."""
    scheduler, changes = farm_with_a_job()
    store = Store(path)
    store.save(changes, scheduler)
    store.save(scheduler.chunk_started("node1", "job1", 0, 1, 1001.0), scheduler)
    store.add_token("hash1", "alice", "admin", created=1_700_000_000.5)
    store.set_setting("root_id", "abc123")
    return store


def farm_migrate(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "farmtui", "migrate", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_a_farm_moves_to_postgres_row_for_row(tmp_path: Path, postgres_url: str) -> None:
    source = sqlite_farm(tmp_path / "farm.db")
    jobs, nodes = source.load()
    done = migrate(f"sqlite:{tmp_path / 'farm.db'}", postgres_url)
    assert done.counts == {"jobs": 1, "chunks": 2, "nodes": 1, "tokens": 1, "settings": 1}
    assert "***" in done.target
    target = open_store(postgres_url)
    # The source now says where the farm went; everything else is the same.
    assert source.setting("moved_to") == done.target
    moved = source.export_rows()
    moved.settings.remove(("moved_to", done.target))
    assert target.export_rows() == moved
    moved_jobs, moved_nodes = target.load()
    assert [encode_job(job) for job in moved_jobs] == [encode_job(job) for job in jobs]
    assert [encode_chunk(c) for c in moved_jobs[0].chunks] == [
        encode_chunk(c) for c in jobs[0].chunks
    ]
    assert [encode_node(node) for node in moved_nodes] == [encode_node(node) for node in nodes]
    assert target.tokens() == source.tokens()
    assert target.setting("root_id") == "abc123"


def test_a_target_that_holds_a_farm_is_refused_and_left_alone(
    tmp_path: Path, postgres_url: str
) -> None:
    sqlite_farm(tmp_path / "farm.db")
    migrate(f"sqlite:{tmp_path / 'farm.db'}", postgres_url)
    open_store(postgres_url).set_setting("only_there", "1")
    sqlite_farm(tmp_path / "other.db")
    with pytest.raises(StoreError) as caught:
        migrate(f"sqlite:{tmp_path / 'other.db'}", postgres_url)
    assert str(caught.value).endswith(
        "already holds a farm (1 jobs, 2 chunks, 1 nodes, 1 tokens, 2 settings): "
        "migrate into an empty database"
    )
    with psycopg.connect(postgres_url) as conn:
        assert conn.execute("SELECT count(*) FROM jobs").fetchone() == (1,)


def test_the_copy_is_all_or_nothing(tmp_path: Path, postgres_url: str) -> None:
    """A row the target refuses (here: a chunk of no job's, by a constraint) leaves it empty."""
    source = sqlite_farm(tmp_path / "farm.db")
    source.db.execute("INSERT INTO chunks (job_id, idx, data) VALUES ('job1', 99, 'x')")
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        open_store(postgres_url).close()  # the schema
        conn.execute("ALTER TABLE chunks ADD CONSTRAINT small CHECK (idx < 50)")
    with pytest.raises(StoreError, match="small"):
        migrate(f"sqlite:{tmp_path / 'farm.db'}", postgres_url)
    with psycopg.connect(postgres_url) as conn:
        for table in ("jobs", "chunks", "nodes", "tokens", "settings"):
            assert conn.execute(f"SELECT count(*) FROM {table}").fetchone() == (0,)


def test_sqlite_to_sqlite_works_too(tmp_path: Path) -> None:
    source = sqlite_farm(tmp_path / "farm.db")
    before = source.export_rows()
    migrate(str(tmp_path / "farm.db"), f"sqlite:{tmp_path / 'copy.db'}")
    assert Store(tmp_path / "copy.db").export_rows() == before


def test_farm_migrate_on_the_command_line(
    tmp_path: Path, postgres_url: str, postgres_cluster: PostgresCluster
) -> None:
    sqlite_farm(tmp_path / "farm.db").close()
    done = farm_migrate("--from", f"sqlite:{tmp_path / 'farm.db'}", "--to", postgres_url, "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["copied"] == {"jobs": 1, "chunks": 2, "nodes": 1, "tokens": 1, "settings": 1}
    assert postgres_cluster.password not in done.stdout

    sqlite_farm(tmp_path / "other.db").close()
    again = farm_migrate("--from", f"sqlite:{tmp_path / 'other.db'}", "--to", postgres_url)
    assert again.returncode == 1
    assert again.stdout == ""
    assert again.stderr.count("\n") == 1
    assert "already holds a farm" in again.stderr
    assert postgres_cluster.password not in again.stderr

    missing = farm_migrate("--from", f"sqlite:{tmp_path / 'nope.db'}", "--to", postgres_url)
    assert missing.returncode == 1
    assert missing.stderr.strip().endswith(
        f"no farm at {tmp_path / 'nope.db'}: --from names a leader's farm.db"
    )
    assert not (tmp_path / "nope.db").exists()


def test_a_moved_farm_is_refused_by_its_old_leader_and_by_a_second_migrate(
    tmp_path: Path, postgres_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A service manager restarting the old leader would make two farms of one sync root."""
    sqlite_farm(tmp_path / "farm.db")
    done = migrate(f"sqlite:{tmp_path / 'farm.db'}", postgres_url)
    argv = ["leader", "--data", str(tmp_path / "data"), "--root", str(tmp_path / "root")]
    argv += ["--store", f"sqlite:{tmp_path / 'farm.db'}", "--port", str(free_port())]
    assert cli.main(argv) == 1
    said = capsys.readouterr().err
    assert f"was moved to {done.target} by farm migrate: start the leader with --store" in said
    assert said.count("\n") == 1
    assert not (tmp_path / "data" / "admin.token").exists()
    with pytest.raises(StoreError, match="was moved to"):
        migrate(f"sqlite:{tmp_path / 'farm.db'}", f"sqlite:{tmp_path / 'again.db'}")


def test_a_farm_with_a_leader_running_on_it_is_neither_migrated_nor_run_twice(
    tmp_path: Path, postgres_url: str
) -> None:
    """What a running leader commits during the copy would be lost, and it would go on."""
    sqlite_farm(tmp_path / "farm.db").close()
    running = open_store(f"sqlite:{tmp_path / 'farm.db'}")
    running.hold()  # as a leader does while it runs
    with pytest.raises(StoreError, match="1 leader"):
        migrate(f"sqlite:{tmp_path / 'farm.db'}", postgres_url)
    with pytest.raises(StoreError, match="another leader runs on"):
        open_store(f"sqlite:{tmp_path / 'farm.db'}").hold()
    running.close()  # the leader stopped: now it may move
    failed = open_store(f"sqlite:{tmp_path / 'farm.db'}")
    failed.hold()
    del failed  # a leader that failed to start, dropped without close(): its lock goes too
    gc.collect()
    migrate(f"sqlite:{tmp_path / 'farm.db'}", postgres_url)
    # On PostgreSQL, any leader connected (active or standing by) counts.
    standby = open_store(postgres_url, lease=3.0, holder="holder-s")
    with pytest.raises(StoreError, match="1 leader"):
        migrate(postgres_url, f"sqlite:{tmp_path / 'back.db'}")
    standby.close()
