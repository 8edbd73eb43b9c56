"""The real console in a real terminal (tmux, 80x24) against the scripted real leader."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator

import pytest

from tests.console.scripted_leader import ScriptedLeader

pytestmark = [
    pytest.mark.tmux,
    pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed"),
]


def capture(session: str) -> str:
    return subprocess.run(
        ["tmux", "capture-pane", "-p", "-t", session], capture_output=True, text=True, check=False
    ).stdout


def poll(condition: Callable[[], bool], timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)  # the pause between polls of a condition, not a wait for one
    return condition()


@pytest.fixture
def tmux_console(tmp_path: object, leader: ScriptedLeader) -> Iterator[tuple[str, ScriptedLeader]]:
    session = f"farmtui-test-{uuid.uuid4().hex[:8]}"
    code = (
        "from farmtui.console.app import run_console; "
        f"run_console({leader.url!r}, {leader.token!r})"
    )
    command = f"{sys.executable} -c {code!r}"
    subprocess.run(
        [
            "tmux",
            "new-session",
            "-d",
            "-s",
            session,
            "-x",
            "80",
            "-y",
            "24",
            "-e",
            f"XDG_CONFIG_HOME={tmp_path}",
            "-c",
            str(_repo_root()),
            command,
        ],
        check=True,
    )
    try:
        yield session, leader
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], check=False, capture_output=True)


def _repo_root() -> str:
    from pathlib import Path

    return str(Path(__file__).resolve().parents[2])


def test_console_in_tmux(tmux_console: tuple[str, ScriptedLeader]) -> None:
    session, _ = tmux_console
    assert poll(lambda: "shot_010_comp" in capture(session)), capture(session)
    screen = capture(session)
    assert "Pri↑" in screen
    assert "turntable" in screen
    subprocess.run(["tmux", "send-keys", "-t", session, "4"], check=True)
    assert poll(lambda: "node-a" in capture(session)), capture(session)
    assert "shot_020_light" not in capture(session)
    subprocess.run(["tmux", "send-keys", "-t", session, "1"], check=True)
    assert poll(lambda: "shot_020_light" in capture(session)), capture(session)
