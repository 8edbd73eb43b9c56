"""Agents' frames take a share of each turn of the event loop (``server.turns``)."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable

import pytest

from server.turns import LOOKING, Account, Turns


def handle_a_frame_on_purpose(seconds: float) -> None:
    """A frame's work on the loop (decode, apply, answer), as CPU time."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


async def test_frames_ready_together_are_spread_over_turns_with_the_loop_free_between() -> None:
    """Twenty frames that were ready at once used to be handled in one turn of 40 ms;
    each turn now handles frames for about ``budget``, and a beat scheduled meanwhile
    runs between them."""
    loop = asyncio.get_running_loop()
    turns = Turns(loop, budget=0.008)
    turn_of: list[int] = []
    turn = 0
    beats: list[int] = []
    order: list[int] = []

    def next_turn() -> None:
        nonlocal turn
        turn += 1
        if len(turn_of) < 20:
            loop.call_soon(next_turn)

    async def frame(number: int) -> None:
        link = Account()  # each frame its own link's
        if turns.full():
            await turns.share(link)
        order.append(number)
        turn_of.append(turn)
        handle_a_frame_on_purpose(0.002)
        if number == 0:
            loop.call_soon(lambda: beats.append(turn))  # the watchdog's beat, say

    loop.call_soon(next_turn)
    await asyncio.sleep(0)
    await asyncio.gather(*(frame(n) for n in range(20)))
    per_turn = Counter(turn_of)
    assert order == list(range(20))  # first come, first served
    assert max(per_turn.values()) <= 6  # 8 ms of 2 ms frames, and the one that crossed it
    assert len(per_turn) >= 3
    assert turns.waited > 0
    assert len(beats) == 1
    assert beats[0] < max(turn_of)  # it ran before the last frames


async def test_a_quiet_turn_never_waits() -> None:
    turns = Turns(asyncio.get_running_loop(), budget=0.008)
    for _ in range(50):
        assert not turns.full()  # a frame now and then: each the first of its turn
        await asyncio.sleep(0)
    assert turns.waited == 0


async def test_the_share_starts_again_each_turn() -> None:
    clock = [0.0]
    turns = Turns(asyncio.get_running_loop(), budget=0.008, clock=lambda: clock[0])
    assert not turns.full()
    clock[0] = 0.005
    assert not turns.full()
    clock[0] = 0.010
    assert turns.full()
    await asyncio.sleep(0)  # the next turn
    assert not turns.full()


async def test_a_frame_woken_early_in_a_turn_is_not_passed_by_later_ones_forever() -> None:
    """A break round starved a real agent's reads for 40 s: woken ahead of the end of the
    previous turn's share, it found the share used up every time, while frames woken
    after that end took each new share. It now waits in line and goes within two turns."""
    loop = asyncio.get_running_loop()
    clock = [0.0]
    turns = Turns(loop, budget=0.008, clock=lambda: clock[0])
    went: list[str] = []

    async def frame(name: str, then: Callable[[], object] | None = None) -> None:
        link = Account()  # each frame its own link's
        if turns.full():
            await turns.share(link)
        went.append(name)
        clock[0] += 0.009  # each frame uses the whole share
        if then is not None:
            then()

    def newcomer(number: int) -> None:
        """Each newcomer's frame brings the next one, a turn later: a busy farm."""
        following = (lambda: newcomer(number + 1)) if number < 30 else None
        loop.create_task(frame(f"new{number}", following))

    woken = loop.create_future()

    async def early() -> None:
        await woken
        await frame("early")

    early_task = loop.create_task(early())
    await asyncio.sleep(0)

    def a_turn() -> None:
        woken.set_result(None)  # "early" runs first in the next turn...
        assert not turns.full()  # ...where the end of this frame's share runs after it
        clock[0] += 0.009
        newcomer(0)

    loop.call_soon(a_turn)
    await asyncio.wait_for(early_task, 5.0)
    assert went.index("early") <= 2, went


async def test_a_frame_whose_link_closes_while_it_waits_leaves_the_line() -> None:
    loop = asyncio.get_running_loop()
    clock = [0.0]
    turns = Turns(loop, budget=0.008, clock=lambda: clock[0])
    went: list[int] = []

    async def frame(number: int) -> None:
        link = Account()  # each frame its own link's
        if turns.full():
            await turns.share(link)
        went.append(number)
        clock[0] += 0.009  # the whole share: the next frames wait in line

    frames = [loop.create_task(frame(n)) for n in range(4)]
    await asyncio.sleep(0)
    assert went == [0]
    frames[1].cancel()  # the first in line: its link closed
    await asyncio.wait_for(asyncio.gather(*frames[2:]), 5.0)
    assert went == [0, 2, 3]
    assert turns.in_line == 0


async def test_only_the_head_of_a_long_line_looks_each_turn_and_all_go_in_order() -> None:
    """With 300 agents the line held ~290 frames, each looking for its turn every turn
    of the loop: a task step each, ~6% of the loop (c1). Beyond the first ``LOOKING``
    they now wait parked until the line reaches them."""
    loop = asyncio.get_running_loop()
    clock = [0.0]
    turns = Turns(loop, budget=0.008, clock=lambda: clock[0])
    went: list[int] = []
    steps = [0]

    async def frame(number: int) -> None:
        link = Account()  # each frame its own link's
        if turns.full():
            await turns.share(link)
        went.append(number)
        clock[0] += 0.009  # the whole share: one frame a turn

    real_sleep = asyncio.sleep

    async def counted_sleep(delay: float) -> None:
        steps[0] += 1
        await real_sleep(delay)

    frames = [loop.create_task(frame(n)) for n in range(120)]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(asyncio, "sleep", counted_sleep)
        await real_sleep(0)
        assert went == [0]
        await real_sleep(0)
        steps[0] = 0
        await real_sleep(0)  # one turn: the first LOOKING look, the rest are parked
        assert 0 < steps[0] <= LOOKING
        frames[5].cancel()  # among those looking: its link closed
        frames[100].cancel()  # a parked one
        await asyncio.wait_for(asyncio.gather(*frames, return_exceptions=True), 10.0)
    assert went == [n for n in range(120) if n not in (5, 100)]
    assert turns.in_line == 0


class FakeLink:
    """A link whose frames each take ``cost`` seconds of a fake clock, one after another."""

    def __init__(
        self, turns: Turns, clock: list[float], name: str, cost: float, answer: float = 0.0
    ) -> None:
        self.turns = turns
        self.clock = clock
        self.name = name
        self.cost = cost
        self.answer = answer  # what writing the answer to each frame costs, if anything
        self.account = Account()  # its reads'
        self.writes = Account()  # its writes' (``SendQueue``), beside its reads'
        self.used = 0.0

    async def frame(self, went: list[str], cost: float | None = None) -> None:
        """Read a frame."""
        cost = self.cost if cost is None else cost
        if self.turns.full():
            await self.turns.share(self.account)
        went.append(self.name)
        self.clock[0] += cost
        self.used += cost
        self.turns.charge(self.account, cost)

    async def write(self, went: list[str], cost: float) -> None:
        """Write a frame: an answer to a read, a Welcome, a lease renewal."""
        if self.turns.full():
            await self.turns.share(self.writes, self.account)
        went.append(f"{self.name} writes")
        self.clock[0] += cost
        self.used += cost
        self.turns.charge(self.writes, cost, self.account)

    async def flood(
        self, went: list[str], until: asyncio.Event, answers: list[str] | None = None
    ) -> None:
        while not until.is_set():
            await self.frame(went)
            if self.answer:
                await self.write([] if answers is None else answers, self.answer)
            await asyncio.sleep(0)  # its next frame arrives a turn later


@pytest.mark.parametrize("answer", [0.0, 0.00005], ids=["reads", "reads answered"])
async def test_a_quiet_links_frame_goes_ahead_of_links_that_keep_the_loop_busy(
    answer: float,
) -> None:
    """First come, first served, a healthy agent's heartbeat waited for one frame of every
    other link: thirty links of frames just under a batch (2-5 ms of decoding each) had
    its lease lapse. Its frame now goes ahead of theirs, within a turn, even when each
    of their costly frames is answered with a cheap write (a thousand heartbeats, a
    thousand ``LeaseRenewed``)."""
    loop = asyncio.get_running_loop()
    clock = [0.0]
    turns = Turns(loop, budget=0.008, clock=lambda: clock[0])
    went: list[str] = []
    done = asyncio.Event()
    floods = [FakeLink(turns, clock, f"flood{n}", 0.004, answer) for n in range(30)]
    tasks = [loop.create_task(link.flood(went, done)) for link in floods]
    quiet = FakeLink(turns, clock, "quiet", 0.0001)
    waits = []
    for _ in range(5):
        while len(went) < 200:  # noqa: ASYNC110 (the floods have the loop, turn by turn)
            await asyncio.sleep(0)
        assert turns.in_line >= 25
        went.clear()
        await quiet.frame(went)
        waits.append(went.index("quiet"))
    done.set()
    await asyncio.wait_for(asyncio.gather(*tasks), 5.0)
    # Within the frames of one turn (two frames of 4 ms), not behind thirty.
    assert max(waits) <= 3, waits


async def test_a_link_streaming_light_frames_gets_its_part_of_the_loop_beside_heavy_ones() -> None:
    """An agent streaming its renders' output beside thirty links of 4 ms frames: first
    come, first served it had one frame in thirty-one, 0.4% of the loop. Its frames
    are cheap and go first: it has at least its part, a thirty-first, and the heavy
    links share at least half of the loop."""
    loop = asyncio.get_running_loop()
    clock = [0.0]
    turns = Turns(loop, budget=0.008, clock=lambda: clock[0])
    went: list[str] = []
    done = asyncio.Event()
    heavy = [FakeLink(turns, clock, f"heavy{n}", 0.004) for n in range(30)]
    light = FakeLink(turns, clock, "light", 0.0005)
    tasks = [loop.create_task(link.flood(went, done)) for link in [*heavy, light]]
    while clock[0] < 2.0:  # noqa: ASYNC110 (two seconds of the loop, turn by turn)
        await asyncio.sleep(0)
    done.set()
    await asyncio.wait_for(asyncio.gather(*tasks), 5.0)
    assert light.used >= 0.8 * clock[0] / 31, Counter(went)
    heavy_used = [link.used for link in heavy]
    assert min(heavy_used) >= 0.5 * max(heavy_used), Counter(went)  # none starved
    assert sum(heavy_used) >= 0.5 * clock[0]  # and together at least half the loop


async def test_a_links_writes_wait_in_the_costly_line_while_its_reads_are_costly() -> None:
    """A hundred links of costly frames, each answered with a cheap write (an ``Ack`` a
    frame). Their answers waited in the cheap line, and a healthy node's ``Welcome``
    and ``LeaseRenewed`` behind as many as 129 of them: 0.9 s on a loaded leader, its
    lease lapsed, it was lost and renders it had finished were rendered again. A
    link's writes now wait in the costly line while its reads are costly."""
    loop = asyncio.get_running_loop()
    clock = [0.0]
    turns = Turns(loop, budget=0.008, clock=lambda: clock[0])
    floods = [FakeLink(turns, clock, f"flood{n}", 0.002) for n in range(40)]
    for flood in floods:
        turns.charge(flood.account, 0.002)  # each read a costly frame lately
    quiet = FakeLink(turns, clock, "quiet", 0.0001)
    went: list[str] = []
    answers = [loop.create_task(flood.write(went, 0.00005)) for flood in floods]
    welcome = loop.create_task(quiet.write(went, 0.00005))  # asked last
    assert not turns.full()  # a frame began this turn (the tasks' first steps are in it)
    clock[0] += 0.009  # and used its share up: they all wait
    await asyncio.sleep(0)
    assert turns.in_line == 41
    await asyncio.wait_for(asyncio.gather(*answers, welcome), 5.0)
    assert went.index("quiet writes") <= 1, went
    assert sorted(went) == sorted(["quiet writes", *(f"flood{n} writes" for n in range(40))])
