"""The PostgreSQL store when PostgreSQL says no: a commit that fails changes nothing.

Failures are real: a deferred constraint trigger makes the server refuse the
``COMMIT`` itself, ``pg_terminate_backend`` cuts the store's connection, and
the worker's cluster is stopped and started again. Every error is one line,
and the password in the store's URL appears in no message and no log line.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest

from farmtui.protocol import JobSpec
from server.config import LeaderConfig
from server.errors import StoreError
from server.model import Changes
from server.scheduler import Scheduler, SchedulerConfig
from server.store import open_store
from server.store_postgres import PostgresStore
from tests.helpers.leader import leader_in_process
from tests.helpers.postgres import PostgresCluster

SPEC = JobSpec(name="shot", frames="1-10", chunk=1, argv=["render"])
REFUSED = "the leader could not save the change (refused by the test): nothing was changed"


def submitted(scheduler: Scheduler, job_id: str) -> Changes:
    return scheduler.submit(job_id, SPEC, "alice", 1000.0)


@contextmanager
def refusing_commits(url: str, table: str = "jobs") -> Iterator[None]:
    """The server refuses every COMMIT that wrote ``table`` (a deferred trigger raises)."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "CREATE OR REPLACE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN RAISE EXCEPTION 'refused by the test'; END $$"
        )
        conn.execute(
            f"CREATE CONSTRAINT TRIGGER refuse AFTER INSERT OR UPDATE OR DELETE ON {table} "
            "DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION refuse()"
        )
        try:
            yield
        finally:
            conn.execute(f"DROP TRIGGER refuse ON {table}")


def job_ids(url: str) -> list[str]:
    """The jobs in the database, read beside the store."""
    with psycopg.connect(url) as conn:
        return [row[0] for row in conn.execute("SELECT id FROM jobs ORDER BY id")]


def one_line(error: StoreError, password: str) -> str:
    text = str(error)
    assert "\n" not in text
    assert password not in text
    assert password not in error.detail
    return text


def test_a_refused_commit_changes_nothing_and_the_store_goes_on(
    postgres_url: str, postgres_cluster: PostgresCluster
) -> None:
    scheduler = Scheduler(SchedulerConfig())
    store = open_store(postgres_url)
    store.save(submitted(scheduler, "first"), scheduler)
    second = submitted(scheduler, "second")
    with refusing_commits(postgres_url):
        with pytest.raises(StoreError) as caught:
            store.save(second, scheduler)
        assert one_line(caught.value, postgres_cluster.password) == REFUSED
        assert caught.value.detail == "P0001: refused by the test"
        # Nothing of it is in the database, for the store or anyone else.
        assert [job.id for job in store.load()[0]] == ["first"]
        assert job_ids(postgres_url) == ["first"]
        # Other writes still work on the same connection.
        store.set_setting("note", "still here")
    store.save(second, scheduler)
    assert job_ids(postgres_url) == ["first", "second"]
    assert open_store(postgres_url).setting("note") == "still here"


def test_a_cut_connection_is_store_error_and_the_next_call_reconnects(
    postgres_url: str, postgres_cluster: PostgresCluster
) -> None:
    scheduler = Scheduler(SchedulerConfig())
    store = open_store(postgres_url)
    store.save(submitted(scheduler, "first"), scheduler)
    with psycopg.connect(postgres_url, autocommit=True) as admin:
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE application_name = 'farmtui leader' AND datname = current_database()"
        )
    with pytest.raises(StoreError) as caught:
        store.save(submitted(scheduler, "second"), scheduler)
    text = one_line(caught.value, postgres_cluster.password)
    assert text.startswith("the leader lost its database while saving (")
    assert text.endswith("): the change may not have been saved")
    # The leader's rebuild after a failed commit: load reconnects and reads the truth.
    assert [job.id for job in store.load()[0]] == ["first"]
    store.save(submitted(scheduler, "third"), scheduler)
    assert job_ids(postgres_url) == ["first", "third"]


def test_a_stopped_server_is_one_line_without_the_password(
    postgres_url: str, postgres_cluster: PostgresCluster
) -> None:
    password = postgres_cluster.password
    scheduler = Scheduler(SchedulerConfig())
    store = open_store(postgres_url)
    store.save(submitted(scheduler, "first"), scheduler)
    postgres_cluster.stop()
    try:
        with pytest.raises(StoreError) as caught:
            store.save(submitted(scheduler, "second"), scheduler)
        one_line(caught.value, password)
        with pytest.raises(StoreError) as caught:
            store.load()
        assert one_line(caught.value, password).startswith(
            "cannot read postgresql://postgres:***@127.0.0.1:"
        )
        with pytest.raises(StoreError) as caught:
            open_store(postgres_url)
        assert one_line(caught.value, password).startswith(
            "cannot open postgresql://postgres:***@127.0.0.1:"
        )
    finally:
        postgres_cluster.start()
    assert [job.id for job in store.load()[0]] == ["first"]


def test_a_wrong_password_is_refused_without_showing_either(
    postgres_url: str, postgres_cluster: PostgresCluster
) -> None:
    wrong = postgres_url.replace(postgres_cluster.password, "not-the-password-42")
    with pytest.raises(StoreError) as caught:
        PostgresStore(wrong)
    text = one_line(caught.value, postgres_cluster.password)
    assert "not-the-password-42" not in text + caught.value.detail
    assert "password authentication failed" in text


async def test_a_leader_on_postgres_answers_503_and_keeps_memory_and_database_agreeing(
    tmp_path: Path,
    postgres_url: str,
    postgres_cluster: PostgresCluster,
    caplog: pytest.LogCaptureFixture,
) -> None:
    body: dict[str, Any] = {"name": "shot", "frames": "1-4", "chunk": 2, "argv": ["render"]}
    config = LeaderConfig(store=postgres_url, tick_interval=0.05)
    with caplog.at_level(logging.INFO, logger="farmtui"):
        async with leader_in_process(tmp_path, config) as farm, farm.http() as http:
            assert isinstance(farm.leader.store, PostgresStore)
            first = (await http.post("/api/jobs", json=body)).json()["id"]
            with refusing_commits(postgres_url):
                refused = await http.post("/api/jobs", json={**body, "name": "refused"})
                assert refused.status_code == 503
                assert refused.json() == {"error": REFUSED}
                listed = [job["id"] for job in (await http.get("/api/jobs")).json()]
                assert listed == [first]
                assert set(farm.leader.scheduler.jobs) == {first}
            assert job_ids(postgres_url) == [first]
            again = await http.post("/api/jobs", json={**body, "name": "again"})
            assert again.status_code == 201
            second = again.json()["id"]
        # The farm is in PostgreSQL, not in a farm.db beside the tokens.
        assert not (tmp_path / "data" / "farm.db").exists()
        async with leader_in_process(tmp_path, config) as farm, farm.http() as http:
            jobs = (await http.get("/api/jobs")).json()
            assert sorted(job["id"] for job in jobs) == sorted([first, second])
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert "store postgresql://postgres:***@127.0.0.1:" in logged
    assert "commit failed" in logged
    assert postgres_cluster.password not in logged
