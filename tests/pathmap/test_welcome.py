"""A node of another OS is told the sync root as it mounts it."""

from __future__ import annotations

from pathlib import Path

from server.config import LeaderConfig
from server.path_mapping import PathRule
from tests.helpers.fake_agent import FakeAgent
from tests.helpers.leader import leader_in_process


async def test_the_welcome_names_the_sync_root_as_the_nodes_os_mounts_it(tmp_path: Path) -> None:
    root = str((tmp_path / "root").resolve())
    rule = PathRule(source=root, to={"darwin": "/Volumes/projects", "windows": "P:\\projects"})
    async with leader_in_process(tmp_path, LeaderConfig(path_map=[rule])) as farm:
        async with FakeAgent.connect(farm.ws_url, farm.agent_token, "mac", os="darwin") as mac:
            assert mac.welcome.sync_root == "/Volumes/projects"
        async with FakeAgent.connect(farm.ws_url, farm.agent_token, "win", os="windows") as win:
            assert win.welcome.sync_root == "P:\\projects"
        async with FakeAgent.connect(farm.ws_url, farm.agent_token, "tux", os="linux") as tux:
            assert tux.welcome.sync_root == root
