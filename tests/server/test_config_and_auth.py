"""leader.toml, token files, the sync root id, and a restart."""

from __future__ import annotations

import stat
from pathlib import Path

import httpx
import pytest

from server.auth import hash_token
from server.config import LeaderConfig, read_config
from server.errors import ConfigError
from tests.helpers.leader import leader_in_process


def test_config_defaults_and_values(tmp_path: Path) -> None:
    assert read_config(tmp_path) == LeaderConfig()
    (tmp_path / "leader.toml").write_text(
        'retries = 5\nnode_timeout = 30.0\nwebhook = "https://hooks.example/farm"\n'
    )
    config = read_config(tmp_path)
    assert config.retries == 5
    assert config.node_timeout == 30.0
    assert config.webhook == "https://hooks.example/farm"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("retrys = 5\n", "retrys"),
        ("retries = 'five'\n", "retries"),
        ("node_timeout = -1\n", "node_timeout"),
        ("disk_reserve_mb = -1\n", "disk_reserve_mb must be 0 or more"),
        ("disk_reserve_mb = nan\n", "disk_reserve_mb must be 0 or more"),
        ("webhook = 'ftp://x'\n", "webhook"),
        ("this is not toml", "leader.toml"),
    ],
)
def test_bad_config_is_an_error(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "leader.toml").write_text(text)
    with pytest.raises(ConfigError, match=message):
        read_config(tmp_path)


async def test_first_start_writes_tokens_and_root_id_and_restart_keeps_all(
    tmp_path: Path,
) -> None:
    async with leader_in_process(tmp_path) as farm:
        for name in ("admin.token", "agent.token"):
            mode = stat.S_IMODE((farm.data / name).stat().st_mode)
            assert mode == 0o600, name
        admin = farm.admin_token
        root_id = (farm.root / ".farmtui-root").read_text().strip()
        user = farm.token("user", "alice")
        async with farm.http() as http:
            response = await http.post(
                "/api/jobs", json={"frames": "1-3", "argv": ["render"], "name": "keep me"}
            )
            job_id = response.json()["id"]
        # The database holds hashes only.
        database = b"".join(path.read_bytes() for path in farm.data.glob("farm.db*"))
        assert admin.encode() not in database
        assert user.encode() not in database
        assert hash_token(admin).encode() in database

    async with leader_in_process(tmp_path) as farm:
        assert farm.admin_token == admin
        assert (farm.root / ".farmtui-root").read_text().strip() == root_id
        assert farm.leader.root_id == root_id
        async with httpx.AsyncClient(
            base_url=farm.url, headers={"Authorization": f"Bearer {user}"}
        ) as http:
            jobs = (await http.get("/api/jobs")).json()
        assert [(j["id"], j["name"]) for j in jobs] == [(job_id, "keep me")]


@pytest.mark.parametrize(
    ("toml", "words"),
    [
        ("node_timeout = 1.0\n", "node_timeout must be at least 1.5 s"),
        ("node_timeout = 3.0\nheartbeat_interval = 1.0\n", "heartbeat_interval must be at most"),
        ("heartbeat_interval = 5.0\n", "heartbeat_interval must be at most 3 s"),
    ],
)
def test_settings_that_would_let_a_tree_outlive_its_lease_are_refused(
    tmp_path: Path, toml: str, words: str
) -> None:
    (tmp_path / "leader.toml").write_text(toml)
    with pytest.raises(ConfigError, match=words):
        read_config(tmp_path)


@pytest.mark.parametrize("value", ["nan", "inf"])
def test_durations_must_be_finite(tmp_path: Path, value: str) -> None:
    (tmp_path / "leader.toml").write_text(f"node_timeout = {value}\n")
    with pytest.raises(ConfigError, match="node_timeout must be a positive number"):
        read_config(tmp_path)
