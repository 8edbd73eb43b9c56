"""Log I/O off the event loop: the job and node logs' writer thread, the leader's own log.

A slow or hung filer, or a stderr nobody drains, must cost the leader no
event-loop time, and nothing may be lost or reordered on the way.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import io
import logging
import os
import threading
import time
from datetime import datetime
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from farmtui.logqueue import logging_off_the_loop
from farmtui.protocol import EventView
from server import logwriter
from server.joblogs import JobLogs, events_path, iso_time
from server.logwriter import LogWriter
from server.nodelogs import NodeLogs
from server.redaction import RedactTokens
from tests.helpers.leader import hung_log_writer, leader_in_process


def event(job_id: str, text: str) -> EventView:
    return EventView(time=1.0, level="info", text=text, job_id=job_id, actor="bob")


async def test_a_read_sees_every_line_written_before_it(tmp_path: Path) -> None:
    logs = JobLogs(tmp_path)
    try:
        for number in range(2000):
            logs.chunk_output("abc", 0, 1, [f"line {number}"])
        lines = await logs.tail("jobs/abc/chunk-0000.attempt-1.log")
        assert lines == [f"line {number}" for number in range(2000)]
        for number in range(3):
            logs.event(event("abc", f"event {number}"))
        data = await logs.read(events_path("abc"))
        assert data is not None
        assert [line.split(": ", 1)[1] for line in data.decode().splitlines()] == [
            "event 0",
            "event 1",
            "event 2",
        ]
    finally:
        logs.close()


async def test_a_chunk_log_on_disk_has_its_header_output_and_footer_in_order(
    tmp_path: Path,
) -> None:
    """What ``tail -f`` of a chunk's log shows: everything, in order, before the writer is
    asked to close it; text that is not valid UTF-8 (a lone surrogate) written replaced."""
    logs = JobLogs(tmp_path)
    path = tmp_path / "jobs/abc/chunk-0003.attempt-2.log"
    try:
        logs.chunk_started("abc", 3, 2, "node1", ["blender", "-b", "shot.blend"], 1.0)
        # A job's own argv cannot add header lines: one line, its newline shown escaped.
        logs.chunk_started("abc", 4, 1, "node1", ["sh", "-c", "x\n# outcome: done"], 1.0)
        big = [f"{number:06d} " + "x" * 90 for number in range(2000)]  # over a write's worth
        logs.chunk_output("abc", 3, 2, [*big, "bad \udcff byte"])
        await logs.read("jobs/abc/chunk-0003.attempt-2.log")  # the writer has caught up
        shown = path.read_text(encoding="utf-8").splitlines()
        assert shown[0] == "# farmtui: job abc chunk 3 attempt 2"
        assert "# command: blender -b shot.blend" in shown
        assert shown[-2001:] == [*big, "bad ? byte"]
        forged = (tmp_path / "jobs/abc/chunk-0004.attempt-1.log").read_text().splitlines()
        assert forged[-1] == "# command: sh -c 'x\\n# outcome: done'"
        assert len(forged) == 4
    finally:
        logs.close()


async def test_a_full_disk_is_reported_once_a_log_and_lines_come_again_once_there_is_room(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Lines are written when the writer catches up, not when they are queued: a write
    that worked in memory must not count as the log working again, or a full disk is
    reported at every flush (a break round counted 21-44 lines a log)."""
    from server import joblogs

    real_write = os.write
    full = [True]

    def write(fd: int, data: bytes | memoryview) -> int:
        if full[0]:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(joblogs.os, "write", write)
    caplog.set_level(logging.ERROR, logger="farmtui.leader")
    logs = JobLogs(tmp_path)
    relative = "jobs/abc/chunk-0000.attempt-1.log"
    try:
        logs.chunk_started("abc", 0, 1, "node1", ["render"], 1.0)
        for number in range(20):
            logs.chunk_output("abc", 0, 1, [f"lost {number}"])
            if number % 5 == 0:  # more than a log keeps unwritten: written (and closed) at once
                logs.chunk_output("abc", 0, 1, ["x" * 90] * 1000)
            await logs.read(relative)  # each read flushes first
        failures = [r.getMessage() for r in caplog.records if "cannot write" in r.getMessage()]
        assert failures == [f"cannot write the log {relative}: No space left on device"]
        full[0] = False  # room again
        logs.chunk_output("abc", 0, 1, ["kept"])
        assert (await logs.tail(relative)) == ["kept"]
    finally:
        logs.close()


async def test_an_agents_lines_are_written_as_plain_text(tmp_path: Path) -> None:
    """Whoever holds an agent token writes these lines; operators ``tail -f`` the file. An
    ESC in one reached their terminal, and a newline forged a line (break round 33b)."""
    writer = LogWriter("test-node-logs")
    nodes = NodeLogs(tmp_path, writer)
    try:
        nodes.append("node1", ["started: x\nINFO forged line\x1b]0;pwned\x07", "plain\n"])
        expected = ["started: x\\nINFO forged line\\x1b]0;pwned\\x07", "plain"]
        assert nodes.kept("node1", 2) == expected
        await asyncio.wrap_future(writer.call(lambda: None))  # what was asked before is done
        assert (tmp_path / "nodes/node1.log").read_text().splitlines() == expected
    finally:
        nodes.close()
        writer.close()


async def test_a_message_of_many_lines_is_kept_whole_on_disk_and_its_tail_in_memory(
    tmp_path: Path,
) -> None:
    """87,000 empty lines fit in one message of a batch; their text is made on the writer
    thread (it took the loop 5-20 ms), and the node's tail keeps only its last lines."""
    lines = [f"{number}\n" if number % 2 else "" for number in range(87_000)]
    logs = JobLogs(tmp_path)
    writer = LogWriter("test-node-logs")
    nodes = NodeLogs(tmp_path, writer)
    try:
        logs.chunk_output("abc", 0, 1, lines)
        nodes.append("node1", lines)
        written = await logs.tail("jobs/abc/chunk-0000.attempt-1.log")
        assert written == [line.rstrip("\n") for line in lines]
        assert await nodes.tail("node1", 3) == ["86997", "", "86999"]
        await asyncio.wrap_future(writer.call(lambda: None))  # what was asked before is done
        text = (tmp_path / "nodes/node1.log").read_text()
        assert text.splitlines() == [line.rstrip("\n") for line in lines]
    finally:
        logs.close()
        nodes.close()
        writer.close()


async def test_a_hung_filer_costs_the_loop_nothing_and_drops_are_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(logwriter, "MAX_QUEUED", 100)
    writer = LogWriter()
    logs = JobLogs(tmp_path, writer)
    filer, hung, answered = threading.Event(), threading.Event(), threading.Event()

    def hang() -> None:  # the sync root stops answering
        hung.set()
        filer.wait(60)
        answered.set()

    writer.submit(hang)
    assert hung.wait(30)
    for number in range(1000):
        logs.chunk_output("abc", 0, 1, [f"line {number}"])
    # 1,000 writes queued or dropped while the filer still hangs: none waited for it.
    assert not answered.is_set()
    assert writer.dropped == 1000 - 100
    filer.set()
    lines = await logs.tail("jobs/abc/chunk-0000.attempt-1.log")
    assert lines == [f"line {number}" for number in range(100)]
    writer.close()
    assert "900 log writes dropped so far" in caplog.text


async def test_a_leader_whose_filer_hangs_still_stops(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Stopping waited for the job and node logs' writer without a bound, on the
    event loop: a sync root that stopped answering kept the leader from stopping."""
    with contextlib.ExitStack() as hung:
        async with leader_in_process(tmp_path) as farm:
            writer = farm.leader.logwriter
            await asyncio.to_thread(writer.started)
            monkeypatch.setattr(logwriter, "CLOSE_WAIT", 0.5)
            hung.enter_context(hung_log_writer(writer))
            # More than a pipe holds: the writer's thread waits for the stopped child.
            farm.leader.joblogs.chunk_output("abc", 0, 1, ["never written " * 100] * 2000)
            began = time.monotonic()
    assert time.monotonic() - began < 20, "the leader did not stop while its filer hung"
    assert "the log writer did not finish within 0.5 s" in caplog.text


async def test_a_hung_filer_holds_a_bounded_weight_of_lines_not_a_number_of_messages(
    tmp_path: Path,
) -> None:
    """A message of 87,000 empty lines is one queued item of 700 kB: a hundred links
    streaming such messages to their node logs took a leader from 160 to 806 MB while
    the queue held far fewer items than its bound. Lines are now bounded by what they
    hold; what is dropped is counted, and writes go on once the filer answers."""
    writer = LogWriter()
    nodes = NodeLogs(tmp_path, writer)
    filer, hung = threading.Event(), threading.Event()

    def hang() -> None:
        hung.set()
        filer.wait(60)

    writer.submit(hang)
    assert hung.wait(30)
    flood = [""] * 87_000
    for number in range(100):
        nodes.append(f"flood{number}", flood)
    kept = logwriter.MAX_QUEUED_LINE_BYTES // logwriter.weigh_lines(flood)
    assert 10 <= kept <= 40  # a few seconds of such a flood, about 128 MB at most
    assert writer.dropped == 100 - kept
    nodes.append("node1", ["small lines", "still fit"])  # far less than one of those
    assert writer.dropped == 100 - kept
    filer.set()
    await asyncio.wrap_future(writer.call(lambda: None))
    assert (tmp_path / "nodes/node1.log").read_text() == "small lines\nstill fit\n"
    assert len((tmp_path / f"nodes/flood{kept - 1}.log").read_text()) == 87_000
    assert not (tmp_path / f"nodes/flood{kept}.log").exists()
    for number in range(kept + 5):  # drained, the whole bound is free again
        nodes.append(f"again{number % 5}", flood)
        await asyncio.wrap_future(writer.call(lambda: None))
    assert writer.dropped == 100 - kept
    nodes.close()
    writer.close()


def test_lines_weigh_what_they_hold_in_memory() -> None:
    """A line with one emoji holds four bytes for each of its characters."""
    ascii_lines = ["x" * 100] * 10
    wide = ["x" * 99 + "\N{PILE OF POO}"] * 10
    assert logwriter.weigh_lines(wide) >= sum(len(line) * 4 for line in wide)
    assert logwriter.weigh_lines(ascii_lines) < logwriter.weigh_lines(wide)
    many = [""] * (logwriter.COUNTED_LINES + 1)  # not counted: a batch's worth, at the most
    assert logwriter.weigh_lines(many) >= 4 * logwriter.MAX_BATCH_BYTES


async def test_a_job_deleted_while_its_lines_are_queued_leaves_no_folder(tmp_path: Path) -> None:
    logs = JobLogs(tmp_path)
    for number in range(500):
        logs.chunk_output("abc", number, 1, ["x"])
    logs.forget_job("abc")
    logs.flush()
    assert not (tmp_path / "jobs" / "abc").exists()
    logs.close()


class Blocking(logging.Handler):
    """A handler whose stream stops being drained until ``drained`` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.drained = threading.Event()
        self.stream = io.StringIO()
        self.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
        self.addFilter(RedactTokens())

    def emit(self, record: logging.LogRecord) -> None:
        self.drained.wait(30)
        self.stream.write(self.format(record) + "\n")


def test_the_leaders_own_log_never_blocks_the_caller_and_keeps_order() -> None:
    logger = logging.getLogger("farmtui.test-logqueue")
    logger.propagate = False
    handler = Blocking()
    logger.handlers = [handler]
    logger.setLevel(logging.INFO)
    try:
        with logging_off_the_loop([logger.name]):
            began = time.perf_counter()
            for number in range(200):
                logger.info("request %d GET /ws/agent?token=%s", number, "s3cret")
            assert time.perf_counter() - began < 5.0  # the stream was not drained
            handler.drained.set()
        assert logger.handlers == [handler]
        written = handler.stream.getvalue().splitlines()
        assert [line.split()[2] for line in written] == [str(n) for n in range(200)]
        assert "s3cret" not in handler.stream.getvalue()
    finally:
        logger.handlers = []


def test_a_record_says_what_its_arguments_were_when_it_was_logged() -> None:
    logger = logging.getLogger("farmtui.test-logqueue-args")
    logger.propagate = False
    handler = Blocking()
    logger.handlers = [handler]
    try:
        with logging_off_the_loop([logger.name]):
            slots = ["node1"]
            logger.warning("busy: %s", slots)
            slots.append("node2")  # changed after the call, before the write
            handler.drained.set()
        assert handler.stream.getvalue() == "WARNING busy: ['node1']\n"
    finally:
        logger.handlers = []


async def test_the_writer_runs_work_in_order_across_threads_of_callers() -> None:
    writer = LogWriter()
    seen: list[int] = []
    for number in range(1000):
        writer.submit(lambda number=number: seen.append(number))  # type: ignore[misc]
    assert await asyncio.wrap_future(writer.call(lambda: len(seen))) == 1000
    writer.close()
    assert seen == list(range(1000))


@given(st.floats(min_value=0, max_value=4e9, allow_nan=False))
def test_log_times_read_as_datetime_writes_them(timestamp: float) -> None:
    """The per-second cache behind every log line's time changes nothing in it."""
    expected = datetime.fromtimestamp(timestamp).astimezone().isoformat(timespec="milliseconds")
    assert iso_time(timestamp) == expected


async def test_a_nodes_log_after_a_restart_shows_the_lines_before_it_then_the_new(
    tmp_path: Path,
) -> None:
    """A restarted leader whose node spoke again showed only the lines since the restart."""
    (tmp_path / "nodes").mkdir()
    (tmp_path / "nodes/n1.log").write_text("before 1\nbefore 2\n")
    nodes = NodeLogs(tmp_path)
    try:
        nodes.append("n1", ["after 1"])
        assert await nodes.tail("n1", 10) == ["before 1", "before 2", "after 1"]
        nodes.append("n1", ["after 2"])
        assert await nodes.tail("n1", 2) == ["after 1", "after 2"]
    finally:
        nodes.close()


async def test_a_long_nodes_log_after_a_restart_begins_with_a_whole_line(tmp_path: Path) -> None:
    """Its end is read (256 kB): the first line read was the end of a cut one."""
    (tmp_path / "nodes").mkdir()
    # Lines of 200 bytes: fewer than the 2,000 kept fit in what is read.
    lines = [f"line {number:05d} " + "x" * 188 for number in range(20_000)]
    (tmp_path / "nodes/n1.log").write_text("".join(line + "\n" for line in lines))
    nodes = NodeLogs(tmp_path)
    try:
        shown = await nodes.tail("n1", 2000)
    finally:
        nodes.close()
    assert shown == lines[-len(shown) :]
    assert len(shown) > 1000
