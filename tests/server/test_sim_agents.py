"""The simulated agents of ``bench/scale.py`` against a real leader: the harness counts right.

Not a timed test: the figures live in ``bench/``. This checks that the harness
speaks the protocol well enough to finish a job, and that what it counts is
what the leader recorded.
"""

from __future__ import annotations

import asyncio

from farmtui.protocol.limits import default_prefetch
from server.config import LeaderConfig
from tests.helpers.leader import InProcessLeader
from tests.helpers.sim_agents import Swarm

CHUNKS = 30
AGENTS = 3
SLOTS = 2


async def submit(leader: InProcessLeader, frames: str) -> str:
    spec = {
        "name": "sim",
        "frames": frames,
        "chunk": 1,
        "renderer": "generic",
        "argv": ["true"],
        "staging": False,
    }
    async with leader.http() as http:
        response = await http.post("/api/jobs", json=spec)
    assert response.status_code == 201, response.text
    job_id: str = response.json()["id"]
    return job_id


async def test_simulated_agents_finish_a_job_once_per_chunk(leader: InProcessLeader) -> None:
    job_id = await submit(leader, f"1-{CHUNKS}")

    async with Swarm(leader.url, leader.agent_token, AGENTS, SLOTS) as swarm:
        async with asyncio.timeout(10):
            await swarm.wait_welcomed()
        assert await swarm.wait_completions(CHUNKS, within=10)
    report = swarm.report()

    async with leader.http() as http:
        detail = (await http.get(f"/api/jobs/{job_id}")).json()
        nodes = (await http.get("/api/nodes")).json()

    assert report.completions == report.finished_sent == report.assigned == CHUNKS
    assert report.attempt_on_two_agents == report.chunk_on_two_agents == 0
    assert report.rerendered == report.told_lost == report.stale_in_welcome == 0
    assert report.refused == []
    assert report.problems == []
    assert report.clean
    assert report.finished
    assert report.rate is not None
    assert sum(report.per_second) == CHUNKS
    assert report.heartbeat_interval == LeaderConfig().heartbeat_interval

    job = detail["job"]
    assert job["state"] == "done"
    assert job["stats"]["chunks_done"] == report.completions
    assert job["stats"]["frames_done"] == CHUNKS
    chunks = [c for c in detail["chunks"] if c["kind"] == "render"]
    assert len(chunks) == CHUNKS
    for chunk in chunks:
        assert chunk["state"] == "done"
        assert [a["outcome"] for a in chunk["attempts"]] == ["done"], chunk
    used = {a["node"] for c in chunks for a in c["attempts"]}
    assert used <= {f"sim-{i:04d}" for i in range(1, AGENTS + 1)}
    assert {n["name"] for n in nodes} >= used


async def test_a_reconnecting_agent_resends_what_was_not_acknowledged(
    leader: InProcessLeader,
) -> None:
    """A link cut before the acks arrive: the outbox goes again and nothing runs twice."""
    job_id = await submit(leader, "1-6")
    async with Swarm(leader.url, leader.agent_token, 1, 2) as swarm:
        async with asyncio.timeout(10):
            await swarm.wait_welcomed()
        agent = swarm.agents[0]
        assert await swarm.wait_completions(1, within=10)
        ws = agent.ws
        assert ws is not None
        await ws.close()
        assert await swarm.wait_completions(6, within=10)
    report = swarm.report()
    assert report.reconnects >= 1
    assert report.completions == 6
    assert report.attempt_on_two_agents == report.rerendered == 0
    async with leader.http() as http:
        job = (await http.get(f"/api/jobs/{job_id}")).json()["job"]
    assert job["state"] == "done"
    assert job["stats"]["chunks_done"] == 6


async def test_simulated_agents_take_chunks_ahead_as_the_real_agent_does(
    leader: InProcessLeader,
) -> None:
    """Short chunks are given ahead of a free slot; each waits for its slot, none is lost."""
    job_id = await submit(leader, "1-8")
    async with Swarm(leader.url, leader.agent_token, 1, 1, render_seconds=0.1) as swarm:
        agent = swarm.agents[0]
        assert agent.prefetch == default_prefetch(1)  # the real agent's default
        assert await swarm.wait_completions(8, within=20)
    report = swarm.report()
    assert agent.waited >= 1  # the leader gave a chunk while the slot was busy
    assert report.problems == []  # never more than one rendering, one waiting
    assert report.completions == 8
    assert report.attempt_on_two_agents == report.rerendered == 0
    async with leader.http() as http:
        job = (await http.get(f"/api/jobs/{job_id}")).json()["job"]
    assert job["state"] == "done"
