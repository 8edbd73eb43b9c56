"""The `farm` data commands end to end against the fake leader (in process)."""

from __future__ import annotations

import json

import msgspec
import pytest

from farmtui import cli
from farmtui.protocol import JobDetail, JobSpec, JobView, NodeView
from tests.cli.fake_leader import GOOD_TOKEN, FakeLeader

CONN = ["--leader", "http://fake", "--token", GOOD_TOKEN]


def farm(command: str, *args: str) -> int:
    return cli.main([command, *CONN, *args])


def test_submit_prints_the_id_or_the_job(
    fake_leader: FakeLeader, capsys: pytest.CaptureFixture[str]
) -> None:
    assert farm("submit", "--frames", "1-10", "--json", "--", "sleep", "0") == 0
    job = msgspec.json.decode(capsys.readouterr().out, type=JobView)
    assert job.spec.argv == ["sleep", "0"]
    assert farm("submit", "--frames", "1-3", "--after", job.id[:6], "--", "true") == 0
    second = capsys.readouterr().out.strip()
    assert fake_leader.jobs[second].job.spec.after == [job.id]


def test_command_after_double_dash_keeps_its_own_flags(fake_leader: FakeLeader) -> None:
    code = cli.main(
        ["submit", *CONN, "--name", "x", "--", "render", "--json", "--", "-f", "{start}"]
    )
    assert code == 0
    (detail,) = fake_leader.jobs.values()
    assert detail.job.spec.argv == ["render", "--json", "--", "-f", "{start}"]
    assert detail.job.name == "x"


def test_jobs_table_and_json(fake_leader: FakeLeader, capsys: pytest.CaptureFixture[str]) -> None:
    fake_leader.add(JobSpec(name="shot-010", frames="1-48", chunk=4, argv=["true"]))
    assert farm("jobs") == 0
    table = capsys.readouterr().out
    assert "PRI(low first)" in table
    assert "shot-010" in table
    assert "0/48" in table
    assert farm("jobs", "--json") == 0
    listed = json.loads(capsys.readouterr().out)
    assert [j["name"] for j in listed] == ["shot-010"]


def test_show_by_prefix_and_json(
    fake_leader: FakeLeader, capsys: pytest.CaptureFixture[str]
) -> None:
    job = fake_leader.add(JobSpec(name="shot", frames="1-8", chunk=4, argv=["true"]))
    assert farm("show", job.id[:6]) == 0
    text = capsys.readouterr().out
    assert job.id in text
    assert "unassigned 1-8" in text
    assert farm("show", "shot", "--json") == 0
    detail = msgspec.json.decode(capsys.readouterr().out, type=JobDetail)
    assert detail.job.id == job.id
    assert [c.frames for c in detail.chunks] == [[1, 2, 3, 4], [5, 6, 7, 8]]


def test_unknown_job_and_wrong_token_are_one_line_errors(
    fake_leader: FakeLeader, capsys: pytest.CaptureFixture[str]
) -> None:
    assert farm("show", "nope") == 1
    assert capsys.readouterr().err == "farm show: no job 'nope' on the farm\n"
    assert cli.main(["jobs", "--leader", "http://fake", "--token", "bad"]) == 1
    assert capsys.readouterr().err == "farm jobs: the leader refused the token\n"


def test_actions_on_several_jobs(
    fake_leader: FakeLeader, capsys: pytest.CaptureFixture[str]
) -> None:
    a = fake_leader.add(JobSpec(name="a", argv=["true"]))
    b = fake_leader.add(JobSpec(name="b", argv=["true"]))
    assert farm("pause", a.id, "b") == 0
    out = capsys.readouterr().out.splitlines()
    assert out == [f"{a.id}  a  paused", f"{b.id}  b  paused"]
    assert farm("delete", "--yes", "a", "--json") == 0
    assert json.loads(capsys.readouterr().out) == {"jobs": [], "removed": [a.id]}
    assert list(fake_leader.jobs) == [b.id]


def test_set_merges_into_the_current_timeouts(fake_leader: FakeLeader) -> None:
    spec = JobSpec(name="a", argv=["true"])
    spec.timeouts.min_render = 5.0
    job = fake_leader.add(spec)
    assert farm("set", job.id, "--timeout-max", "1h", "--on-timeout", "fail") == 0
    timeouts = fake_leader.jobs[job.id].job.spec.timeouts
    assert (timeouts.min_render, timeouts.max_render, timeouts.on_timeout) == (5.0, 3600.0, "fail")
    assert farm("set", job.id, "--timeout-min", "none") == 0
    assert fake_leader.jobs[job.id].job.spec.timeouts.min_render is None


def test_chunks_priority_logs_tokens(
    fake_leader: FakeLeader, capsys: pytest.CaptureFixture[str]
) -> None:
    job = fake_leader.add(JobSpec(name="a", frames="1-6", chunk=2, argv=["true"]))
    assert farm("chunks", job.id, "hold", "0-1") == 0
    assert [c.state for c in fake_leader.jobs[job.id].chunks] == ["held", "held", "queued"]
    assert farm("priority", job.id, "10") == 0
    assert fake_leader.jobs[job.id].job.priority == 10
    capsys.readouterr()
    assert farm("logs", job.id) == 0
    assert capsys.readouterr().out == f"created {job.id}\n"
    assert farm("logs", job.id, "--chunk", "2") == 0
    assert capsys.readouterr().out == "chunk 2 output\n"
    assert farm("token", "create", "--role", "viewer", "--name", "ops", "--json") == 0
    assert json.loads(capsys.readouterr().out)["token"] == "new-secret"
    assert farm("nodes") == 0
    assert "no nodes" in capsys.readouterr().out


def test_farm_jobs_finds_the_leader_through_the_environment(
    fake_leader: FakeLeader,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FARM_LEADER", "http://fake")
    monkeypatch.setenv("FARM_TOKEN", GOOD_TOKEN)
    assert cli.main(["jobs", "--json"]) == 0
    assert capsys.readouterr().out == "[]\n"
    assert cli.main(["jobs", "--token", "wrong"]) == 1


def test_farm_nodes_shows_no_readings_for_an_offline_node(
    fake_leader: FakeLeader, capsys: pytest.CaptureFixture[str]
) -> None:
    """An offline node's last CPU and memory are old news, not today's load."""
    fake_leader.nodes = [
        NodeView(name="up", state="online", slots=2, cpu_percent=42.0, memory_percent=17.0),
        NodeView(name="gone", state="offline", slots=2, cpu_percent=88.0, memory_percent=6.0),
    ]
    assert cli.main(["nodes", "--leader", "http://fake", "--token", GOOD_TOKEN]) == 0
    lines = {line.split()[0]: line.split() for line in capsys.readouterr().out.splitlines()}
    assert "42%" in lines["up"]
    assert "17%" in lines["up"]
    assert "88%" not in lines["gone"]
    assert "6%" not in lines["gone"]
