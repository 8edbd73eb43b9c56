"""Render time management as the agent enforces it (Deadline's Timeouts page)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psutil

from farmtui.protocol import AssignChunk, ChunkTimedOut, ChunkTimeouts, FramesWritten

Chunk = Callable[..., AssignChunk]


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


async def test_max_render_kills_a_hung_renderer_tree(
    clocked_farm: Any, demo_chunk: Chunk, eventually: Any, python: str
) -> None:
    farm = clocked_farm
    # A hung renderer with a hung child: both must go.
    script = (
        "import subprocess, sys, time; "
        "c = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)']); "
        "print('child', c.pid, flush=True); time.sleep(600)"
    )
    timeouts = ChunkTimeouts(max_render=60, on_timeout="error")
    run = farm.supervisor.assign(
        demo_chunk([1], argv=[python, "-c", script], renderer="generic", timeouts=timeouts)
    )
    line = await eventually(
        lambda: next((x for x in farm.recorder.output() if x.startswith("child")), None),
        what="the child's pid",
    )
    child = int(line.split()[1])
    farm.clock.advance(59)
    farm.clock.advance(2)
    finished = await farm.finish()

    assert finished.outcome == "timeout"
    assert finished.timeout_kind == "max_render"
    assert finished.reason.startswith("max_render timeout after 61.0 s (limit 60 s)")
    assert finished.exit_status == "SIGTERM"
    assert not _alive(child)
    assert run.pid is not None
    assert not _alive(run.pid)


async def test_min_render_fires_on_a_fast_exit_even_with_zero(farm: Any, demo_chunk: Chunk) -> None:
    timeouts = ChunkTimeouts(min_render=300)
    farm.supervisor.assign(demo_chunk([1], timeouts=timeouts, seconds_per_frame=0))
    finished = await farm.finish()

    assert finished.outcome == "timeout"
    assert finished.timeout_kind == "min_render"
    assert finished.exit_status == "0"
    assert "min_render timeout" in finished.reason
    assert "exited with 0" in finished.reason


async def test_max_start_fires_on_a_renderer_silent_at_start(
    clocked_farm: Any, demo_chunk: Chunk, python: str, eventually: Any
) -> None:
    farm = clocked_farm
    timeouts = ChunkTimeouts(max_start=30, max_render=3600)
    run = farm.supervisor.assign(
        demo_chunk(
            [1],
            argv=[python, "-c", "import time; time.sleep(600)"],
            renderer="generic",
            timeouts=timeouts,
        )
    )
    await eventually(lambda: run.pid is not None, what="the spawn")
    farm.clock.advance(31)
    finished = await farm.finish()
    assert finished.outcome == "timeout"
    assert finished.timeout_kind == "max_start"


async def test_max_start_is_met_by_the_first_output_line(
    clocked_farm: Any, demo_chunk: Chunk, eventually: Any
) -> None:
    farm = clocked_farm
    timeouts = ChunkTimeouts(max_start=30)
    run = farm.supervisor.assign(demo_chunk([1, 2], timeouts=timeouts, extra=["--hang"]))
    await eventually(lambda: run.first_output_at is not None, what="the first line")
    farm.clock.advance(3600)
    await eventually(lambda: run.stop is None and farm.supervisor.runs, what="still running")
    farm.supervisor.kill(run.key, "done with the test")
    finished = await farm.finish()
    assert finished.outcome == "killed"


async def test_notify_tells_the_leader_and_keeps_the_chunk_running(
    clocked_farm: Any, demo_chunk: Chunk, eventually: Any
) -> None:
    farm = clocked_farm
    timeouts = ChunkTimeouts(max_render=10, on_timeout="notify")
    run = farm.supervisor.assign(demo_chunk([1], timeouts=timeouts, extra=["--hang"]))
    await eventually(lambda: run.first_output_at is not None, what="the first line")
    farm.clock.advance(11)
    notice = await eventually(lambda: farm.recorder.of(ChunkTimedOut), what="ChunkTimedOut")
    assert notice[0].kind == "max_render"
    assert notice[0].elapsed >= 11
    farm.clock.advance(100)
    await eventually(lambda: run.stop is None and run.pid is not None and _alive(run.pid))
    assert len(farm.recorder.of(ChunkTimedOut)) == 1, "one notice per kind"
    assert farm.recorder.finished() is None
    farm.supervisor.kill(run.key, "enough")
    assert (await farm.finish()).outcome == "killed"


async def test_update_timeouts_changes_a_running_chunk(
    clocked_farm: Any, demo_chunk: Chunk, eventually: Any
) -> None:
    farm = clocked_farm
    run = farm.supervisor.assign(demo_chunk([1], extra=["--hang"]))
    await eventually(lambda: run.first_output_at is not None, what="the first line")
    farm.clock.advance(500)
    assert farm.supervisor.update_timeouts(run.key, ChunkTimeouts(max_render=100))
    finished = await farm.finish()
    assert finished.outcome == "timeout"
    assert finished.timeout_kind == "max_render"


async def test_complete_on_timeout_still_copies_the_staged_frames(
    clocked_farm: Any, demo_chunk: Chunk, eventually: Any, python: str
) -> None:
    farm = clocked_farm
    # Writes frame 5, then runs on like a simulation capped by max_render.
    script = (
        "import sys, time; from farmtui.demo_render import main; "
        "main(['--frames', '5', '--output', sys.argv[1], '--seconds-per-frame', '0']); "
        "print('hanging', flush=True); time.sleep(600)"
    )
    timeouts = ChunkTimeouts(max_render=60, on_timeout="complete")
    farm.supervisor.assign(
        demo_chunk([5, 6], argv=[python, "-c", script, "{output}"], timeouts=timeouts)
    )
    await eventually(lambda: "hanging" in farm.recorder.output(), what="frame 5 and the hang")
    farm.clock.advance(61)
    finished = await farm.finish()

    assert finished.outcome == "timeout"
    assert finished.timeout_kind == "max_render"
    assert (farm.sync_root / "renders/shot/frame_0005.png").exists()
    assert not (farm.sync_root / "renders/shot/frame_0006.png").exists()
    copied = [m for m in farm.recorder.of(FramesWritten) if not m.staged]
    assert [m.frames for m in copied] == [[5]]


async def test_error_on_timeout_copies_nothing(
    clocked_farm: Any, demo_chunk: Chunk, eventually: Any
) -> None:
    farm = clocked_farm
    timeouts = ChunkTimeouts(max_render=60, on_timeout="error")
    run = farm.supervisor.assign(
        demo_chunk([1, 2], timeouts=timeouts, seconds_per_frame=0.01, extra=["--hang"])
    )
    await eventually(lambda: run.first_output_at is not None, what="the first line")
    farm.clock.advance(61)
    finished = await farm.finish()
    assert finished.outcome == "timeout"
    assert not (farm.sync_root / "renders").exists()
