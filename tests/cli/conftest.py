"""Fixtures for the CLI tests: an isolated user config, a fake leader, real processes."""

from __future__ import annotations

import argparse
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from farmtui import config
from farmtui.cli import shared
from farmtui.client import FarmClient
from tests.cli.fake_leader import FakeLeader
from tests.helpers.farm import farm_agents, farm_leader  # noqa: F401


@pytest.fixture(autouse=True)
def isolated_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No test reads or writes the real user's config or sees their FARM_* variables."""
    home = tmp_path / "xdg"
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home))
    for name in ("FARM_LEADER", "FARM_TOKEN", "FARM_TOKEN_FILE"):
        monkeypatch.delenv(name, raising=False)
    return home / "farmtui" / "config.toml"


@pytest.fixture
def fake_leader(monkeypatch: pytest.MonkeyPatch) -> FakeLeader:
    """In-process CLI calls talk to a FakeLeader (config resolution still runs for real)."""
    fake = FakeLeader()

    def connect(args: argparse.Namespace) -> FarmClient:
        conn = config.resolve(args.leader, args.token, args.token_file)
        return FarmClient(conn.leader, conn.token, transport=fake.transport())

    monkeypatch.setattr(shared, "connect", connect)
    return fake


@pytest.fixture
def listening_port() -> Iterator[tuple[int, socket.socket]]:
    """A port that accepts TCP connections but never answers: shows whether anyone called."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        server.setblocking(False)
        yield server.getsockname()[1], server
