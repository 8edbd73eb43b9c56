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


def test_a_malformed_big_message_leaves_the_collector_running() -> None:
    data = big_snapshot(1_000)[:-10]
    assert len(data) > heap.PAUSE_FROM_BYTES
    with pytest.raises(ProtocolError, match="malformed"):
        decode_leader_message(data)
    assert gc.isenabled()


class Cycle:
    def __init__(self) -> None:
        self.me = self


async def test_garbage_frozen_with_a_big_message_is_collected_soon_after(
    leader: ScriptedLeader, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cycle alive when a big message arrives, and dropped later, is still freed:
    the console tidies the frozen heap after each big message, and lets go at exit."""
    from farmtui.console.screens import painting

    monkeypatch.setattr(heap, "PAUSE_FROM_BYTES", 0)  # every message counts as big
    monkeypatch.setattr(painting, "TIDY_AFTER", 0.05)
    app = make_app(leader)
    async with app.run_test(size=(80, 24)) as pilot:
        cycle = Cycle()
        gone = weakref.ref(cycle)
        await synced(pilot, app)
        assert gc.get_freeze_count() > 0, "the snapshot is kept out of collections"
        del cycle
        gc.collect()
        leader.action("pause", ["j1"])  # the next message freezes again, then tidies
        await wait_for(pilot, lambda: gone() is None, what="the dropped cycle collected")
    assert gc.get_freeze_count() == 0
