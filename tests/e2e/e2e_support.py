"""Helpers for the end-to-end tests: the `farm` CLI as a subprocess, polling with deadlines.

Nothing here sleeps to wait for something: ``wait_until`` polls a condition and
fails with a message once its deadline passes.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

import psutil

from farmtui.client import FarmClient
from farmtui.protocol import ChunkView, JobDetail
from tests.helpers.farm import LiveLeader

T = TypeVar("T")

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Default deadline for things that take a few renderer runs on a busy 2-core machine.
DEADLINE = 30.0


def wait_until(condition: Callable[[], T], timeout: float = DEADLINE, what: str = "") -> T:
    """Poll ``condition`` every 20 ms until it returns something truthy; return that."""
    end = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > end:
            raise AssertionError(f"gave up after {timeout:g} s waiting for {what or condition}")
        time.sleep(0.02)


def farm(
    leader: LiveLeader,
    *args: str,
    token: str | None = None,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``farm ARGS`` in a subprocess against ``leader`` (admin token by default)."""
    return subprocess.run(
        [sys.executable, "-m", "farmtui", *args],
        env=env if env is not None else leader.env(token),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def farm_ok(leader: LiveLeader, *args: str, **kwargs: Any) -> str:
    done = farm(leader, *args, **kwargs)
    assert done.returncode == 0, f"farm {' '.join(args)} failed: {done.stderr}"
    return done.stdout


def farm_json(leader: LiveLeader, *args: str, **kwargs: Any) -> Any:
    return json.loads(farm_ok(leader, *args, "--json", **kwargs))


def submit(leader: LiveLeader, *args: str, **kwargs: Any) -> str:
    """``farm submit ARGS`` and the new job's id. Put ``--`` and the argv last."""
    if "--" in args:
        cut = args.index("--")
        args = (*args[:cut], "--json", *args[cut:])
    else:
        args = (*args, "--json")
    job = json.loads(farm_ok(leader, "submit", *args, **kwargs))
    job_id: str = job["id"]
    return job_id


def demo(seconds_per_frame: float = 0.02, *extra: str) -> tuple[str, ...]:
    """Submit arguments for the demo renderer with a custom speed; goes last."""
    return (
        "--renderer", "demo", "--",
        sys.executable, "-m", "farmtui.demo_render", "--frames", "{frames}",
        "--output", "{output}", "--seconds-per-frame", str(seconds_per_frame), *extra,
    )  # fmt: skip


def one_line_error(done: subprocess.CompletedProcess[str]) -> str:
    """Assert a failed command printed exactly one line on stderr and nothing on stdout."""
    assert done.returncode != 0, f"expected a failure, got exit 0: {done.stdout}"
    assert done.stdout == ""
    assert done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.endswith("\n"), done.stderr
    assert "Traceback" not in done.stderr
    return done.stderr.strip()


def show(client: FarmClient, job_id: str) -> JobDetail:
    return client.show(job_id)


def wait_job(
    client: FarmClient, job_id: str, states: str | Iterable[str], timeout: float = DEADLINE
) -> JobDetail:
    """Poll until the job is in one of ``states``; its detail then."""
    wanted = {states} if isinstance(states, str) else set(states)

    def reached() -> JobDetail | None:
        detail = client.show(job_id)
        return detail if detail.job.state in wanted else None

    return wait_until(reached, timeout, f"job {job_id} to be {'/'.join(sorted(wanted))}")


def render_chunks(detail: JobDetail) -> list[ChunkView]:
    return [chunk for chunk in detail.chunks if chunk.kind == "render"]


def is_png(path: Path) -> bool:
    data = path.read_bytes()
    return len(data) > len(PNG_SIGNATURE) and data.startswith(PNG_SIGNATURE)


def pid_gone(pid: int) -> bool:
    """The process no longer exists (a zombie has exited: it counts as gone)."""
    try:
        return psutil.Process(pid).status() in (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD)
    except psutil.NoSuchProcess:
        return True
