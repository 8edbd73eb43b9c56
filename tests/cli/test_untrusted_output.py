"""`farm` never prints someone else's control characters raw (issue 9, item 6).

Job names, owners, node names, logs and the leader's errors may carry ESC,
newlines or bidi overrides (an old database, a renderer, an agent). Human
output shows them as escapes; ``--json`` stays exact JSON.
"""

from __future__ import annotations

import json

import httpx
import pytest

from farmtui import cli
from farmtui.protocol import ChunkRef, JobSpec, NodeView
from tests.cli.fake_leader import GOOD_TOKEN, FakeLeader

CONN = ["--leader", "http://fake", "--token", GOOD_TOKEN]
ESC_NAME = "\x1b[31mred\nsecond line"
ESC_SHOWN = r"\x1b[31mred\nsecond line"


def farm(command: str, *args: str) -> int:
    return cli.main([command, *CONN, *args])


def hostile_job(fake: FakeLeader) -> str:
    """A job whose name, owner and scene carry control characters (as from an old database)."""
    view = fake.add(
        JobSpec(name="ok", frames="1-4", chunk=2, argv=["true"], scene="/p/\x1b]0;t\x07.blend")
    )
    job = fake.jobs[view.id].job
    job.name = ESC_NAME
    job.owner = "eve\u202e"
    fake.jobs[view.id].chunks[0].node = "node\x1b[2J"
    fake.add(JobSpec(name="[b]markup[/b]", frames="1", argv=["true"]))
    return view.id


def assert_safe(out: str, rows: int) -> None:
    assert "\x1b" not in out
    assert "\x07" not in out
    assert "\u202e" not in out
    assert len(out.splitlines()) == rows


def test_farm_jobs_escapes_names_and_keeps_one_row_per_job(
    fake_leader: FakeLeader, capsys: pytest.CaptureFixture[str]
) -> None:
    hostile_job(fake_leader)
    assert farm("jobs") == 0
    out = capsys.readouterr().out
    assert_safe(out, rows=3)  # the header and two jobs
    assert ESC_SHOWN in out
    assert r"eve\u202e" in out
    assert "[b]markup[/b]" in out
    # --json is exact JSON: the name comes back as it is.
    assert farm("jobs", "--json") == 0
    listed = json.loads(capsys.readouterr().out)
    assert listed[0]["name"] == ESC_NAME


def test_farm_show_escapes_every_line(
    fake_leader: FakeLeader, capsys: pytest.CaptureFixture[str]
) -> None:
    job_id = hostile_job(fake_leader)
    assert farm("show", job_id) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out
    assert "\x07" not in out
    assert f"name      {ESC_SHOWN}" in out.splitlines()
    assert r"scene /p/\x1b]0;t\x07.blend" in out
    assert r"node\x1b[2J" in out


def test_farm_nodes_escapes_names_tags_and_versions(
    fake_leader: FakeLeader, capsys: pytest.CaptureFixture[str]
) -> None:
    fake_leader.nodes = [
        NodeView(
            name="node\n7\x1b[2J",
            state="online",
            slots=2,
            running=[ChunkRef(job_id="j", chunk=0, attempt=1)],
            tags=["gpu\x1b"],
            version="1.0\r",
        ),
        NodeView(name="[b]node8[/b]", state="offline", slots=1),
    ]
    assert farm("nodes") == 0
    out = capsys.readouterr().out
    assert_safe(out, rows=3)
    assert r"node\n7\x1b[2J" in out
    assert r"gpu\x1b" in out
    assert r"1.0\r" in out
    assert "[b]node8[/b]" in out


def test_farm_logs_escapes_unless_raw(
    fake_leader: FakeLeader, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    job_id = hostile_job(fake_leader)
    log = "Fra:1 \x1b[1mdone\x1b[0m\r\nnext\tline\n"
    handle = fake_leader.handle

    def with_log(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/logs"):
            fake_leader.requests.append(request)
            return httpx.Response(200, text=log)
        return handle(request)

    monkeypatch.setattr(fake_leader, "handle", with_log)
    assert farm("logs", job_id, "--chunk", "0") == 0
    assert capsys.readouterr().out == "Fra:1 \\x1b[1mdone\\x1b[0m\nnext\tline\n"
    assert farm("logs", job_id, "--chunk", "0", "--raw") == 0
    assert capsys.readouterr().out == log
    assert farm("logs", job_id, "--chunk", "0", "--json") == 0
    assert json.loads(capsys.readouterr().out)["log"] == log


def test_an_error_from_the_leader_is_one_escaped_line(
    fake_leader: FakeLeader, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        body = {"error": "job \x1b[2J[b]x[/b] refused\nsecond line"}
        return httpx.Response(400, json=body)

    monkeypatch.setattr(fake_leader, "handle", refuse)
    assert farm("jobs") == 1
    err = capsys.readouterr().err
    assert "\x1b" not in err
    assert err.count("\n") == 1
    assert r"job \x1b[2J[b]x[/b] refused" in err
