"""The outbox numbers, persists and forgets messages the way the leader acknowledges them."""

from __future__ import annotations

import asyncio
import errno
import threading
from pathlib import Path

import pytest

import agent.outbox as outbox_module
from agent.outbox import Outbox, _paths, is_reliable, read_outbox
from farmtui.protocol import (
    ChunkFinished,
    ChunkOutput,
    ChunkStarted,
    FramesWritten,
    Heartbeat,
    encode,
)
from tests.helpers.small_disk import fill, small_disk


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
    assert [m.seq for m in read_outbox(path)[1]] == [3, 4]
    outbox.ack(1)  # an old ack changes nothing
    assert [m.seq for m in outbox.pending()] == [3, 4]


def test_the_files_keep_their_size_as_messages_come_and_go(tmp_path: Path) -> None:
    """Written in place: many takeovers later, the two files are as big as on day one."""
    path = tmp_path / "outbox.jsonl"
    outbox = Outbox(path, capacity=4096)
    sizes = [side.stat().st_size for side in _paths(path)]
    assert sizes == [4096, 4096]
    for n in range(2000):  # ~150 kB of messages and acks through 8 kB of files
        outbox.ack(outbox.add(_started(n)).seq)
    assert [side.stat().st_size for side in _paths(path)] == sizes
    assert not path.exists()
    assert Outbox(path, capacity=4096).pending() == []
    assert Outbox(path, capacity=4096).add(_started(0)).seq == 2001


def test_what_a_file_held_before_its_takeover_is_never_read_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Files are overwritten, not emptied: older lines lie past the end of the newer ones."""
    path = tmp_path / "outbox.jsonl"
    outbox = Outbox(path, capacity=4096)
    for n in range(300):  # through several takeovers, some messages left unacked each time
        outbox.ack(outbox.add(_started(n)).seq - 3)
    outbox.close()
    assert read_outbox(path) == (297, outbox.pending())
    assert [m.seq for m in Outbox(path, capacity=4096).pending()] == [298, 299, 300]
    assert "unreadable" not in caplog.text


def test_a_message_bigger_than_a_file_grows_it_and_it_shrinks_back(tmp_path: Path) -> None:
    path = tmp_path / "outbox.jsonl"
    outbox = Outbox(path, capacity=4096)
    big = FramesWritten(job_id="j", chunk=1, attempt=1, frames=list(range(2000)), staged=True)
    outbox.add(big)
    assert max(side.stat().st_size for side in _paths(path)) > 4096
    assert read_outbox(path) == (0, [big])
    outbox.ack(1)
    for n in range(1000):  # through a takeover into each file
        outbox.ack(outbox.add(_started(n)).seq)
    assert [side.stat().st_size for side in _paths(path)] == [4096, 4096]


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


def test_a_line_torn_by_a_power_cut_is_skipped(tmp_path: Path) -> None:
    path = tmp_path / "outbox.jsonl"
    outbox = Outbox(path)
    outbox.add(_started(1))
    outbox.close()
    live = max(_paths(path), key=lambda side: side.read_bytes()[:31])  # the higher generation
    end = live.read_bytes().index(b"\0")  # where the next line goes
    with live.open("r+b") as file:  # the start of a line that was never synced, its end lost
        file.seek(end)
        file.write(b'{"type":"chunk_started","seq":2,"job_')
    reopened = Outbox(path)
    assert [m.seq for m in reopened.pending()] == [1]
    reopened.add(_started(2))  # lands on a line of its own, after the torn one
    assert [m.seq for m in Outbox(path).pending()] == [1, 2]


def test_a_takeover_cut_short_leaves_the_older_file_whole(tmp_path: Path) -> None:
    """The new live file gets its header only once all it holds is on disk."""
    path = tmp_path / "outbox.jsonl"
    outbox = Outbox(path, capacity=4096)
    before = [outbox.add(_started(n)).seq for n in range(10)]
    generations = {side: side.read_bytes()[:31] for side in _paths(path)}
    while all(side.read_bytes()[:31] == generations[side] for side in _paths(path)):
        outbox.add(_started(99))  # until the other file takes over
    outbox.close()
    taken = next(side for side in _paths(path) if side.read_bytes()[:31] != generations[side])
    with taken.open("r+b") as file:  # as if the machine died before the header was written
        file.write(b" " * 31)
    survived = [m.seq for m in Outbox(path, capacity=4096).pending()]
    assert survived[:10] == before
    assert len(survived) > 10, "the older file kept what it had"


def test_its_files_are_never_reached_through_a_symlink(tmp_path: Path) -> None:
    """A symlink put in place of an outbox file (by a renderer, say) writes nothing through it."""
    path = tmp_path / "outbox.jsonl"
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    _paths(path)[0].symlink_to(victim)
    with pytest.raises(OSError, match="symbolic links") as refused:
        Outbox(path)
    assert refused.value.errno == errno.ELOOP
    assert victim.read_text() == "precious\n"


@pytest.mark.parametrize("damage", ["garbage", "same generation", "forged generation"])
def test_a_damaged_header_loses_no_report_and_no_number(tmp_path: Path, damage: str) -> None:
    """Every line of both files is read, so a header gone wrong drops nothing."""
    path = tmp_path / "outbox.jsonl"
    outbox = Outbox(path, capacity=4096)
    for n in range(60):  # through a takeover or two
        outbox.ack(outbox.add(_started(n)).seq - 5)
    outbox.close()
    live, other = sorted(_paths(path), key=lambda side: side.read_bytes()[:31], reverse=True)
    header = {
        "garbage": b"\x8f" * 31,
        "same generation": other.read_bytes()[:31],
        "forged generation": b'{"outbox":999999999999999}'.ljust(31),
    }[damage]
    with (live if damage == "garbage" else other).open("r+b") as file:
        file.write(header)
    reopened = Outbox(path, capacity=4096)
    assert [m.seq for m in reopened.pending()] == [56, 57, 58, 59, 60]
    assert reopened.add(_started(99)).seq == 61
    for n in range(300):  # takeovers past a forged generation stay readable
        reopened.ack(reopened.add(_started(n)).seq - 1)
    reopened.close()
    assert [m.seq for m in read_outbox(path)[1]] == [361]


def test_an_older_agents_outbox_is_read_once_and_removed(tmp_path: Path) -> None:
    path = tmp_path / "outbox.jsonl"
    lines = [encode(_started(n)) for n in range(1, 4)]
    for seq, line in enumerate(lines, start=1):
        lines[seq - 1] = line.replace(b'"seq":0', f'"seq":{seq}'.encode())
    path.write_bytes(b"\n".join([*lines, b'{"acked":1}']) + b"\n")
    outbox = Outbox(path)
    assert [m.seq for m in outbox.pending()] == [2, 3]
    assert not path.exists()
    assert outbox.add(_started(9)).seq == 4
    assert [m.seq for m in Outbox(path).pending()] == [2, 3, 4]


def test_reports_are_kept_on_a_full_disk(tmp_path: Path) -> None:
    """A node's full disk does not stop its reports: the outbox needs no new room."""
    with small_disk(tmp_path / "state") as folder:
        path = folder / "outbox.jsonl"
        outbox = Outbox(path, capacity=64 * 1024)
        assert fill(folder / "filler") == errno.ENOSPC
        for n in range(3000):  # ~250 kB through 128 kB of files: several takeovers
            outbox.ack(outbox.add(_started(n)).seq - 5)
        outbox.close()
        reopened = Outbox(path, capacity=64 * 1024)
        assert [m.seq for m in reopened.pending()] == [2996, 2997, 2998, 2999, 3000]


def test_an_ack_beyond_our_numbers_moves_the_counter(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "outbox.jsonl")
    outbox.ack(57)
    assert outbox.add(_started(1)).seq == 58


def test_which_messages_are_reliable() -> None:
    assert is_reliable(_started(1))
    assert not is_reliable(Heartbeat())
    assert not is_reliable(ChunkOutput(job_id="j", chunk=1, attempt=1, lines=["x"]))


def test_reports_that_outgrow_the_files_on_a_full_disk_are_kept_and_written_later(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The leader away and the disk full: the outbox needs more room than it has.
    Nothing raises into the chunk's supervisor; the messages wait in memory (and
    are sent), and are on disk once there is room again."""
    with small_disk(tmp_path / "state", "256k") as folder:
        path = folder / "outbox.jsonl"
        outbox = Outbox(path, capacity=4096)
        assert fill(folder / "filler") == errno.ENOSPC
        for n in range(200):  # ~15 kB unacknowledged: more than the files hold
            outbox.add(_started(n))
        assert [m.seq for m in outbox.pending()] == list(range(1, 201))
        assert "kept only in memory" in caplog.text
        assert outbox.synced_seq == 200, "the link does not wait for a write that cannot happen"
        (folder / "filler").unlink()
        outbox.add(_started(200))
        outbox.close()
        assert [m.seq for m in read_outbox(path)[1]] == list(range(1, 202))


async def test_one_fsync_on_a_thread_covers_every_message_added_before_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    disk = threading.Event()  # a slow disk, released by the test
    synced: list[int] = []

    def slow_fsync(fd: int) -> None:
        disk.wait(30)
        synced.append(fd)

    outbox = Outbox(tmp_path / "outbox.jsonl")
    monkeypatch.setattr(outbox_module, "_sync_data", slow_fsync)
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
