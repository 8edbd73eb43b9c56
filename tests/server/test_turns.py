"""Agents' frames take a share of each turn of the event loop (``server.turns``)."""

from __future__ import annotations

import asyncio
import time
from collections import Counter

from server.turns import Turns


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

    def next_turn() -> None:
        nonlocal turn
        turn += 1
        if len(turn_of) < 20:
            loop.call_soon(next_turn)

    async def frame(number: int) -> None:
        if turns.full():
            await turns.share()
        turn_of.append(turn)
        handle_a_frame_on_purpose(0.002)
        if number == 0:
            loop.call_soon(lambda: beats.append(turn))  # the watchdog's beat, say

    loop.call_soon(next_turn)
    await asyncio.sleep(0)
    await asyncio.gather(*(frame(n) for n in range(20)))
    per_turn = Counter(turn_of)
    assert len(turn_of) == 20
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
