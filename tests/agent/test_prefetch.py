"""A chunk handed over ahead of a free slot waits for it (``Supervisor(slots=...)``).

With ``--prefetch`` the leader hands a node more chunks than its slots; the
agent runs at most ``slots`` renderers at once, starts a waiting chunk the
moment one exits, and ends one killed (or whose lease ran out) while it
waited without ever starting it. A renderer that tallies its runs (start and
end, wall clock) turns "never more than the slots at once" into an assertion.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

import pytest
from msgspec.structs import replace

from agent.supervisor import ChunkKey
from farmtui.protocol import AssignChunk, ChunkFinished, ChunkStarted, ChunkTimeouts
from tests.agent.conftest import poll_until

# Renders for SECONDS, or (given a path) until that file exists.
TALLY = """
import os, sys, time
tally, chunk, until = sys.argv[1], sys.argv[2], sys.argv[3]
with open(tally, "a") as f:
    f.write(f"start {chunk} {os.getpid()} {time.time()}\\n")
if until.startswith("/"):
    while not os.path.exists(until):
        time.sleep(0.01)
else:
    time.sleep(float(until))
with open(tally, "a") as f:
    f.write(f"end {chunk} {os.getpid()} {time.time()}\\n")
"""


def tallied(python: str, tally: Path, chunk: int, until: float | Path) -> AssignChunk:
    """A chunk whose renderer runs ``until`` seconds, or until that file exists."""
    script = tally.with_name("tally.py")
    script.write_text(TALLY)
    return AssignChunk(
        job_id="job1",
        chunk=chunk,
        attempt=1,
        renderer="generic",
        argv=[python, str(script), str(tally), str(chunk), str(until)],
        frames=[chunk],
    )


def runs(tally: Path) -> dict[int, tuple[float, float | None]]:
    """Chunk -> (start, end or None) of its renderer's run."""
    found: dict[int, tuple[float, float | None]] = {}
    if not tally.exists():
        return found
    for line in tally.read_text().splitlines():
        what, chunk, _pid, when = line.split()
        start, _ = found.get(int(chunk), (0.0, None))
        found[int(chunk)] = (float(when), None) if what == "start" else (start, float(when))
    return found


def finished(farm: Any, chunk: int) -> ChunkFinished | None:
    return next((m for m in farm.recorder.of(ChunkFinished) if m.chunk == chunk), None)


async def test_a_chunk_handed_over_ahead_starts_when_the_slot_frees(
    farm: Any, python: str, tmp_path: Path
) -> None:
    farm.supervisor.slots = 1
    tally = tmp_path / "tally"
    for chunk in (1, 2, 3):
        farm.supervisor.assign(tallied(python, tally, chunk, 0.3))
    for chunk in (1, 2, 3):
        await poll_until(lambda c=chunk: finished(farm, c), within=30, what=f"chunk {chunk}")
    assert [m.outcome for m in farm.recorder.of(ChunkFinished)] == ["done"] * 3
    seen = runs(tally)
    spans = sorted((start, end) for start, end in seen.values() if end is not None)
    assert len(spans) == 3, seen
    for (_, end), (start, _) in zip(spans, spans[1:], strict=False):
        assert start >= end, f"two renderers at once on one slot: {seen}"
    # A chunk's render time starts with its renderer, not when it was handed over.
    third = finished(farm, 3)
    assert third is not None
    assert third.started >= seen[2][1]  # type: ignore[operator]


async def test_a_chunk_killed_while_it_waits_ends_without_ever_starting(
    farm: Any, python: str, tmp_path: Path
) -> None:
    farm.supervisor.slots = 1
    tally = tmp_path / "tally"
    farm.supervisor.assign(tallied(python, tally, 1, 30))
    farm.supervisor.assign(tallied(python, tally, 2, 0.1))
    await poll_until(lambda: 1 in runs(tally), what="chunk 1 to start")
    waiting: ChunkKey = ("job1", 2, 1)
    assert farm.supervisor.kill(waiting, "cancelled by alice")
    report = await poll_until(lambda: finished(farm, 2), what="chunk 2's report")
    assert report.outcome == "killed"
    assert report.reason == "cancelled by alice"
    assert [m.pid for m in farm.recorder.of(ChunkStarted) if m.chunk == 2] == [0]
    assert farm.supervisor.kill(("job1", 1, 1), "done with it")
    await poll_until(lambda: finished(farm, 1), what="chunk 1's report")
    await poll_until(lambda: not farm.supervisor.runs, what="every chunk to end")
    assert 2 not in runs(tally), "the killed chunk ran"
    assert farm.supervisor.rendering == 0, "a slot was never given back"


async def test_a_hello_says_how_long_each_render_has_run_and_which_chunks_wait(
    farm: Any, python: str, tmp_path: Path
) -> None:
    """A leader started again times the renders a hello names from there: a render of
    an hour is long at once, and nothing waits ahead behind it (``server.prefetch``)."""
    farm.supervisor.slots = 1
    tally = tmp_path / "tally"
    release = tmp_path / "release"
    farm.supervisor.assign(tallied(python, tally, 1, release))
    farm.supervisor.assign(tallied(python, tally, 2, 0.1))
    await poll_until(lambda: 1 in runs(tally), what="chunk 1 to start")

    def timed() -> dict[int, float | None]:
        return {ref.chunk: ref.rendered_for for ref in farm.supervisor.running()}

    await poll_until(lambda: (timed()[1] or 0.0) >= 0.3, what="chunk 1's render time to grow")
    assert timed()[2] is None, "a chunk waiting for the slot has not rendered"
    release.touch()
    await poll_until(lambda: not farm.supervisor.runs, within=20, what="every chunk to end")


async def test_a_waiting_chunk_whose_turn_comes_after_the_lease_never_runs(
    farm: Any, python: str, tmp_path: Path
) -> None:
    """The node lost its lease (frozen, cut off): the leader may give its chunks to
    another node, so one still waiting here must not start when the slot frees."""
    farm.supervisor.slots = 1
    tally = tmp_path / "tally"
    farm.supervisor.renew_lease(time.monotonic() + 3.0)
    farm.supervisor.assign(tallied(python, tally, 1, 30))
    farm.supervisor.assign(tallied(python, tally, 2, 0.1))
    await poll_until(lambda: 1 in runs(tally), what="chunk 1 to start")
    first = await poll_until(lambda: finished(farm, 1), within=20, what="the lease to end chunk 1")
    second = await poll_until(lambda: finished(farm, 2), within=20, what="chunk 2's report")
    assert first.outcome == "killed"
    assert second.outcome == "killed"
    assert 2 not in runs(tally), "a chunk started after the node's lease ran out"


async def test_a_chunk_taken_back_ends_if_it_waits_and_runs_on_if_it_renders(
    farm: Any, python: str, tmp_path: Path
) -> None:
    """The leader takes back what waits for a slot (its job paused, its node disabled):
    a chunk still waiting never starts; one already rendering is left alone."""
    farm.supervisor.slots = 1
    tally = tmp_path / "tally"
    farm.supervisor.assign(tallied(python, tally, 1, 1.0))
    farm.supervisor.assign(tallied(python, tally, 2, 0.1))
    await poll_until(lambda: 1 in runs(tally), what="chunk 1 to start")
    assert not farm.supervisor.withdraw(("job1", 1, 1), "not started: the job was paused")
    assert farm.supervisor.withdraw(("job1", 2, 1), "not started: the job was paused")
    second = await poll_until(lambda: finished(farm, 2), what="chunk 2's report")
    assert (second.outcome, second.reason) == ("killed", "not started: the job was paused")
    first = await poll_until(lambda: finished(farm, 1), within=20, what="chunk 1's report")
    assert first.outcome == "done", "a rendering chunk was taken back"
    assert 2 not in runs(tally), "the chunk taken back ran"
    assert farm.supervisor.rendering == 0, "a slot was never given back"


async def test_a_chunk_whose_renderer_exited_is_not_taken_back_while_its_output_is_copied(
    farm: Any, python: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its slot goes as soon as its tree is gone; its output is checked and copied
    after. A take-back in that window (the job paused, a job of higher priority
    waiting) stopped it as if it never started: it ended killed with exit status 0,
    and its frame was rendered again."""
    from agent.supervisor import ChunkRun

    concluding, go_on = asyncio.Event(), asyncio.Event()
    conclude = ChunkRun._conclude

    async def held(run: ChunkRun, returncode: int | None, started: float) -> None:
        concluding.set()
        await go_on.wait()  # its output being copied: a big frame, a slow filer
        await conclude(run, returncode, started)

    monkeypatch.setattr(ChunkRun, "_conclude", held)
    farm.supervisor.slots = 1
    tally = tmp_path / "tally"
    farm.supervisor.assign(tallied(python, tally, 1, 0.1))
    await asyncio.wait_for(concluding.wait(), 30)
    try:
        assert farm.supervisor.rendering == 0, "its slot is still held"
        took_back = farm.supervisor.withdraw(("job1", 1, 1), "not started: the job was paused")
    finally:
        go_on.set()
    report = await poll_until(lambda: finished(farm, 1), what="chunk 1's report")
    assert not took_back
    assert report.outcome == "done", report.reason


# ---------------------------------------------------------------- queued on a shim
#
# A chunk waiting for a slot is handed to the shim of a chunk of its job that
# renders, which starts it the moment that tree is gone, with no round trip
# through the agent. The agent can take it back until that shim takes its
# token; after that it runs as if it had started the usual way.


def frozen_until(condition: Any, within: float = 30.0) -> bool:
    """The fault: the agent's event loop does nothing until ``condition`` holds."""
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)  # noqa: ASYNC251  # blocking the loop on purpose: that is the fault
    return True


def queued(farm: Any, chunk: int) -> bool:
    run = farm.supervisor.runs.get(("job1", chunk, 1))
    return run is not None and run.queued is not None


async def test_a_queued_chunk_starts_while_the_agent_is_busy(
    farm: Any, python: str, tmp_path: Path
) -> None:
    """The agent's event loop is stuck (a slow disk, a burst of messages) as a
    renderer exits: the next chunk of its job starts anyway, within its slot."""
    farm.supervisor.slots = 1
    tally = tmp_path / "tally"
    farm.supervisor.assign(tallied(python, tally, 1, 0.5))
    farm.supervisor.assign(tallied(python, tally, 2, 0.1))
    await poll_until(lambda: queued(farm, 2), what="chunk 2 to be queued on chunk 1's shim")
    await poll_until(lambda: 1 in runs(tally), what="chunk 1 to start")
    assert frozen_until(lambda: 2 in runs(tally)), "the queued chunk waited for the agent"
    seen = runs(tally)
    first_end = seen[1][1]
    assert first_end is not None
    assert seen[2][0] >= first_end, "two renderers on one slot"
    for chunk in (1, 2):
        report = await poll_until(lambda c=chunk: finished(farm, c), what=f"chunk {chunk}")
        assert report.outcome == "done"
    assert 0 not in [m.pid for m in farm.recorder.of(ChunkStarted) if m.chunk == 2]
    await poll_until(lambda: not farm.supervisor.runs, what="every chunk to end")
    assert farm.supervisor.rendering == 0, "a slot was never given back"


async def test_a_queued_chunk_rendered_while_the_agent_was_frozen_keeps_its_render_time(
    farm: Any, python: str, tmp_path: Path
) -> None:
    """The shim starts a queued chunk, and it renders to its end, while the agent's
    loop is held: its render time runs from its renderer's start, not from the
    moment the agent heard of it (which left it a few milliseconds, and failed a
    job's minimum render time)."""
    farm.supervisor.slots = 1
    tally = tmp_path / "tally"
    farm.supervisor.assign(tallied(python, tally, 1, 0.2))
    timeouts = ChunkTimeouts(min_render=0.3)
    farm.supervisor.assign(replace(tallied(python, tally, 2, 0.5), timeouts=timeouts))
    await poll_until(lambda: queued(farm, 2), what="chunk 2 to be queued on chunk 1's shim")
    assert frozen_until(lambda: runs(tally).get(2, (0.0, None))[1] is not None), (
        "the queued chunk did not render while the agent was held"
    )
    began, ended = runs(tally)[2]
    assert ended is not None
    report = await poll_until(lambda: finished(farm, 2), what="chunk 2's report")
    assert report.outcome == "done"
    assert report.started <= began, "its start was taken from when the agent heard of it"
    assert report.finished - report.started >= ended - began
    await poll_until(lambda: not farm.supervisor.runs, what="every chunk to end")


async def test_chunks_handed_over_together_each_queue_on_a_shim_of_their_job(
    farm: Any, python: str, tmp_path: Path
) -> None:
    """Two chunks arrive at once while both slots render their job: each queues on
    a shim of its own, so both start as the renderers ahead exit, with no turn of
    the agent's (the second used to wait for the first to queue, then for a start)."""
    farm.supervisor.slots = 2
    tally, gate = tmp_path / "tally", tmp_path / "gate"
    for chunk in (1, 2):
        farm.supervisor.assign(tallied(python, tally, chunk, gate))
    await poll_until(lambda: {1, 2} <= runs(tally).keys(), what="chunks 1 and 2 to start")
    for chunk in (3, 4):
        farm.supervisor.assign(tallied(python, tally, chunk, gate))
    await poll_until(
        lambda: queued(farm, 3) and queued(farm, 4), what="chunks 3 and 4 queued on the shims"
    )
    gate.touch()
    assert frozen_until(lambda: {3, 4} <= runs(tally).keys()), "a queued chunk waited"
    for chunk in (1, 2, 3, 4):
        report = await poll_until(lambda c=chunk: finished(farm, c), what=f"chunk {chunk}")
        assert report.outcome == "done"
    await poll_until(lambda: not farm.supervisor.runs, what="every chunk to end")
    assert farm.supervisor.rendering == 0, "a slot was never given back"


async def test_a_queued_chunk_killed_before_its_turn_ends_at_once_and_never_runs(
    farm: Any, python: str, tmp_path: Path
) -> None:
    farm.supervisor.slots = 1
    tally = tmp_path / "tally"
    farm.supervisor.assign(tallied(python, tally, 1, 30))
    farm.supervisor.assign(tallied(python, tally, 2, 0.1))
    await poll_until(lambda: queued(farm, 2), what="chunk 2 to be queued on chunk 1's shim")
    assert farm.supervisor.kill(("job1", 2, 1), "cancelled by alice")
    report = await poll_until(lambda: finished(farm, 2), what="chunk 2's report")
    assert (report.outcome, report.reason) == ("killed", "cancelled by alice")
    assert [m.pid for m in farm.recorder.of(ChunkStarted) if m.chunk == 2] == [0]
    assert finished(farm, 1) is None, "chunk 2's report waited for chunk 1"
    # Chunk 1 ends on its own terms; the shim then finds chunk 2 taken back.
    farm.supervisor.assign(tallied(python, tally, 3, 0.1))
    assert farm.supervisor.kill(("job1", 1, 1), "done with it")
    await poll_until(lambda: finished(farm, 1), within=20, what="chunk 1's report")
    third = await poll_until(lambda: finished(farm, 3), within=20, what="chunk 3's report")
    assert third.outcome == "done"
    await poll_until(lambda: not farm.supervisor.runs, what="every chunk to end")
    assert 2 not in runs(tally), "the chunk taken back ran"
    assert farm.supervisor.rendering == 0, "a slot was never given back"


async def test_a_queued_chunk_its_shim_already_started_is_not_taken_back(
    farm: Any, python: str, tmp_path: Path
) -> None:
    """The leader asks for a waiting chunk back just as its shim starts it: the
    agent says no (it renders), and it renders to its end, once."""
    farm.supervisor.slots = 1
    tally = tmp_path / "tally"
    farm.supervisor.assign(tallied(python, tally, 1, 0.3))
    farm.supervisor.assign(tallied(python, tally, 2, 1.0))
    await poll_until(lambda: queued(farm, 2), what="chunk 2 to be queued on chunk 1's shim")
    await poll_until(lambda: 1 in runs(tally), what="chunk 1 to start")
    # The agent hears nothing while chunk 1 ends and its shim starts chunk 2.
    assert frozen_until(lambda: 2 in runs(tally)), "the queued chunk waited for the agent"
    assert not farm.supervisor.withdraw(("job1", 2, 1), "not started: the job was paused")
    second = await poll_until(lambda: finished(farm, 2), within=20, what="chunk 2's report")
    assert second.outcome == "done"
    assert len([line for line in tally.read_text().splitlines() if line.startswith("start 2")]) == 1
    await poll_until(lambda: not farm.supervisor.runs, what="every chunk to end")
    assert farm.supervisor.rendering == 0, "a slot was never given back"


async def test_a_stream_of_queued_chunks_leaves_no_descriptor_behind(
    farm: Any, tmp_path: Path
) -> None:
    """Each chunk queued on a shim holds pipes and a token: all of them go with it."""

    def descriptors() -> int:
        return len(os.listdir("/proc/self/fd"))

    farm.supervisor.slots = 1
    warm = AssignChunk(
        job_id="job1", chunk=0, attempt=1, renderer="generic", argv=["/bin/true"], frames=[0]
    )
    farm.supervisor.assign(warm)
    await poll_until(lambda: finished(farm, 0), what="the first chunk")
    await poll_until(lambda: not farm.supervisor.runs, what="it to end")
    before = descriptors()
    for chunk in range(1, 41):
        farm.supervisor.assign(
            AssignChunk(
                job_id="job1",
                chunk=chunk,
                attempt=1,
                renderer="generic",
                argv=["/bin/sh", "-c", "sleep 0.02"],
                frames=[chunk],
            )
        )
    await poll_until(lambda: finished(farm, 40), within=60, what="the last chunk")
    await poll_until(lambda: not farm.supervisor.runs, what="every chunk to end")
    reports = farm.recorder.of(ChunkFinished)
    assert [m.outcome for m in reports] == ["done"] * 41
    assert descriptors() <= before + 2, "descriptors left open by queued chunks"
