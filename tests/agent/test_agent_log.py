"""The agent's log file on a disk that fills up: one line on stderr, not a traceback a line."""

from __future__ import annotations

import errno
import logging
from pathlib import Path

import pytest

from agent import agent_log


def test_a_log_file_it_cannot_write_is_said_once_until_it_can_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    stream, handlers = agent_log.attach(tmp_path, to_stderr=False)
    (log_file,) = [h for h in handlers if isinstance(h, agent_log.LogFile)]
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
        agent_log.detach(handlers)
