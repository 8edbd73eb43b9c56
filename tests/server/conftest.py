"""Fixtures for the leader's tests: a real leader in-process on a loopback port."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from server.config import LeaderConfig
from tests.helpers.leader import InProcessLeader, leader_in_process


@pytest.fixture
def leader_config() -> LeaderConfig:
    """Override in a test module to run the leader with other settings."""
    return LeaderConfig(tick_interval=0.05, console_updates_per_second=100.0)


@pytest.fixture
async def leader(tmp_path: Path, leader_config: LeaderConfig) -> AsyncIterator[InProcessLeader]:
    """A leader serving REST and WebSockets on 127.0.0.1:<ephemeral>, torn down after the test."""
    async with leader_in_process(tmp_path, leader_config) as farm:
        yield farm
