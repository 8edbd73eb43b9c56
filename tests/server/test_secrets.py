"""No secret leaks: tokens in URLs are redacted from the log, the data folder is private."""

from __future__ import annotations

import stat
import time
from pathlib import Path

import pytest
from websockets.sync.client import connect

from server.auth import check_name
from server.errors import BadRequest
from server.main import logging_config
from server.redaction import redact
from tests.helpers.farm import LiveLeader, farm_leader, needs_leader  # noqa: F401
from tests.helpers.leader import leader_in_process


def test_redact_blots_out_every_token_in_a_url() -> None:
    line = '127.0.0.1:5 - "WebSocket /ws/console?token=s3cr3t&x=1" [accepted] TOKEN=abc'
    assert redact(line) == (
        '127.0.0.1:5 - "WebSocket /ws/console?token=<redacted>&x=1" [accepted] TOKEN=<redacted>'
    )


def test_a_percent_encoded_token_parameter_is_redacted_too() -> None:
    # Starlette decodes ?%74oken= to ?token= and accepts the token: so must the filter.
    line = '"WebSocket /ws/console?x=1&%74oken=s3cr3t" [accepted]'
    assert redact(line) == '"WebSocket /ws/console?x=1&%74oken=<redacted>" [accepted]'
    assert redact("/api/jobs?tok%65n=s3cr3t") == "/api/jobs?tok%65n=<redacted>"


def test_a_token_hidden_behind_percent_encoding_blots_out_the_whole_query() -> None:
    """``?token%3D...`` is refused by the leader, but the client did send its token."""
    line = '"WebSocket /ws/console?token%3Ds3cr3t" 401'
    assert redact(line) == '"WebSocket /ws/console?<redacted>" 401'
    assert "s3cr3t" not in redact("GET /api/jobs?x=1%26%2574oken%253Ds3cr3t HTTP/1.1")
    # In another parameter's value: not how the leader reads a token, but it was sent.
    assert redact('"WebSocket /ws/console?x=token=s3cr3t" 401') == (
        '"WebSocket /ws/console?<redacted>" 401'
    )
    assert "s3cr3t" not in redact("/ws/console?x=%2574oken%253Ds3cr3t")
    assert "s3cr3t" not in redact("/api/jobs?Token=s3cr3t")
    # Encoded queries without a token are left as they are.
    assert redact("GET /api/jobs?after=j%201&limit=5") == "GET /api/jobs?after=j%201&limit=5"


def test_every_log_handler_of_the_leader_redacts() -> None:
    config = logging_config()
    assert config["filters"]["redact"]
    assert all("redact" in handler["filters"] for handler in config["handlers"].values())


@needs_leader
def test_a_token_in_the_query_string_never_reaches_the_leader_log(
    farm_leader: LiveLeader,  # noqa: F811
) -> None:
    token = farm_leader.admin_token
    url = "ws" + farm_leader.url.removeprefix("http") + f"/ws/console?token={token}"
    with connect(url, open_timeout=10) as ws:
        ws.send('{"type": "hello", "protocol": 1}')
        ws.recv(timeout=10)
    leader_log = farm_leader.farm.logs / "leader.log"
    # The leader writes its log on a thread of its own: the line comes a moment later.
    deadline = time.monotonic() + 10
    while "/ws/console?token=<redacted>" not in (log := leader_log.read_text()):
        assert time.monotonic() < deadline, f"no redacted request line in {log!r}"
        time.sleep(0.05)
    assert token not in log


async def test_the_data_folder_and_database_are_private_whoever_made_them(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    data.mkdir(mode=0o755)
    (data / "farm.db").touch(mode=0o644)
    async with leader_in_process(tmp_path):
        assert stat.S_IMODE(data.stat().st_mode) == 0o700
        for name in ("farm.db", "farm.db-wal", "farm.db-shm"):
            path = data / name
            if path.exists():
                assert stat.S_IMODE(path.stat().st_mode) == 0o600, name


def test_a_token_name_may_not_end_in_a_newline() -> None:
    assert check_name("node7") == "node7"
    with pytest.raises(BadRequest, match="token name"):
        check_name("node7\n")
