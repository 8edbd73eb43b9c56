"""A real leader process on PostgreSQL: it renders, dies of ``kill -9``, and comes back whole.

The fault suite's farm (``tests/e2e/fault_support.py``: a leader subprocess,
agent subprocesses, a renderer that tallies every run of every frame) with the
store in the worker's throwaway PostgreSQL cluster instead of ``farm.db``.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import psycopg
import pytest

from farmtui.localfarm import free_port, stop_process
from tests.e2e.fault_support import (
    FaultFarm,
    attempt_summary,
    farm_fault_problems,
    fault_toml,
    render_chunks,
    wait_until,
)
from tests.helpers.farm import needs_agent
from tests.helpers.postgres import PostgresCluster

pytestmark = [needs_agent, pytest.mark.slow]

FRAMES = range(1, 9)


def test_a_leader_on_postgres_killed_mid_render_keeps_every_acknowledged_change(
    tmp_path: Path, postgres_url: str, postgres_cluster: PostgresCluster
) -> None:
    # leader.toml names the store: its password stays out of the command line.
    toml = fault_toml(node_timeout=8.0) + f'store = "{postgres_url}"\n'
    with FaultFarm(tmp_path / "farm", toml) as farm:
        farm.start_leader()
        farm.start_agents("node1", slots=2)
        job = farm.submit(
            farm.tally_argv(0.3),
            "--name", "on-postgres", "--frames", f"{FRAMES[0]}-{FRAMES[-1]}", "--chunk", "1",
            "--retries", "0",
        )  # fmt: skip
        farm.cli("priority", job, "30")
        wait_until(lambda: sum(farm.tally.ended().values()) >= 3, 30.0, "3 frames rendered")
        farm.kill_leader()
        farm.start_leader()
        # Restarted before its last lease ran out (issue 14), it stands by until then.
        wait_until(
            lambda: httpx.get(farm.local.url + "/healthz").json()["role"] == "active",
            30.0,
            "the restarted leader to take its lease again",
        )

        detail = farm.show(job)
        assert detail["job"]["name"] == "on-postgres"
        assert detail["job"]["priority"] == 30
        assert [c["frames"] for c in render_chunks(detail)] == [[f] for f in FRAMES]
        detail = farm.wait_job(job, "done", "failed", timeout=60.0)
        problems = farm.tally.problems(FRAMES) + farm_fault_problems(detail)
        assert not problems, "\n".join(problems) + "\n" + attempt_summary(detail)
        assert detail["job"]["state"] == "done", attempt_summary(detail)
        leader_log = (farm.local.logs / "leader.log").read_text()

    # The farm lived in PostgreSQL; no farm.db was made beside the tokens.
    assert not (tmp_path / "farm" / "data" / "farm.db").exists()
    with psycopg.connect(postgres_url) as conn:
        assert conn.execute("SELECT id FROM jobs").fetchall() == [(job,)]
    assert "store postgresql://postgres:***@127.0.0.1:" in leader_log
    assert postgres_cluster.password not in leader_log


def test_farm_leader_takes_the_store_on_its_command_line(
    tmp_path: Path, postgres_url: str, postgres_cluster: PostgresCluster
) -> None:
    port = free_port()
    leader = subprocess.Popen(
        [sys.executable, "-m", "farmtui", "leader", "--data", str(tmp_path / "data")]
        + ["--root", str(tmp_path / "root"), "--port", str(port), "--store", postgres_url],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:

        def healthy() -> bool:
            assert leader.poll() is None, "the leader exited"
            try:
                return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1.0).is_success
            except httpx.HTTPError:
                return False

        wait_until(healthy, 30.0, "the leader's /healthz")
        with psycopg.connect(postgres_url) as conn:
            names = {row[0] for row in conn.execute("SELECT name FROM tokens")}
        assert names == {"admin", "agent"}  # its first start's tokens, in PostgreSQL
    finally:
        stop_process(leader, grace=10.0)
    assert leader.stdout is not None
    output = leader.stdout.read().decode()
    assert postgres_cluster.password not in output
    assert not (tmp_path / "data" / "farm.db").exists()


@pytest.mark.parametrize(
    ("store", "said"),
    [
        (
            "mysql://farm:s3cret@db/farm",
            "unknown store mysql://...: use sqlite:PATH or postgresql://...",
        ),
        (
            "postgresql://farm:s3cret@127.0.0.1:1/farm",  # nothing listens on port 1
            "cannot open postgresql://farm:***@127.0.0.1:",
        ),
    ],
)
def test_a_store_the_leader_cannot_use_is_one_line(tmp_path: Path, store: str, said: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "farmtui", "leader", "--data", str(tmp_path / "data")]
        + ["--root", str(tmp_path / "root"), "--port", str(free_port()), "--store", store],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert done.stderr.startswith(f"farm leader: {said}")
    assert done.stderr.count("\n") == 1
    assert "s3cret" not in done.stderr
