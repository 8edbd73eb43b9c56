"""The whole thing as a wrangler sees it: `farm console` in an 80x24 tmux pane,
a real leader and a real agent rendering demo frames behind it. It walks the
wrangler's round: why a job waits, the failures view, an older attempt's
output, and a requeue that asks first."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator

import pytest

from farmtui.protocol import JobSpec
from tests.helpers.farm import AgentFactory, LiveLeader, needs_agent

pytestmark = [
    pytest.mark.tmux,
    pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed"),
    needs_agent,
]


def capture(session: str) -> str:
    return subprocess.run(
        ["tmux", "capture-pane", "-p", "-t", session], capture_output=True, text=True, check=False
    ).stdout


def press(session: str, *keys: str) -> None:
    for key in keys:
        subprocess.run(["tmux", "send-keys", "-t", session, key], check=True)


# A renderer that prints a line, then fails.
FAILING = [
    sys.executable,
    "-c",
    "import sys; print('frame {start}: no licence seat'); sys.exit(1)",
]


def poll(condition: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)  # the pause between polls of a condition, not a wait for one


@pytest.fixture
def console(farm_leader: LiveLeader) -> Iterator[str]:
    session = f"farmtui-real-{uuid.uuid4().hex[:8]}"
    env = farm_leader.env()
    command = f"{shutil.which('farm') or 'farm'} console"
    subprocess.run(
        ["tmux", "new-session", "-d", "-s", session, "-x", "80", "-y", "24"]
        + [
            arg
            for key in ("FARM_LEADER", "FARM_TOKEN", "XDG_CONFIG_HOME")
            for arg in ("-e", f"{key}={env[key]}")
        ]
        + [command],
        check=True,
    )
    try:
        yield session
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], check=False, capture_output=True)


def test_the_console_shows_a_real_farm_and_its_keys_act_on_it(
    farm_leader: LiveLeader, farm_agents: AgentFactory, console: str
) -> None:
    with farm_leader.client() as farm:
        quick = farm.submit(
            JobSpec(
                name="tmux-quick",
                frames="1-4",
                chunk=2,
                renderer="demo",
                output="renders/quick/f_####.png",
            )
        )
        slow = farm.submit(
            JobSpec(
                name="tmux-slow",
                frames="1-400",
                chunk=1,
                priority=60,
                renderer="demo",
                output="renders/slow/f_####.png",
            )
        )
        farm_agents(1, slots=1)

        poll(lambda: "tmux-slow" in capture(console), "the jobs on screen")
        poll(lambda: farm.show(quick.id).job.state == "done", "the quick job to finish")
        poll(lambda: "done" in capture(console), "the quick job shown done")
        assert "Pri" in capture(console)

        # The slow job is second in dispatch order: move the cursor to it and pause it.
        poll(lambda: farm.show(slow.id).job.state == "rendering", "the slow job to start")
        subprocess.run(["tmux", "send-keys", "-t", console, "Down"], check=True)
        subprocess.run(["tmux", "send-keys", "-t", console, "p"], check=True)
        poll(lambda: farm.show(slow.id).job.state == "paused", "the p key to pause the job")
        poll(lambda: " paus " in capture(console), "the paused state on screen")

        # Why isn't it rendering: the detail view says, in the leader's words.
        press(console, "Enter")
        poll(lambda: "why: paused by admin" in capture(console), "the reason shown")
        press(console, "1")

        # A job whose renderer fails, twice (one retry): the failures view lists both.
        failing = farm.submit(
            JobSpec(name="tmux-fail", frames="1", chunk=1, priority=40, argv=FAILING, retries=1)
        )
        poll(lambda: farm.show(failing.id).job.state == "failed", "both attempts to fail", 60)
        press(console, "5")
        poll(lambda: "2 failed attempts in 1 job" in capture(console), "the failures view")
        assert "tmux-fail" in capture(console)

        # The older attempt (the second row, newest first): its own output.
        press(console, "Down", "Enter")
        poll(lambda: "attempt 1 of 2" in capture(console), "attempt 1's output")
        poll(lambda: "frame 1: no licence seat" in capture(console), "the renderer's line")

        # Requeue from the jobs view: it asks first, then the leader runs it again.
        press(console, "1", "Home", "q")
        poll(lambda: "Requeue 1 job?" in capture(console), "the confirmation")
        assert farm.show(failing.id).job.state == "failed"  # nothing before the answer
        press(console, "y")
        poll(
            lambda: (
                farm.show(failing.id).job.state != "failed"
                or farm.show(failing.id).chunks[0].attempt > 2
            ),
            "the requeue to reach the leader",
        )
