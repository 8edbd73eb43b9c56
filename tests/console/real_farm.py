"""A real leader for the console's tests: one ``farm leader`` process per test worker.

Console behaviour that crosses the link is tested against the leader's own
rules (moves, actions, reasons, failures), not a re-implementation of them.
The leader starts once per worker (``shared_leader``, session scope) so the
console suite stays quick; the ``farm`` fixture hands each test that leader
emptied of jobs, and stops any agent the test started::

    async def test_something(farm: RealFarm) -> None:
        job = farm.submit("shot_010", frames="1-20", chunk=5)
        app = farm.app()
        async with app.run_test(size=(80, 24)) as pilot:
            await synced(pilot, app, job.id)
            ...
            assert farm.client.show(job.id).job.state == "paused"

Jobs wait (no agent) until a test starts real agents with ``farm.agents(1)``.
Nodes stay listed (offline) after their test: a leader never forgets a node.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from farmtui.client import FarmClient
from farmtui.console.app import FarmConsole
from farmtui.console.link import Backoff
from farmtui.localfarm import Child, LocalFarm, free_port
from farmtui.protocol import JobSpec, JobView
from tests.helpers.farm import LiveLeader


@dataclass
class RealFarm:
    """The worker's leader, a REST client with the admin token, and the test's agents."""

    live: LiveLeader
    client: FarmClient
    started: list[Child] = field(default_factory=list)

    @property
    def url(self) -> str:
        return self.live.url

    @property
    def token(self) -> str:
        return self.live.admin_token

    def submit(self, name: str, frames: str = "1-10", chunk: int = 1, **spec: object) -> JobView:
        """A job, by default for the demo renderer (it renders once an agent is started)."""
        if "argv" not in spec:
            spec.setdefault("renderer", "demo")
            spec.setdefault("output", f"renders/{name}/f_####.png")
        return self.client.submit(JobSpec(name=name, frames=frames, chunk=chunk, **spec))  # type: ignore[arg-type]

    def app(self, token: str | None = None, **kwargs: object) -> FarmConsole:
        """The real console on this leader, on the real clock, with quick reconnects."""
        kwargs.setdefault("backoff", Backoff(base=0.05, cap=0.2))
        return FarmConsole(self.url, token or self.token, **kwargs)  # type: ignore[arg-type]

    def agents(self, count: int = 1, slots: int = 1, tags: Sequence[str] = ()) -> list[str]:
        """Start ``count`` real agents and wait until they are online; their node names."""
        farm = self.live.farm
        first = len(farm.agents) + 1
        children = [
            farm.start_agent(index, slots, name=f"node{index}", tags=tags)
            for index in range(first, first + count)
        ]
        self.started += children
        names = [child.name for child in children]
        farm.wait_nodes_online(names)
        return names

    def wipe(self) -> None:
        """Delete every job (archived ones too), as if the farm were new."""
        jobs = self.client.jobs(include_archived=True)
        if jobs:
            self.client.action("delete", [job.id for job in jobs])
        for node in self.client.nodes():
            if node.state == "disabled":
                self.client.set_node_enabled(node.name, True)


@pytest.fixture(scope="session")
def shared_leader(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveLeader]:
    """One leader subprocess for every real-leader console test of this worker."""
    base: Path = tmp_path_factory.mktemp("console-leader")
    farm = LocalFarm(base / "data", base / "root", port=free_port())
    try:
        farm.start_leader()
        yield LiveLeader(farm, base / "config")
    finally:
        farm.stop(grace=5.0)


@pytest.fixture
def farm(shared_leader: LiveLeader) -> Iterator[RealFarm]:
    """The worker's leader with no jobs; agents a test starts are stopped after it."""
    with shared_leader.client() as client:
        real = RealFarm(shared_leader, client)
        real.wipe()
        try:
            yield real
        finally:
            if real.started:
                shared_leader.farm.stop_agents(grace=5.0)
                shared_leader.farm.agents.clear()
            real.wipe()
