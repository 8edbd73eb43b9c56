"""The outbox numbers, persists and forgets messages the way the leader acknowledges them."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest

import agent.outbox as outbox_module
from agent.outbox import COMPACT_AFTER_LINES, Outbox, is_reliable
from farmtui.protocol import (
    ChunkFinished,
    ChunkOutput,
    ChunkStarted,
    FramesWritten,
    Heartbeat,
)


def _started(chunk: int) -> ChunkStarted:
    return ChunkStarted(job_id="j", chunk=chunk, attempt=1, pid=100 + chunk)


def test_messages_are_numbered_in_order(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "outbox.jsonl")
    seqs = [outbox.add(_started(n)).seq for n in range(3)]
    assert seqs == [1, 2, 3]
    assert [m.seq for m in outbox.pending()] == [1, 2, 3]


def test_ack_drops_everything_up_to_seq(tmp_path: Path) -> None:
    path = tmp_path / "outbox.jsonl"
    outbox = Outbox(path)
    for n in range(4):
        outbox.add(_started(n))
    outbox.ack(2)
    assert [m.seq for m in outbox.pending()] == [3, 4]
    assert [m.seq for m in Outbox(path).pending()] == [3, 4]
    outbox.ack(1)  # an old ack changes nothing
    assert [m.seq for m in outbox.pending()] == [3, 4]


def test_the_file_is_compacted_as_it_grows(tmp_path: Path) -> None:
    path = tmp_path / "outbox.jsonl"
    outbox = Outbox(path)
    for n in range(5 * COMPACT_AFTER_LINES):
        outbox.ack(outbox.add(_started(n)).seq)
    assert len(path.read_bytes().splitlines()) <= COMPACT_AFTER_LINES
    assert Outbox(path).pending() == []
    assert Outbox(path).add(_started(0)).seq == 5 * COMPACT_AFTER_LINES + 1


def test_a_restart_keeps_unacked_messages_and_the_numbering(tmp_path: Path) -> None:
    path = tmp_path / "outbox.jsonl"
    first = Outbox(path)
    first.add(_started(1))
    first.add(FramesWritten(job_id="j", chunk=1, attempt=1, frames=[1, 2], staged=True))
    first.add(ChunkFinished(job_id="j", chunk=1, attempt=1, outcome="done", exit_status="0"))
    first.ack(1)

    second = Outbox(path)
    pending = second.pending()
    assert [type(m).__name__ for m in pending] == ["FramesWritten", "ChunkFinished"]
    assert [m.seq for m in pending] == [2, 3]
    assert second.add(_started(2)).seq == 4
    second.ack(4)
    assert Outbox(path).pending() == []
    assert Outbox(path).add(_started(3)).seq == 5, "numbers keep growing after a full ack"


def test_a_torn_last_line_is_skipped(tmp_path: Path) -> None:
    path = tmp_path / "outbox.jsonl"
    outbox = Outbox(path)
    outbox.add(_started(1))
    with path.open("ab") as file:
        file.write(b'{"type":"chunk_started","seq":2,"job_')
    reopened = Outbox(path)
    assert [m.seq for m in reopened.pending()] == [1]
    reopened.add(_started(2))  # lands on a line of its own, after the torn one
    assert [m.seq for m in Outbox(path).pending()] == [1, 2]


def test_an_ack_beyond_our_numbers_moves_the_counter(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "outbox.jsonl")
    outbox.ack(57)
    assert outbox.add(_started(1)).seq == 58


def test_which_messages_are_reliable() -> None:
    assert is_reliable(_started(1))
    assert not is_reliable(Heartbeat())
    assert not is_reliable(ChunkOutput(job_id="j", chunk=1, attempt=1, lines=["x"]))


async def test_one_fsync_on_a_thread_covers_every_message_added_before_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    disk = threading.Event()  # a slow disk, released by the test
    synced: list[int] = []

    def slow_fsync(fd: int) -> None:
        disk.wait(30)
        synced.append(fd)

    monkeypatch.setattr(outbox_module.os, "fsync", slow_fsync)
    outbox = Outbox(tmp_path / "outbox.jsonl")
    for chunk in range(3):
        outbox.add(_started(chunk))
    waiting = [asyncio.create_task(outbox.synced()) for _ in range(2)]
    await asyncio.sleep(0)  # let them start the fsync
    # The event loop runs on while the disk is slow; nothing is durable yet.
    assert outbox.synced_seq == 0
    assert not any(task.done() for task in waiting)
    disk.set()
    await asyncio.wait_for(asyncio.gather(*waiting), 30)
    assert outbox.synced_seq == 3
    assert len(synced) == 1  # one fsync for the three messages and both waiters
    # What is on disk reads back whole.
    assert [m.seq for m in Outbox(tmp_path / "outbox.jsonl").pending()] == [1, 2, 3]
