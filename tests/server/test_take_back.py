"""A job that comes first in the queue takes back the chunks held ahead of a slot for
a job behind it: through a real leader and an agent speaking the real protocol."""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.helpers.leader import InProcessLeader
from tests.helpers.sim_agents import AssignChunk, Swarm

# Seconds a chunk of either job takes on the simulated node: far longer than the
# leader's tick (0.05 s here), which is when a waiting chunk is asked back.
RENDER = 1.0

pytestmark = pytest.mark.slow  # a few seconds of simulated renders


async def submit(leader: InProcessLeader, name: str, frames: str, priority: int) -> str:
    spec = {
        "name": name,
        "frames": frames,
        "chunk": 1,
        "priority": priority,
        "renderer": "generic",
        "argv": ["true"],
        "staging": False,
    }
    async with leader.http() as http:
        response = await http.post("/api/jobs", json=spec)
    assert response.status_code == 201, response.text
    job_id: str = response.json()["id"]
    return job_id


async def until(condition: object, within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "not in time"
        await asyncio.sleep(0.01)


async def test_a_job_submitted_ahead_starts_after_the_render_running_not_those_waiting(
    leader: InProcessLeader,
) -> None:
    short = await submit(leader, "short", "1-200", priority=50)
    async with Swarm(leader.url, leader.agent_token, 1, 1, render_seconds=RENDER) as swarm:
        agent = swarm.agents[0]
        started: list[str] = []
        start = agent.start

        def recording(message: AssignChunk) -> None:
            started.append(message.job_id)
            start(message)

        agent.start = recording  # type: ignore[method-assign]
        await until(lambda: len(agent.waiting) == 1)  # one renders, one waits its slot
        urgent = await submit(leader, "urgent", "1-2", priority=1)
        at_submit = len(started)
        await until(lambda: urgent in started)
        # The chunk rendering when it came in ends, and the urgent job has its slot:
        # the one that waited went back. (Before, that one rendered first.)
        assert started[at_submit] == urgent, started[at_submit - 1 :]
        await until(lambda: started.count(urgent) == 2)
    report = swarm.report()
    assert report.problems == []
    assert report.attempt_on_two_agents == report.rerendered == 0
    async with leader.http() as http:
        events = (await http.get(f"/api/jobs/{short}/events")).text  # the job's events.log
    assert "preempted: not started: job urgent" in events
    assert "comes first in the queue" in events
