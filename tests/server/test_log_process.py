"""The job and node logs' writer in a process of its own (``server.log_process``):
killed, stopped or orphaned, it costs the leader nothing but what it had not written."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import queue
import signal
import struct
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import msgspec
import psutil
import pytest

from farmtui.protocol import AgentHello
from server import joblogs as joblogs_module
from server import logwriter
from server.log_process import LogProcess, attach_logs
from tests.helpers.leader import InProcessLeader, hung_log_writer, wait_for
from tests.server.test_console_link import submit

WAIT = 20.0
LOG = "jobs/abc/chunk-0000.attempt-1.log"


@pytest.fixture
def logs(tmp_path: Path):  # type: ignore[no-untyped-def]
    writer = LogProcess(tmp_path)
    joblogs, nodelogs = attach_logs(tmp_path, writer)
    try:
        yield writer, joblogs, nodelogs
    finally:
        joblogs.close()
        nodelogs.close()
        writer.close()


async def test_writes_and_reads_keep_their_order_in_another_process(logs, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    writer, joblogs, nodelogs = logs
    for number in range(3000):
        joblogs.chunk_output("abc", 0, 1, [f"line {number}"])
    nodelogs.append("node1", ["hello"])
    # A read asked after the writes sees every one of them, in order.
    assert await joblogs.tail(LOG) == [f"line {n}" for n in range(3000)]
    assert writer.pid is not None
    assert writer.pid != os.getpid()
    await asyncio.to_thread(writer.wait, WAIT)
    assert (tmp_path / "nodes/node1.log").read_text() == "hello\n"
    assert (tmp_path / LOG).read_text().splitlines()[-1] == "line 2999"


def test_a_writer_closed_leaves_no_descriptor_open(tmp_path: Path) -> None:
    """Its answers' pipe stayed open after the child ended: a descriptor per log writer,
    and a PostgreSQL leader starts one at each takeover."""
    before = set(os.listdir("/proc/self/fd"))
    for _ in range(3):
        writer = LogProcess(tmp_path)
        joblogs, nodelogs = attach_logs(tmp_path, writer)
        nodelogs.append("node1", ["hello"])
        writer.wait(WAIT)
        joblogs.close()
        nodelogs.close()
        writer.close()
    deadline = time.monotonic() + WAIT  # its reader thread closes the pipe as it ends
    while not set(os.listdir("/proc/self/fd")) <= before:
        assert time.monotonic() < deadline, "a log writer's pipe stayed open"
        time.sleep(0.01)


async def test_a_killed_writer_is_started_again_and_its_reads_fail_rather_than_hang(
    logs, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:  # type: ignore[no-untyped-def]
    writer, joblogs, _ = logs
    joblogs.chunk_output("abc", 0, 1, ["before"])
    first = await asyncio.to_thread(writer.started)
    with hung_log_writer(writer):
        read = joblogs.tail(LOG)  # sent to the stopped child, never answered by it
        await wait_for(lambda: writer.unanswered == 1, WAIT, what="the read to be sent")
        os.kill(first, signal.SIGKILL)
        with pytest.raises(OSError, match="the log writer process stopped"):
            await asyncio.wait_for(read, WAIT)
    joblogs.chunk_output("abc", 0, 1, ["after"])
    assert await joblogs.tail(LOG) == ["before", "after"]
    assert writer.pid != first
    assert writer.restarts == 1
    assert "the log writer process stopped (exit status -9)" in caplog.text


async def test_a_hung_writer_costs_the_loop_nothing_and_drops_are_counted(
    logs, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:  # type: ignore[no-untyped-def]
    """A filer that stops answering stops the child: what the leader queues meanwhile
    is bounded (the thread's bounds), dropped past them and said so, never waited for."""
    writer, joblogs, _ = logs
    await asyncio.to_thread(writer.started)
    monkeypatch.setattr(logwriter, "MAX_QUEUED_LINE_BYTES", 4 * 1024 * 1024)
    with hung_log_writer(writer):
        began = time.monotonic()
        for number in range(2000):
            joblogs.chunk_output("abc", 0, 1, [f"{number} " + "x" * 10_000])
        assert time.monotonic() - began < 5.0, "writes waited for the stopped child"
        assert writer.dropped > 0
        # Said while it happens, not once the child answers again.
        assert "log writes dropped so far" in caplog.text
        # A read behind the stopped child fails in one line after a while, not never.
        monkeypatch.setattr(joblogs_module, "READ_WAIT", 0.3)
        with pytest.raises(OSError, match="the sync root did not answer within 0.3 s"):
            await joblogs.tail(LOG)
    joblogs.chunk_output("abc", 0, 1, ["after"])
    lines = await joblogs.tail(LOG, max_bytes=64)
    assert lines is not None
    assert lines[-1] == "after"
    writer.close()
    assert f"{writer.dropped} log writes dropped so far" in caplog.text


async def test_the_childs_errors_are_in_the_leaders_log(
    logs, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:  # type: ignore[no-untyped-def]
    writer, joblogs, _ = logs
    (tmp_path / LOG).mkdir(parents=True)  # a folder where the log goes: cannot be written
    with caplog.at_level(logging.ERROR):
        joblogs.chunk_output("abc", 0, 1, ["lost"])
        await asyncio.to_thread(writer.wait, WAIT)
    messages = [r.getMessage() for r in caplog.records if r.name == "farmtui.leader.joblogs"]
    assert any(f"cannot write the log {LOG}" in m for m in messages), messages


@pytest.mark.parametrize("stopped", [False, True], ids=["running", "stopped"])
def test_the_writer_ends_with_a_leader_killed_with_sigkill(tmp_path: Path, stopped: bool) -> None:
    """No orphan: the child reads until its stdin closes, which the kernel does for a
    parent that dies, and exits then; a child stopped then is continued first."""
    script = textwrap.dedent(
        f"""
        import sys
        from pathlib import Path
        from server.log_process import LogProcess, attach_logs
        writer = LogProcess(Path({str(tmp_path)!r}))
        joblogs, _ = attach_logs(writer.root, writer)
        joblogs.chunk_output("abc", 0, 1, ["from a parent about to die"])
        print(writer.started(), flush=True)
        sys.stdin.read()
        """
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", script],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        cwd=Path(__file__).resolve().parents[2],
    )
    child = 0
    try:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())
        if stopped:
            os.kill(child, signal.SIGSTOP)
            _wait_status(child, psutil.STATUS_STOPPED)
        parent.kill()
        parent.wait()
        deadline = time.monotonic() + WAIT
        while _alive(child):
            assert time.monotonic() < deadline, "the log writer outlived its leader"
            time.sleep(0.05)
        assert (tmp_path / LOG).read_text() == "from a parent about to die\n"
    finally:
        parent.kill()
        parent.wait()
        if stopped and child and _alive(child):  # failed: no stopped process left behind
            os.kill(child, signal.SIGKILL)


def test_a_writer_whose_leader_is_gone_writes_what_it_was_sent_past_a_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A read asked just before the leader died (``farm logs``, a console) cannot be
    answered: the child crashed on its answer and lost every line sent after the read."""
    sender = LogProcess(tmp_path)
    monkeypatch.setattr(sender, "_start", lambda: None)  # queued here, never sent
    joblogs, _ = attach_logs(tmp_path, sender)
    joblogs.chunk_output("abc", 0, 1, ["before the read"])
    sender.call_op(joblogs._read, LOG, 1000)
    joblogs.chunk_output("abc", 0, 1, [f"after the read {n}" for n in range(100)])
    items = []
    with contextlib.suppress(queue.Empty):
        while True:
            items.append(sender._queue.get_nowait())
    payload = msgspec.msgpack.encode(items)
    (tmp_path / "sent").write_bytes(struct.pack(">I", len(payload)) + payload)
    answers, gone = os.pipe()  # the leader's end of the answers, closed: it is dead
    os.close(answers)
    try:
        with open(tmp_path / "sent", "rb") as sent:
            child = subprocess.run(
                [sys.executable, "-P", "-m", "server.log_process", str(tmp_path)]
                + sender._operations,
                stdin=sent,
                stdout=gone,
                stderr=subprocess.PIPE,
                cwd=Path(__file__).resolve().parents[2],
                timeout=WAIT,
                check=False,
            )
    finally:
        os.close(gone)
    assert child.returncode == 0, child.stderr.decode()
    after = [f"after the read {n}" for n in range(100)]
    assert (tmp_path / LOG).read_text().splitlines() == ["before the read", *after]


def _wait_status(pid: int, status: str) -> None:
    deadline = time.monotonic() + WAIT
    while psutil.Process(pid).status() != status:
        assert time.monotonic() < deadline, f"{pid} never {status}"
        time.sleep(0.01)


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


async def test_a_leaders_logs_are_written_by_its_own_child(leader: InProcessLeader) -> None:
    job_id = await submit(leader)
    farm = leader.leader
    pid = await asyncio.to_thread(farm.logwriter.started)
    assert psutil.Process(pid).ppid() == os.getpid()
    async with leader.http() as http:
        events = await http.get(f"/api/jobs/{job_id}/events")
    assert "submitted" in events.text


def test_a_full_disk_is_reported_once_a_while_not_once_a_chunk(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """On a full disk every new chunk log fails the same way: a line each was twenty
    a second in the leader's log."""
    import errno

    from server.joblogs import _Files

    files = _Files(tmp_path)
    full = OSError(errno.ENOSPC, "No space left on device")
    with caplog.at_level(logging.ERROR):
        for number in range(50):
            files._failed(f"jobs/abc/chunk-{number:04d}.attempt-1.log", full)
    lines = [r.getMessage() for r in caplog.records if "cannot write the log" in r.getMessage()]
    assert lines == [
        "cannot write the log jobs/abc/chunk-0000.attempt-1.log: No space left on device"
    ]


def test_the_writer_does_not_run_code_from_the_leaders_working_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A leader started in the sync root (or any folder a renderer can write): a
    ``server/`` planted there must not be what its child runs."""
    planted = tmp_path / "server"
    planted.mkdir()
    (planted / "__init__.py").write_text("")
    (planted / "log_process.py").write_text(
        f"open({str(tmp_path / 'PWNED')!r}, 'w').write('ran')\n"
    )
    monkeypatch.chdir(tmp_path)
    (tmp_path / "root").mkdir()
    writer = LogProcess(tmp_path / "root")
    joblogs, nodelogs = attach_logs(writer.root, writer)
    try:
        joblogs.chunk_output("abc", 0, 1, ["written by the real one"])
        writer.wait(WAIT)
    finally:
        joblogs.close()
        nodelogs.close()
        writer.close()
    assert not (tmp_path / "PWNED").exists()
    assert (tmp_path / "root" / LOG).read_text() == "written by the real one\n"


async def test_reads_behind_a_stopped_writer_fail_in_one_line_then_work_again(
    leader: InProcessLeader, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The farm's events are read from the logs once after a start: a read that failed
    then was kept and answered 500 to every later one. A node's log was read from the
    sync root on the event loop, holding it for as long as the filer did."""
    job_id = await submit(leader)
    farm = leader.leader
    farm.run(lambda now: farm.scheduler.node_connected(AgentHello(name="n1", slots=1), now)[0])
    writer = farm.logwriter
    await asyncio.to_thread(writer.started)
    monkeypatch.setattr(joblogs_module, "READ_WAIT", 0.3)
    async with leader.http() as http:
        with hung_log_writer(writer):
            for path in ("/api/events", f"/api/jobs/{job_id}/events", "/api/nodes/n1/log"):
                refused = await http.get(path)
                assert refused.status_code == 409, (path, refused.text)
                assert refused.json()["error"] == (
                    "cannot read the log: the sync root did not answer within 0.3 s"
                )
        events = await http.get("/api/events")
        assert events.status_code == 200
        assert any("submitted" in event["text"] for event in events.json())
        assert (await http.get("/api/nodes/n1/log")).status_code == 200
