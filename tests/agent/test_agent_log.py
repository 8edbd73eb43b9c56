"""The agent's log file on a disk that fills up: one line on stderr, not a traceback a line."""

from __future__ import annotations

import errno
import io
import logging
import os
import sys
import threading
import time
from pathlib import Path

import pytest

from agent import agent_log


def test_a_log_file_it_cannot_write_is_said_once_until_it_can_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    attached = agent_log.attach(tmp_path, to_stderr=False)
    stream = attached.stream
    (log_file,) = [h for h in attached.handlers if isinstance(h, agent_log.LogFile)]
    logger = logging.getLogger(agent_log.LOGGER)
    try:

        def no_room() -> None:
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(log_file, "flush", no_room)
        for n in range(20):
            logger.info("line %d", n)
        said = capsys.readouterr().err
        assert said.count("\n") == 1, said
        assert "cannot write the agent log" in said
        assert "No space left on device" in said
        assert "Traceback" not in said
        assert len(stream.drain()) == 20, "the leader is still sent every line"
        monkeypatch.undo()
        logger.info("room again")
        assert capsys.readouterr().err == ""
        monkeypatch.setattr(log_file, "flush", no_room)
        logger.info("full again")
        assert capsys.readouterr().err.count("cannot write the agent log") == 1
    finally:
        monkeypatch.undo()
        agent_log.detach(attached)


def test_a_line_quoting_a_jobs_command_cannot_forge_lines_nor_reach_the_terminal(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A submitter's argv is quoted in "started pid N: ..." (break round 33b: a newline in it
    forged a line in the agent log, and an ESC retitled the terminal of its reader)."""
    attached = agent_log.attach(tmp_path)
    logger = logging.getLogger(agent_log.LOGGER)
    try:
        logger.info("started pid %d: %s", 7, "true x\nINFO forged\x1b]0;pwned\x07")
        attached.wait()
    finally:
        agent_log.detach(attached)
    escaped = "started pid 7: true x\\nINFO forged\\x1b]0;pwned\\x07"
    (line,) = (tmp_path / "agent.log").read_text().splitlines()
    assert line.endswith(escaped)
    assert capsys.readouterr().err == f"INFO {escaped}\n"


class StalledTerminal(io.StringIO):
    """A stderr whose reader stopped (an SSH link gone quiet): a write waits for it."""

    def __init__(self) -> None:
        super().__init__()
        self.reading = threading.Event()

    def write(self, text: str) -> int:
        self.reading.wait(30)
        return super().write(text)


def test_a_stderr_nobody_reads_never_holds_the_agent_and_loses_no_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Written on the caller's thread (the event loop), the first line to a stalled
    stderr held the agent: no heartbeat went out, its lease lapsed, its renders died."""
    terminal = StalledTerminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    attached = agent_log.attach(tmp_path, to_stderr=True)
    logger = logging.getLogger(agent_log.LOGGER)
    try:
        began = time.monotonic()
        for n in range(200):
            logger.info("chunk %d started", n)
        assert time.monotonic() - began < 10, "logging waited for the terminal"
        terminal.reading.set()
        attached.wait()
        lines = terminal.getvalue().splitlines()
        assert lines == [f"INFO chunk {n} started" for n in range(200)]
        written = (tmp_path / "agent.log").read_text().splitlines()
        assert [line.split(": ", 1)[1] for line in written] == [
            f"chunk {n} started" for n in range(200)
        ]
    finally:
        terminal.reading.set()
        agent_log.detach(attached)


def test_only_a_stderr_that_can_wait_for_a_reader_gets_a_thread(tmp_path: Path) -> None:
    """A regular file never waits for a reader: its lines are written at once, with no
    hand-over to a thread per line; a pipe or a terminal may wait."""
    read_end, write_end = os.pipe()
    try:
        with open(write_end, "w", closefd=False) as pipe:
            assert agent_log.may_block(pipe)
        with open(tmp_path / "stderr.txt", "w") as regular:
            assert not agent_log.may_block(regular)
        assert agent_log.may_block(io.StringIO())  # no descriptor: assume the worst
    finally:
        os.close(read_end)
        os.close(write_end)
