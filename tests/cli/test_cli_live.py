"""The command line contract against a real leader subprocess (and agents, for `farm up`).

Skipped until ``server.main`` (and ``agent.main``) exist; see tests/helpers/farm.py.
"""

from __future__ import annotations

import http.server
import json
import os
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from farmtui.localfarm import free_port
from tests.helpers.farm import AgentFactory, LiveLeader, needs_agent, needs_leader, run_farm

# Real leader and agent processes, `farm up` included: the slow layer.
pytestmark = pytest.mark.slow


def submit_json(leader: LiveLeader, *args: str) -> dict[str, object]:
    done = leader.cli("submit", "--json", *args)
    assert done.returncode == 0, done.stderr
    job: dict[str, object] = json.loads(done.stdout)
    return job


@needs_leader
def test_the_leader_writes_private_tokens(farm_leader: LiveLeader) -> None:
    for name in ("admin.token", "agent.token"):
        path = farm_leader.data / name
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert path.read_text(encoding="utf-8").strip()


@needs_leader
def test_submit_jobs_show(farm_leader: LiveLeader) -> None:
    job = submit_json(
        farm_leader, "--name", "live", "--frames", "1-10", "--chunk", "3", "--priority", "20",
        "--", "sleep", "0",
    )  # fmt: skip
    job_id = job["id"]
    assert isinstance(job_id, str)
    assert job["name"] == "live"

    done = farm_leader.cli("jobs", "--json")
    assert done.returncode == 0, done.stderr
    assert job_id in [listed["id"] for listed in json.loads(done.stdout)]

    done = farm_leader.cli("jobs")
    assert done.returncode == 0
    assert "live" in done.stdout

    done = farm_leader.cli("show", job_id, "--json")
    assert done.returncode == 0, done.stderr
    detail = json.loads(done.stdout)
    # SPEC.md's contract: the job's fields at the top, as scripts read them (.state).
    for shown in (detail, detail["job"]):
        assert shown["id"] == job_id
        assert shown["name"] == "live"
        assert shown["state"] in ("queued", "rendering")
        assert shown["priority"] == 20
        assert shown["frames"] == "1-10"
    assert sorted(detail["frame_states"], key=int) == [str(f) for f in range(1, 11)]
    assert len(detail["chunks"]) == 4
    for chunk in detail["chunks"]:
        assert {"state", "node", "attempts"} <= set(chunk)

    # A unique prefix works as well as the full id.
    done = farm_leader.cli("show", job_id[:8], "--json")
    assert done.returncode == 0, done.stderr

    assert json.loads(done.stdout)["job"]["id"] == job_id

    # Pages of jobs, the page's last job named as any command takes one (by name too).
    second = submit_json(farm_leader, "--name", "next", "--", "sleep", "0")
    for after in (job_id, "live", job_id[:8]):
        done = farm_leader.cli("jobs", "--limit", "1", "--after", after, "--json")
        assert done.returncode == 0, done.stderr
        assert [listed["id"] for listed in json.loads(done.stdout)] == [second["id"]]
    done = farm_leader.cli("jobs", "--after", "nothing-like-it")
    assert (done.returncode, done.stderr) == (
        1,
        "farm jobs: no job 'nothing-like-it' on the farm\n",
    )


@needs_leader
def test_job_file_with_flag_override(farm_leader: LiveLeader, tmp_path: Path) -> None:
    jobfile = tmp_path / "job.toml"
    jobfile.write_text(
        'name = "from-file"\nframes = "1-4"\npriority = 70\nargv = ["sleep", "0"]\n'
        'timeout-max = "1h"\n',
        encoding="utf-8",
    )
    job = submit_json(farm_leader, str(jobfile), "--priority", "15")
    assert job["name"] == "from-file"
    assert job["priority"] == 15


@needs_leader
def test_control_commands(farm_leader: LiveLeader) -> None:
    job_id = str(submit_json(farm_leader, "--frames", "1-4", "--", "sleep", "0")["id"])
    done = farm_leader.cli("pause", job_id, "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["jobs"][0]["state"] == "paused"
    assert farm_leader.cli("resume", job_id).returncode == 0
    done = farm_leader.cli("set", job_id, "--timeout-max", "2h", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["spec"]["timeouts"]["max_render"] == 7200.0
    assert farm_leader.cli("priority", job_id, "10").returncode == 0
    done = farm_leader.cli("delete", job_id, "--yes", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["removed"] == [job_id]


@needs_leader
def test_jobs_and_show_say_why_a_job_is_not_rendering(farm_leader: LiveLeader) -> None:
    job_id = str(submit_json(farm_leader, "--tags", "gpupool7", "--", "sleep", "0")["id"])
    done = farm_leader.cli("jobs")
    assert done.returncode == 0, done.stderr
    assert "WHY" in done.stdout.splitlines()[0]
    assert "no node has tag gpupool7" in done.stdout
    done = farm_leader.cli("show", job_id)
    assert "why       no node has tag gpupool7" in done.stdout.splitlines()
    paused = farm_leader.cli("pause", job_id)
    assert paused.returncode == 0
    assert "changed nothing" not in paused.stdout
    done = farm_leader.cli("show", job_id, "--json")
    reason = json.loads(done.stdout)["job"]["reason"]
    assert reason["kind"] == "paused"
    assert reason["text"].startswith("paused by ")
    # Again: said, not left to the reader to notice (break round 33c).
    again = farm_leader.cli("pause", job_id)
    assert again.returncode == 0
    assert again.stdout.rstrip().endswith("(pause changed nothing)")


@needs_agent
def test_failures_lists_a_failed_attempt_with_its_error_line(
    farm_leader: LiveLeader, farm_agents: AgentFactory
) -> None:
    (agent,) = farm_agents(1, slots=1)
    script = "print('Fra:1'); print('ERROR: licence server refused'); print('bye'); exit(3)"
    job = submit_json(
        farm_leader, "--name", "lic", "--retries", "0", "--no-staging",
        "--", sys.executable, "-c", script,
    )  # fmt: skip
    job_id = str(job["id"])
    assert farm_leader.cli("logs", job_id, "--chunk", "0", "--follow").returncode == 0
    deadline = time.monotonic() + 30
    listed: list[dict[str, object]] = []
    while not listed and time.monotonic() < deadline:
        done = farm_leader.cli("failures", "--json")
        assert done.returncode == 0, done.stderr
        listed = json.loads(done.stdout)
    assert [(f["job_id"], f["node"], f["attempt"]) for f in listed] == [(job_id, agent.name, 1)]
    assert listed[0]["error_line"] == "ERROR: licence server refused"
    table = farm_leader.cli("failures").stdout
    assert "ERROR: licence server refused" in table
    assert "lic" in table
    refused = farm_leader.cli("failures", "--limit", "0")
    assert refused.returncode == 2
    assert "not between 1 and" in refused.stderr
    blocked = farm_leader.cli("block", job_id, agent.name)
    assert blocked.returncode == 0, blocked.stderr
    assert f"blocked nodes: {agent.name}" in blocked.stdout
    detail = json.loads(farm_leader.cli("show", job_id, "--json").stdout)
    assert list(detail["job"]["blocked_nodes"]) == [agent.name]
    unblocked = farm_leader.cli("unblock", job_id, agent.name, "--json")
    assert json.loads(unblocked.stdout)["blocked_nodes"] == {}
    unknown = farm_leader.cli("block", job_id, "no-such-node")
    assert unknown.returncode == 1
    assert "unknown node no-such-node" in unknown.stderr


@needs_leader
def test_unknown_job_is_an_error(farm_leader: LiveLeader) -> None:
    done = farm_leader.cli("show", "no-such-job", "--json")
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr.count("\n") == 1
    assert "no job 'no-such-job'" in done.stderr


@needs_leader
def test_wrong_token_is_an_error(farm_leader: LiveLeader) -> None:
    done = farm_leader.cli("jobs", "--json", token="not-a-token")
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr == "farm jobs: the leader refused the token\n"


@needs_leader
def test_a_console_with_a_wrong_token_says_so_in_one_line_and_stops(
    farm_leader: LiveLeader,
) -> None:
    """It opened full-screen and said "reconnecting" for ever (break round 33c)."""
    done = farm_leader.cli("console", token="not-a-token")
    assert done.returncode == 1
    assert done.stderr == "farm console: the leader refused the token\n"


@needs_leader
def test_token_create_makes_a_working_viewer_token(farm_leader: LiveLeader) -> None:
    done = farm_leader.cli("token", "create", "--role", "viewer", "--name", "ops", "--json")
    assert done.returncode == 0, done.stderr
    viewer = json.loads(done.stdout)["token"]
    assert farm_leader.cli("jobs", "--json", token=viewer).returncode == 0
    refused = farm_leader.cli("submit", "--", "true", token=viewer)
    assert refused.returncode == 1
    assert refused.stderr.count("\n") == 1


@needs_leader
def test_token_list_and_revoke_withdraw_a_token(farm_leader: LiveLeader) -> None:
    made = farm_leader.cli("token", "create", "--role", "user", "--name", "leaky", "--json")
    leaky = json.loads(made.stdout)["token"]
    listed = farm_leader.cli("token", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert leaky not in listed.stdout
    (entry,) = [t for t in json.loads(listed.stdout) if t["name"] == "leaky"]
    # What revoke takes, from the create itself: no list to search in a script.
    assert json.loads(made.stdout)["id"] == entry["id"]
    table = farm_leader.cli("token", "list")
    assert entry["id"] in table.stdout
    assert "the leader's own" in table.stdout
    done = farm_leader.cli("token", "revoke", entry["id"])
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"revoked token {entry['id']} (leaky, user)\n"
    refused = farm_leader.cli("jobs", token=leaky)
    assert refused.returncode == 1
    assert refused.stderr == "farm jobs: the leader refused the token\n"


@needs_agent
def test_farm_up_no_console_demo_renders_and_stops_everything(tmp_path: Path) -> None:
    data = tmp_path / "farm-data"
    env = dict(os.environ, XDG_CONFIG_HOME=str(tmp_path / "config"))
    for name in ("FARM_LEADER", "FARM_TOKEN", "FARM_TOKEN_FILE"):
        env.pop(name, None)
    port = free_port()
    command = [sys.executable, "-m", "farmtui", "up", "--data", str(data), "--port", str(port)]
    command += ["--agents", "2", "--no-console", "--demo"]
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        out, err = process.communicate(timeout=150)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGTERM)  # farm up stops its children on SIGTERM
        out, err = process.communicate(timeout=30)
        pytest.fail(f"farm up --demo did not finish:\n{out.decode()}\n{err.decode()}")
    assert process.returncode == 0, out.decode() + err.decode()
    frames = sorted((data / "root" / "renders" / "demo-shot-010").glob("frame_*.png"))
    assert len(frames) == 48
    assert frames[0].name == "frame_0001.png"
    config = tmp_path / "config" / "farmtui" / "config.toml"
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    assert f"http://127.0.0.1:{port}" in config.read_text(encoding="utf-8")
    assert b"stopping agents and leader" in out


@needs_agent
def test_render_follow_logs_and_show_attempts(
    farm_leader: LiveLeader, farm_agents: AgentFactory
) -> None:
    (agent,) = farm_agents(1, slots=2)
    job = submit_json(
        farm_leader, "--frames", "1-2", "--chunk", "1", "--no-staging",
        "--", sys.executable, "-c", "print('hello from frame {start}')",
    )  # fmt: skip
    job_id = str(job["id"])
    done = farm_leader.cli("logs", job_id, "--chunk", "0", "--follow")
    assert done.returncode == 0, done.stderr
    assert "hello from frame 1" in done.stdout
    detail = json.loads(farm_leader.cli("show", job_id, "--json").stdout)
    assert detail["job"]["state"] == "done"
    assert set(detail["frame_states"].values()) == {"done"}
    for chunk in detail["chunks"]:
        assert chunk["state"] == "done"
        assert chunk["node"] == agent.name
        assert [a["outcome"] for a in chunk["attempts"]] == ["done"]
    events = farm_leader.cli("logs", job_id)
    assert events.returncode == 0
    assert events.stdout.strip()
    nodes = json.loads(farm_leader.cli("nodes", "--json").stdout)
    assert [n["name"] for n in nodes] == [agent.name]
    _farm_events_read_and_follow(farm_leader, job_id, agent.name)


def _farm_events_read_and_follow(leader: LiveLeader, job_id: str, node: str) -> None:
    """``farm events``: the farm's events (the console's Monitor Log) with no console."""
    every = leader.cli("events", "--limit", "500")
    assert every.returncode == 0, every.stderr
    assert f"node {node} connected" in every.stdout
    assert f"{job_id} leader: chunk 1 attempt 1 started on {node}" in every.stdout
    mine = json.loads(leader.cli("events", "--job", job_id, "--json", "--limit", "500").stdout)
    assert mine, "the job's events"
    assert {event["job_id"] for event in mine} == {job_id}
    warned = leader.cli("events", "--level", "warn", "--limit", "500")
    assert warned.returncode == 0, warned.stderr
    assert " INFO " not in warned.stdout
    follower = subprocess.Popen(
        [sys.executable, "-m", "farmtui", "events", "--follow", "--limit", "1"],
        env={**leader.env(), "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert follower.stdout is not None
        first = follower.stdout.readline()
        assert first.strip(), "the latest event first"
        job = submit_json(leader, "--name", "followed", "--tags", "nowhere", "--", "true")
        line = follower.stdout.readline()
        while str(job["id"]) not in line:
            line = follower.stdout.readline()
            assert line, follower.stderr.read() if follower.stderr else ""
        assert "submitted: 1 frames in 1 chunks" in line, line
    finally:
        follower.send_signal(signal.SIGINT)
        assert follower.wait(timeout=30) == 130


def test_farm_up_refuses_a_busy_port(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        done = run_farm("up", "--data", str(tmp_path / "d"), "--port", str(port), "--no-console")
    assert done.returncode == 1
    assert done.stderr.endswith(
        f"port {port} is busy: another leader may be running (try --port)\n"
    )


@needs_leader
def test_show_sums_up_a_huge_job_and_pages_its_chunks(farm_leader: LiveLeader) -> None:
    job = submit_json(farm_leader, "--name", "huge", "--frames", "1-200000", "--", "sleep", "0")
    job_id = str(job["id"])

    done = farm_leader.cli("show", job_id)
    assert done.returncode == 0, done.stderr
    assert "chunks 0-49 of 200,000; next: --after 49" in done.stdout
    assert "frames    unassigned 1-200000 (200,000)" in done.stdout

    done = farm_leader.cli("show", job_id, "--chunks", "2", "--after", "49", "--json")
    assert done.returncode == 0, done.stderr
    page = json.loads(done.stdout)
    assert [chunk["index"] for chunk in page["chunks"]] == [50, 51]
    assert page["frame_states"] == {"51": "unassigned", "52": "unassigned"}

    done = farm_leader.cli("show", job_id, "--after", "-1")
    assert done.returncode == 2
    assert "--after: -1 must be at least 0" in done.stderr


class _NotAFarm(http.server.BaseHTTPRequestHandler):
    """A web server where a leader's URL was expected: an HTML 404 for everything."""

    def _page(self) -> None:
        page = b"<html><body><h1>404 Not Found</h1></body></html>"
        self.send_response(404)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(page)))
        self.end_headers()
        self.wfile.write(page)

    do_GET = do_POST = _page

    def log_message(self, format: str, *args: object) -> None:
        pass


@needs_leader
def test_a_command_given_a_web_server_before_the_leader_goes_on_to_the_leader(
    farm_leader: LiveLeader,
) -> None:
    web = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _NotAFarm)
    threading.Thread(target=web.serve_forever, daemon=True).start()
    try:
        env = farm_leader.env()
        env["FARM_LEADER"] = f"http://127.0.0.1:{web.server_address[1]},{farm_leader.url}"
        job = json.loads(
            run_farm("submit", "--json", "--frames", "1-2", "--", "true", env=env).stdout
        )
        paused = run_farm("pause", job["id"], env=env)
        assert paused.returncode == 0, paused.stderr
        assert farm_leader.client().show(job["id"]).job.state == "paused"
    finally:
        web.shutdown()
        web.server_close()


@needs_leader
def test_a_frozen_first_leader_costs_a_command_a_short_wait_not_its_timeout(
    farm_leader: LiveLeader, listening_port: tuple[int, socket.socket]
) -> None:
    """A leader that accepts connections and never answers (SIGSTOP, a hung machine)."""
    port, _ = listening_port
    env = farm_leader.env()
    env["FARM_LEADER"] = f"http://127.0.0.1:{port},{farm_leader.url}"
    began = time.monotonic()
    done = run_farm("jobs", "--json", env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
    # Without asking both at once it waited out the client's 15 s timeout first.
    assert time.monotonic() - began < 15.0
