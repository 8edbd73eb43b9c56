"""A big farm's snapshot and the garbage collector (farmtui.console.heap): decoded
without collections, kept out of later ones, and nothing leaked for it."""

from __future__ import annotations

import gc
import weakref

import pytest

from farmtui.console import heap
from farmtui.console.link import decode_leader_message
from farmtui.protocol import JobStats, JobView, ProtocolError, Snapshot, encode
from tests.console.conftest import make_app, synced, wait_for
from tests.console.scripted_leader import ScriptedLeader


def big_snapshot(jobs: int) -> bytes:
    return encode(
        Snapshot(
            user="alice",
            role="admin",
            nodes=[],
            jobs=[
                JobView(
                    id=f"j{i}",
                    name=f"shot_{i:05d}",
                    owner="alice",
                    state="queued",
                    priority=50,
                    position=i,
                    frames="1-100",
                    chunk=10,
                    renderer="blender",
                    stats=JobStats(frames_total=100),
                )
                for i in range(jobs)
            ],
        )
    )


def test_a_big_snapshot_decodes_without_a_collection() -> None:
    data = big_snapshot(5_000)
    passes: list[str] = []

    def count(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            passes.append(phase)

    gc.callbacks.append(count)
    try:
        message = decode_leader_message(data)
    finally:
        gc.callbacks.remove(count)
    assert isinstance(message, Snapshot)
    assert len(message.jobs) == 5_000
    assert passes == []
    assert gc.isenabled()
    assert gc.get_freeze_count() > 0, "kept out of collections for the first paint"
    heap.let_go()


def test_a_malformed_big_message_leaves_the_collector_running() -> None:
    data = big_snapshot(1_000)[:-10]
    assert len(data) > heap.PAUSE_FROM_BYTES
    with pytest.raises(ProtocolError, match="malformed"):
        decode_leader_message(data)
    assert gc.isenabled()


class Cycle:
    def __init__(self) -> None:
        self.me = self


async def test_a_cycle_dropped_while_frozen_is_freed_at_the_next_settle(
    leader: ScriptedLeader, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The console freezes its heap after a big message; garbage frozen with it is
    still collected: a cycle alive then, and dropped later, is freed by the next settle."""
    from farmtui.console.screens import painting

    monkeypatch.setattr(heap, "PAUSE_FROM_BYTES", 0)  # every message counts as big
    monkeypatch.setattr(heap, "SETTLE_EVERY", 0.0)
    monkeypatch.setattr(painting, "SETTLE_AFTER", 0.05)
    app = make_app(leader)
    async with app.run_test(size=(80, 24)) as pilot:
        cycle = Cycle()
        gone = weakref.ref(cycle)
        await synced(pilot, app)
        del cycle
        leader.action("pause", ["j1"])  # a message: frozen again, then settled
        await wait_for(pilot, lambda: gone() is None, what="the dropped cycle freed")
    assert gc.get_freeze_count() == 0, "the console lets go of everything when it closes"
