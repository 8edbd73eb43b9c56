"""Every `farm` error is one line, and a refused start leaves nothing behind."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import Any

import pytest

from farmtui import cli
from farmtui.localfarm import free_port
from farmtui.protocol import JobSpec
from tests.cli.fake_leader import GOOD_TOKEN, FakeLeader
from tests.helpers.small_disk import fill, small_disk


def one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    out, err = capsys.readouterr()
    assert out == ""
    assert err.count("\n") == 1, err
    return err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["leader", "--port", "99999"], "port 99999 is not between 1 and 65535"),
        (["leader", "--port", "0"], "port 0 is not between 1 and 65535"),
        (["leader", "--port", "http"], "port 'http' is not a whole number"),
        (["up", "--port", "-1"], "port -1 is not between 1 and 65535"),
        (["up", "--slots", "0"], "--slots: 0 must be at least 1"),
        (["up", "--slots", "257"], "--slots: 257 is more than 256"),
        (["agent", "--leader", "http://127.0.0.1:1", "--token", "t", "--slots", "0"], "--slots"),
        (["agent", "--leader", "http://127.0.0.1:1", "--token", "t", "--prefetch", "65"], "65"),
    ],
)
def test_bad_numbers_for_the_processes_are_one_line_usage_errors(
    argv: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data"
    extra = ["--data", str(data), "--root", str(tmp_path / "root")] if argv[0] == "leader" else []
    if argv[0] == "up":
        extra = ["--data", str(data), "--no-console"]
    with pytest.raises(SystemExit) as stopped:
        cli.main([*argv, *extra])
    assert stopped.value.code == 2
    assert message in one_line_error(capsys)
    assert not data.exists()  # no tokens, no database


@pytest.mark.parametrize(
    "url", ["http://[::1", "http://leader1:99999", "leader1:7878", "http://a b"]
)
def test_a_malformed_advertised_url_is_one_line_and_writes_no_tokens(
    url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data"
    argv = ["leader", "--data", str(data), "--root", str(tmp_path / "root"), "--advertise", url]
    assert cli.main(argv) == 1
    assert "must look like http://host:port or https://host:port" in one_line_error(capsys)
    assert not data.exists()


def test_a_second_farm_on_a_sync_root_is_refused_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two farms rendering into one root would each clean up the other's files."""
    root = tmp_path / "root"
    root.mkdir()
    (root / ".farmtui-root").write_text("0123abcd\n")  # another farm's
    data = tmp_path / "data"
    argv = ["leader", "--data", str(data), "--root", str(root), "--port", str(free_port())]
    assert cli.main(argv) == 1
    said = one_line_error(capsys)
    assert f"the sync root {root} belongs to another farm (id 0123abcd)" in said
    assert f"remove {root / '.farmtui-root'}" in said
    assert not (data / "admin.token").exists()
    assert (root / ".farmtui-root").read_text() == "0123abcd\n"


def test_a_sqlite_store_in_a_missing_folder_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = tmp_path / "no" / "such" / "farm.db"
    argv = ["leader", "--data", str(tmp_path / "data"), "--root", str(tmp_path / "root")]
    argv += ["--store", f"sqlite:{store}", "--port", str(free_port())]
    assert cli.main(argv) == 1
    assert f"the folder {store.parent} does not exist" in one_line_error(capsys)
    assert not (tmp_path / "data" / "admin.token").exists()


def test_a_busy_port_is_one_line_and_writes_no_tokens(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        data = tmp_path / "data"
        argv = [
            "leader",
            "--data",
            str(data),
            "--root",
            str(tmp_path / "root"),
            "--port",
            str(port),
        ]
        assert cli.main(argv) == 1
    err = one_line_error(capsys)
    assert err == (
        f"farm leader: port {port} on 127.0.0.1 is in use: "
        "is another leader running? (try --port)\n"
    )
    assert not data.exists()


def test_an_unknown_host_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["leader", "--data", str(tmp_path / "d"), "--root", str(tmp_path / "r")]
    assert cli.main([*argv, "--host", "no-such-host.invalid"]) == 1
    assert one_line_error(capsys).startswith("farm leader: cannot listen on no-such-host.invalid: ")


def test_logs_follow_json_prints_json_lines(
    fake_leader: FakeLeader, capsys: pytest.CaptureFixture[str]
) -> None:
    job = fake_leader.add(JobSpec(name="a", frames="1-2", argv=["true"]), state="done")
    conn = ["--leader", "http://fake", "--token", GOOD_TOKEN]
    assert cli.main(["logs", *conn, job.id, "--follow", "--json", "--chunk", "1"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert lines == [
        {"job_id": job.id, "chunk": 1, "log": "chunk 1 output\n", "restarted": False},
        {"job_id": job.id, "chunk": 1, "state": "done"},
    ]


def test_logs_follow_of_a_chunk_that_does_not_exist_is_refused(
    fake_leader: FakeLeader, capsys: pytest.CaptureFixture[str]
) -> None:
    job = fake_leader.add(JobSpec(name="a", frames="1-2", argv=["true"]))
    conn = ["--leader", "http://fake", "--token", GOOD_TOKEN]
    assert cli.main(["logs", *conn, job.id, "--follow", "--chunk", "99"]) == 2
    assert one_line_error(capsys) == f"farm logs: job {job.id} has no chunk 99 (it has 2)\n"


def test_logs_follow_waits_for_a_leader_that_restarts(
    fake_leader: FakeLeader, capsys: pytest.CaptureFixture[str]
) -> None:
    job = fake_leader.add(JobSpec(name="a", frames="1-2", argv=["true"]), state="rendering")
    answer = fake_leader.handle
    logs_read = 0
    outage = 3  # requests refused once the log was read, as by a restarting leader

    def restarting(request: Any) -> Any:
        nonlocal logs_read, outage
        if logs_read and outage:
            outage -= 1
            if not outage:
                fake_leader.jobs[job.id].job.state = "done"  # finished while it was away
            raise ConnectionRefusedError(111, "Connection refused")
        logs_read += request.url.path.endswith("/logs")
        return answer(request)

    fake_leader.handle = restarting  # type: ignore[method-assign]
    conn = ["--leader", "http://fake", "--token", GOOD_TOKEN, "--interval", "0.01"]
    assert cli.main(["logs", *conn, job.id, "--follow", "--chunk", "1"]) == 0
    captured = capsys.readouterr()
    assert outage == 0
    assert captured.out == "chunk 1 output\n"
    assert "connection refused; still following" in captured.err


def test_an_agent_whose_state_disk_is_full_says_so_in_one_line(tmp_path: Path) -> None:
    with small_disk(tmp_path / "state", "64k") as state:
        fill(state / "filler")
        argv = ["agent", "--leader", "http://127.0.0.1:1", "--token", "t", "--name", "n1"]
        with pytest.raises(SystemExit) as stopped:
            cli.main([*argv, "--state", str(state / "n1")])
        said = str(stopped.value.code)
        assert "\n" not in said
        assert f"cannot keep the outbox in {state / 'n1'}: No space left on device" in said


def test_an_agent_name_with_an_escape_is_refused_before_anything_prints_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """It was written raw to the agent's log and terminal, then refused by the leader."""
    argv = ["agent", "--leader", "http://127.0.0.1:1", "--token", "t", "--name", "x\x1b[31m"]
    with pytest.raises(SystemExit) as stopped:
        cli.main([*argv, "--state", str(tmp_path / "state"), "--staging", str(tmp_path / "s")])
    said = str(stopped.value.code)
    assert said.startswith("farm agent: bad node name 'x\\x1b[31m'"), said
    assert "\x1b" not in said + capsys.readouterr().err
    assert not (tmp_path / "state").exists()


def test_an_agent_given_its_token_on_the_command_line_is_warned_and_a_bad_render_user_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["agent", "--leader", "http://127.0.0.1:1", "--token", "t", "--name", "n1"]
    argv += ["--state", str(tmp_path / "state"), "--staging", str(tmp_path / "staging")]
    with pytest.raises(SystemExit) as stopped:
        cli.main([*argv, "--render-user", "no-such-user-here"])
    said = str(stopped.value.code)
    if os.geteuid() == 0:
        assert said == "farm agent: --render-user no-such-user-here: no such user on this machine"
    else:
        assert said.startswith("farm agent: --render-user no-such-user-here needs the agent to")
    # ps shows every process's command line to every user of the machine.
    assert capsys.readouterr().err == (
        "farm agent: --token shows the token to every user of this machine (ps); "
        "--token-file F or FARM_TOKEN keep it private\n"
    )
