"""Agents' frames take a share of each turn of the event loop (``server.turns``)."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable

import pytest

from server.turns import LOOKING, Turns


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
        if turns.full():
            await turns.share()
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
        if turns.full():
            await turns.share()
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
        if turns.full():
            await turns.share()
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
        if turns.full():
            await turns.share()
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
