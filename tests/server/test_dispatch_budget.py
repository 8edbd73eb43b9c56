"""A dispatch pass assigns at most ``ASSIGN_BUDGET`` chunks; the next pass follows by itself.

An idle farm of hundreds of nodes given a big job was filled in one pass: 2,400
assignments held the event loop for ~120 ms of the pass alone (600 nodes),
then as long again to commit and announce them.
"""

from __future__ import annotations

from functools import partial

import pytest

from farmtui.protocol import AgentHello, JobSpec
from server.agent_link import AgentLink
from server.config import LeaderConfig
from server.model import Changes
from server.scheduler import ASSIGN_BUDGET, Scheduler
from tests.helpers.leader import InProcessLeader, wait_for

NODES, SLOTS = 200, 4  # 800 slots: more than one pass


class FakeWebSocket:
    """What a link's send queue writes to; an agent that never answers."""

    def __init__(self) -> None:
        self.frames: list[str] = []

    async def send_text(self, text: str) -> None:
        self.frames.append(text)

    async def close(self, code: int = 1000, reason: str = "") -> None:
        pass


def connect(scheduler: Scheduler, hello: AgentHello, now: float) -> Changes:
    return scheduler.node_connected(hello, now)[0]


@pytest.fixture
def leader_config() -> LeaderConfig:
    return LeaderConfig(tick_interval=3600.0)  # no tick: the passes follow by themselves


async def test_an_idle_farm_larger_than_a_pass_is_filled_in_several_turns(
    leader: InProcessLeader,
) -> None:
    core = leader.leader
    assert SLOTS * NODES > ASSIGN_BUDGET
    for index in range(NODES):
        hello = AgentHello(name=f"n{index:03d}", slots=SLOTS, agent_id=f"id{index}", batches=True)
        core.run(partial(connect, core.scheduler, hello), dispatch=False)
        link = AgentLink(core, FakeWebSocket(), hello.name, batches=True)  # type: ignore[arg-type]
        core.agents[hello.name] = link
    spec = JobSpec(name="big", frames="1-2000", chunk=1, argv=["true"])

    first = core.run(lambda now: core.scheduler.submit("big", spec, "test", now))

    assert len(first.assignments) == ASSIGN_BUDGET, "one pass assigned past its budget"

    def running() -> int:
        return sum(len(node.running) for node in core.scheduler.nodes.values())

    await wait_for(lambda: running() == NODES * SLOTS, what="every slot filled")
    assert not core.scheduler.cut_short
