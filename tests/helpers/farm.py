"""Real farm processes for tests: a leader subprocess with its tokens, and agents.

Use from a conftest (or a test module) by importing the fixtures::

    from tests.helpers.farm import farm_agents, farm_leader  # noqa: F401

    @needs_leader
    def test_something(farm_leader: LiveLeader) -> None:
        with farm_leader.client() as farm:
            ...

    @needs_agent
    def test_render(farm_leader: LiveLeader, farm_agents: AgentFactory) -> None:
        agents = farm_agents(2, slots=1)        # started and online
        ...

Everything is started with ``python -m farmtui leader|agent`` on a free port
under ``tmp_path``; readiness is polled with a deadline (never a sleep), and
teardown always stops every child (SIGTERM, grace, SIGKILL of the group).
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import pytest

from farmtui.client import FarmClient
from farmtui.localfarm import Child, LocalFarm, free_port


def module_available(name: str) -> bool:
    """True when ``name`` can be imported (the leader/agent may not be written yet)."""
    try:
        return importlib.util.find_spec(name) is not None
    except ImportError:
        return False


needs_leader = pytest.mark.skipif(
    not module_available("server.main"), reason="the leader (server.main) is not there yet"
)
needs_agent = pytest.mark.skipif(
    not (module_available("server.main") and module_available("agent.main")),
    reason="the leader (server.main) or the agent (agent.main) is not there yet",
)


def run_farm(
    *args: str,
    env: dict[str, str] | None = None,
    input: str | None = None,
    timeout: float = 60.0,
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m farmtui ARGS`` and capture its output (text)."""
    return subprocess.run(
        [sys.executable, "-m", "farmtui", *args],
        env=env,
        input=input,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@dataclass
class LiveLeader:
    """A running leader subprocess and what a test needs to talk to it."""

    farm: LocalFarm
    config_home: Path

    @property
    def url(self) -> str:
        return self.farm.url

    @property
    def data(self) -> Path:
        return self.farm.data

    @property
    def root(self) -> Path:
        return self.farm.root

    @property
    def admin_token(self) -> str:
        return self.farm.admin_token()

    @property
    def agent_token(self) -> str:
        return self.farm.agent_token_file.read_text(encoding="utf-8").strip()

    def client(self, token: str | None = None) -> FarmClient:
        """A REST client with the admin token (or ``token``)."""
        return FarmClient(self.url, token or self.admin_token)

    def env(self, token: str | None = None) -> dict[str, str]:
        """Environment for ``farm`` subprocesses: this leader, this token, no user config."""
        env = dict(os.environ)
        env["FARM_LEADER"] = self.url
        env["FARM_TOKEN"] = token or self.admin_token
        env.pop("FARM_TOKEN_FILE", None)
        env["XDG_CONFIG_HOME"] = str(self.config_home)
        return env

    def cli(
        self, *args: str, token: str | None = None, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run ``farm ARGS`` against this leader."""
        return run_farm(*args, env=self.env(token), input=input)


class AgentFactory(Protocol):
    def __call__(
        self, count: int = 1, slots: int = 1, tags: Sequence[str] = (), wait: bool = True
    ) -> list[Child]: ...


@pytest.fixture
def farm_leader(tmp_path: Path) -> Iterator[LiveLeader]:
    """A leader subprocess on a free port, data and sync root under ``tmp_path``."""
    farm = LocalFarm(tmp_path / "data", tmp_path / "root", port=free_port())
    try:
        farm.start_leader()
        yield LiveLeader(farm, tmp_path / "config")
    finally:
        farm.stop(grace=5.0)


@pytest.fixture
def farm_agents(farm_leader: LiveLeader) -> Iterator[AgentFactory]:
    """Start N agent subprocesses on ``farm_leader``; waits until they are online."""
    farm = farm_leader.farm

    def start(
        count: int = 1, slots: int = 1, tags: Sequence[str] = (), wait: bool = True
    ) -> list[Child]:
        first = len(farm.agents) + 1
        started = [
            farm.start_agent(index, slots, name=f"test-agent{index}", tags=tags)
            for index in range(first, first + count)
        ]
        if wait:
            farm.wait_nodes_online([child.name for child in started])
        return started

    try:
        yield start
    finally:
        farm.stop_agents(grace=5.0)
