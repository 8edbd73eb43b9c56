"""The leader's full garbage collections walk only what is new (``server.heap``)."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from server.heap import WHOLE_WALK_EVERY, FrozenHeap


class Cell:
    """Something that can be in a reference cycle and be watched dying."""

    def __init__(self) -> None:
        self.other: object = None


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def heap(clock: Clock) -> Iterator[FrozenHeap]:
    threshold = gc.get_threshold()
    keeper = FrozenHeap(clock)
    keeper.install()
    try:
        yield keeper
    finally:
        keeper.uninstall()
        gc.set_threshold(*threshold)


def test_what_survived_a_full_collection_is_not_walked_by_the_next(heap: FrozenHeap) -> None:
    """300 agents' links and a big farm lived through every full collection, and each
    walked them all again: 110-130 ms of stalled leader every few seconds."""
    links = [[index] for index in range(20_000)]  # long-lived, tracked by the collector
    gc.collect()
    assert len(gc.get_objects(2)) < 1_000, "the survivors were walked again"
    assert links[-1] == [19_999]
    assert heap.collections >= 1


def test_what_was_in_flight_at_a_young_collection_is_not_walked_by_the_next_full_one(
    heap: FrozenHeap,
) -> None:
    """With 300 agents ~2,000 reports are in flight at any moment; those that outlived the
    middle generation waited for the next full collection, a 40-80 ms stall every few
    seconds."""
    in_flight = [[index] for index in range(20_000)]
    gc.collect(1)  # they outlive a collection of the middle generation
    assert len(gc.get_objects(2)) < 1_000, "the next full collection would walk them"
    assert in_flight[-1] == [19_999]


def test_a_young_collection_does_not_freeze_while_a_walk_of_everything_is_due(
    heap: FrozenHeap, clock: Clock
) -> None:
    first, second = Cell(), Cell()
    first.other, second.other = second, first
    dead = weakref.ref(first)
    gc.collect()  # the cycle is alive: frozen
    del first, second
    grown = [[index] for index in range(2 * gc.get_freeze_count() + 1_000)]
    clock.now += WHOLE_WALK_EVERY
    gc.collect()  # the frozen heap more than doubled: the walk of everything is due
    gc.collect(1)  # a young collection meanwhile must not freeze the heap again
    gc.collect()
    assert dead() is None, "the dead cycle was frozen again before the walk"
    assert len(grown) > 0


def test_a_dead_cycle_that_was_frozen_is_freed_once_the_heap_doubled(
    heap: FrozenHeap, clock: Clock
) -> None:
    """Frozen objects in a reference cycle die only when the collector walks them again:
    it does once the frozen heap has doubled (and minutes after the last such walk, so
    a farm filling up after a start is not walked again and again)."""
    first, second = Cell(), Cell()
    first.other, second.other = second, first
    dead = weakref.ref(first)
    gc.collect()  # the cycle is alive: frozen
    del first, second
    gc.collect()
    assert dead() is not None, "frozen, the cycle is not walked"

    grown = [[index] for index in range(2 * gc.get_freeze_count() + 1_000)]
    gc.collect()
    gc.collect()
    assert dead() is not None, "the whole heap was walked again moments after the last time"

    clock.now += WHOLE_WALK_EVERY
    gc.collect()  # the frozen heap more than doubled: the next collection walks it all
    gc.collect()
    assert dead() is None, "the dead cycle was never freed"
    assert heap.whole_walks == 1
    assert len(grown) > 0


def test_a_leader_active_again_lets_go_of_the_farm_it_froze_before(heap: FrozenHeap) -> None:
    """A PostgreSQL leader that stepped down and took over again froze its new farm
    beside the old one, which nothing walked again: a farm's memory (and its log
    writer's pipe) per takeover."""
    old_farm = Cell()
    old_farm.other = Cell()
    old_farm.other.other = old_farm  # a cycle: only the collector frees it
    gone = weakref.ref(old_farm)
    heap.install()  # the first activation froze it, alive
    del old_farm  # stepped down: nothing refers to it now
    heap.install()  # active again
    assert gone() is None
