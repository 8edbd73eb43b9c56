"""The supervisor runs real renderer processes and reports what they did."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import msgspec
import psutil
import pytest

from agent.chunk_delivery import KEPT_MARK
from agent.chunk_run import LEASE_LAPSED
from agent.errors import CopyGivenUp
from agent.journal import Journal
from agent.staging import CopyToSyncRoot, Fence, UploadToLeader, partial_folder
from agent.supervisor import JOURNAL, Storage
from farmtui.protocol import (
    ROLE_HEADER,
    AssignChunk,
    ChunkFinished,
    ChunkProgress,
    ChunkRef,
    ChunkStarted,
    FramesWritten,
)
from tests.agent.conftest import BrokenFiler, kill_9_when, poll_until
from tests.helpers.staging import left_in

Chunk = Callable[..., AssignChunk]


def _frames(messages: list[FramesWritten], staged: bool) -> list[int]:
    return sorted(f for m in messages if m.staged is staged for f in m.frames)


async def test_demo_chunk_renders_reports_frames_and_copies_to_the_sync_root(
    farm: Any, demo_chunk: Chunk
) -> None:
    farm.supervisor.assign(demo_chunk([1, 2, 3]))
    finished = await farm.finish()

    assert finished.outcome == "done", finished.reason
    assert finished.exit_status == "0"
    started = farm.recorder.of(ChunkStarted)[0]
    staged_dir = farm.staging / "job1" / "1.1" / "renders" / "shot"
    assert f"--output={staged_dir}/frame_####.png" in started.command
    assert "--frames=1,2,3" in started.command
    written = farm.recorder.of(FramesWritten)
    assert _frames(written, staged=True) == [1, 2, 3]
    assert _frames(written, staged=False) == [1, 2, 3]
    for frame in (1, 2, 3):
        data = (farm.sync_root / f"renders/shot/frame_{frame:04d}.png").read_bytes()
        assert data.startswith(b"\x89PNG")
    assert not (farm.staging / "job1" / "1.1").exists(), "staging is cleaned after the copy"
    assert any(p.frame == 3 for p in farm.recorder.of(ChunkProgress))
    assert "demo: frame 2 (2/3)" in farm.recorder.output()
    # The copy to the sync root is reported after the staged frames, and before the end.
    kinds = [type(m).__name__ for m in farm.recorder.messages]
    assert kinds.index("ChunkFinished") == len(kinds) - 1


async def test_exit_zero_without_writing_a_frame_fails_the_chunk(
    farm: Any, demo_chunk: Chunk
) -> None:
    farm.supervisor.assign(demo_chunk([7, 8, 9], extra=["--skip-write", "7,8"]))
    finished = await farm.finish()

    assert finished.outcome == "failed"
    assert finished.exit_status == "0"
    assert finished.reason == "exited 0 but did not write frame(s) 7, 8"
    assert finished.missing == [7, 8]
    assert not (farm.sync_root / "renders").exists(), "nothing is copied from a failed chunk"


async def test_non_zero_exit_fails_and_nothing_is_copied(farm: Any, demo_chunk: Chunk) -> None:
    farm.supervisor.assign(demo_chunk([1, 2, 3], extra=["--fail-on", "3"]))
    finished = await farm.finish()

    assert finished.outcome == "failed"
    assert finished.exit_status == "1"
    assert finished.reason == "exited with 1"
    assert _frames(farm.recorder.of(FramesWritten), staged=True) == [1, 2]
    assert _frames(farm.recorder.of(FramesWritten), staged=False) == []
    assert not (farm.sync_root / "renders").exists()
    assert left_in(farm.staging / "job1") == [], "a failed attempt leaves no staging behind"


async def test_the_folder_of_a_render_cut_short_by_the_agents_death_goes_at_its_restart(
    farm: Any, demo_chunk: Chunk
) -> None:
    """Staging off: an agent killed mid-render left the attempt's folder in the output
    folder, a frame half written in it, for good (break round 26b, F4)."""
    assign = demo_chunk([1, 2], attempt=2, staging=False)
    partial = partial_folder(farm.sync_root, assign.outdir, "job1", 1, 2)
    partial.mkdir(parents=True)
    (partial / "frame_0001.png").write_bytes(b"half")
    journal = farm.staging / JOURNAL
    journal.mkdir(parents=True)
    (journal / "job1.1.2.json").write_bytes(
        msgspec.json.encode({"assign": assign, "started": 1000.0})
    )  # no exit status: cut short, the leader renders it again
    assert farm.supervisor.recover() == 0
    assert partial.exists(), "the sync root is known only once the leader has said"
    farm.supervisor.resume()
    await poll_until(lambda: not partial.exists(), what="the cut-short attempt's folder to go")
    assert (farm.sync_root / "renders/shot").is_dir()


async def test_without_staging_frames_are_renamed_into_place_when_the_chunk_succeeds(
    farm: Any, demo_chunk: Chunk
) -> None:
    farm.supervisor.assign(demo_chunk([4, 5], staging=False))
    finished = await farm.finish()

    assert finished.outcome == "done", finished.reason
    written = farm.recorder.of(FramesWritten)
    assert _frames(written, staged=True) == [4, 5]
    assert _frames(written, staged=False) == [4, 5]
    # The renderer writes into a folder of its own attempt inside the output folder.
    partial = farm.sync_root / "renders/shot/.farmtui-job1.1.1"
    started = farm.recorder.of(ChunkStarted)[0]
    assert f"--output={partial}/frame_####.png" in started.command
    for frame in (4, 5):
        assert (farm.sync_root / f"renders/shot/frame_{frame:04d}.png").stat().st_size > 0
    assert not partial.exists()


async def test_without_staging_a_failed_chunk_leaves_nothing_in_place(
    farm: Any, demo_chunk: Chunk
) -> None:
    farm.supervisor.assign(demo_chunk([4, 5], staging=False, extra=["--skip-write", "5"]))
    finished = await farm.finish()

    assert finished.outcome == "failed"
    assert list((farm.sync_root / "renders/shot").iterdir()) == []


@pytest.mark.parametrize(
    ("outputs", "outdir"),
    [
        (["../outside/frame_0001.png"], "renders"),
        (["/etc/frame_0001.png"], "renders"),
        (["renders/frame_0001.png"], "../../escape"),
    ],
)
async def test_paths_escaping_the_root_are_refused(
    farm: Any, demo_chunk: Chunk, outputs: list[str], outdir: str
) -> None:
    assign = demo_chunk([1])
    assign.outputs = outputs
    assign.outdir = outdir
    farm.supervisor.assign(assign)
    finished = await farm.finish()

    assert finished.outcome == "failed"
    assert "refused" in finished.reason
    assert not farm.recorder.of(ChunkStarted), "nothing was started"


async def test_symlink_out_of_the_sync_root_is_refused(
    farm: Any, demo_chunk: Chunk, tmp_path: Path
) -> None:
    (tmp_path / "elsewhere").mkdir()
    (farm.sync_root / "renders").symlink_to(tmp_path / "elsewhere")
    farm.supervisor.assign(demo_chunk([1], staging=False))
    finished = await farm.finish()
    assert finished.outcome == "failed"
    assert "outside" in finished.reason


async def test_unknown_token_fails_with_a_clear_reason(farm: Any, demo_chunk: Chunk) -> None:
    farm.supervisor.assign(demo_chunk([1], argv=["echo", "{frame}"]))
    finished = await farm.finish()
    assert finished.outcome == "failed"
    assert "unknown token {frame}" in finished.reason


async def test_missing_renderer_fails_with_a_clear_reason(farm: Any, demo_chunk: Chunk) -> None:
    farm.supervisor.assign(demo_chunk([1], argv=["no-such-renderer-farmtui", "{frames}"]))
    finished = await farm.finish()
    assert finished.outcome == "failed"
    assert finished.reason == "cannot start 'no-such-renderer-farmtui': No such file or directory"
    assert farm.recorder.of(ChunkStarted)[0].command == ["no-such-renderer-farmtui", "1"]


async def test_kill_reports_killed_with_the_signal_name(
    farm: Any, demo_chunk: Chunk, eventually: Any
) -> None:
    run = farm.supervisor.assign(demo_chunk([1], extra=["--hang"]))
    await eventually(lambda: run.first_output_at is not None, what="the renderer to print")
    assert farm.supervisor.kill(run.key, "cancelled by alice")
    finished = await farm.finish()
    assert finished.outcome == "killed"
    assert finished.reason == "cancelled by alice"
    assert finished.exit_status == "SIGTERM"


async def test_a_lease_that_runs_out_kills_what_renders_and_counts_it_apart(
    farm: Any, demo_chunk: Chunk, eventually: Any
) -> None:
    """The link's log line says how many renders the lapse kills, apart from finished
    renders whose copies wait for the lease (it counted those as killed too)."""
    run = farm.supervisor.assign(demo_chunk([1], extra=["--hang"]))
    await eventually(lambda: run.first_output_at is not None, what="the renderer to print")
    farm.supervisor.lease_until = 0.0
    assert farm.supervisor.lease_ran_out() == (1, 0)
    assert farm.supervisor.lease_ran_out() == (0, 0), "stopping already: counted once"
    finished = await farm.finish()
    assert (finished.outcome, finished.reason) == ("killed", LEASE_LAPSED)


@pytest.mark.parametrize("stop", ["lease", "kill"])
async def test_a_stopped_shim_does_not_keep_its_renderer_alive(
    farm: Any, demo_chunk: Chunk, eventually: Any, stop: str
) -> None:
    """The shim kills the tree; one stopped by a signal cannot, so the agent does. Break round
    33a: a stopped shim's renderer rendered on past the lease while the chunk ran elsewhere."""
    run = farm.supervisor.assign(demo_chunk([1], extra=["--hang"]))
    await eventually(lambda: run.first_output_at is not None, what="the renderer to print")
    renderer, shim = psutil.Process(run.pid), run.shim.shim_pid
    os.kill(shim, signal.SIGSTOP)
    try:
        if stop == "lease":
            farm.supervisor.lease_until = 0.0
            assert farm.supervisor.lease_ran_out() == (1, 0)
        else:
            assert farm.supervisor.kill(run.key, "cancelled by alice")
        # Its stopped shim cannot reap it: a zombie renders nothing (seen on a loaded CI).
        await eventually(lambda: _ended(renderer), what="the renderer's end")
        finished = await farm.finish()
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(shim, signal.SIGCONT)
    reason = LEASE_LAPSED if stop == "lease" else "cancelled by alice"
    assert (finished.outcome, finished.reason) == ("killed", reason)


def _ended(process: psutil.Process) -> bool:
    """Whether ``process`` has exited (a zombie its parent has not reaped yet too)."""
    try:
        return process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


async def test_odd_output_long_lines_binary_and_no_final_newline(
    farm: Any, demo_chunk: Chunk, python: str
) -> None:
    script = (
        "import sys; w = sys.stdout.buffer.write; "
        "w(b'x' * 40000 + b'\\n'); w(b'bad \\xff\\xfe bytes\\r\\n'); w(b'progress\\rmore\\n'); "
        "w(b'no newline at the end')"
    )
    farm.supervisor.assign(demo_chunk([1], argv=[python, "-c", script], renderer="generic"))
    finished = await farm.finish()
    lines = farm.recorder.output()

    assert finished.outcome == "failed"  # no frame written
    assert "".join(lines[:3]) == "x" * 40000
    assert "bad \ufffd\ufffd bytes" in lines
    assert lines[-3:] == ["progress", "more", "no newline at the end"]


async def test_output_is_batched(farm: Any, demo_chunk: Chunk, python: str) -> None:
    script = "for i in range(1000): print(i)"
    farm.supervisor.assign(demo_chunk([1], argv=[python, "-c", script], renderer="generic"))
    await farm.finish()
    from farmtui.protocol import ChunkOutput

    batches = farm.recorder.of(ChunkOutput)
    assert farm.recorder.output() == [str(i) for i in range(1000)]
    assert all(len(b.lines) <= 200 for b in batches)
    assert len(batches) < 100


async def test_env_and_marker_reach_the_renderer(farm: Any, demo_chunk: Chunk, python: str) -> None:
    script = "import os; print(os.environ['SHOT'], os.environ['FARMTUI_CHUNK'])"
    assign = demo_chunk([1], argv=[python, "-c", script], renderer="generic")
    assign.env = {"SHOT": "sh010"}
    farm.supervisor.assign(assign)
    await farm.finish()
    assert f"sh010 job1:1:1:{farm.supervisor.marker_id}" in farm.recorder.output()
    # The agent's id proves to the leader who holds the node name: it never shows.
    assert farm.supervisor.agent_id not in " ".join(farm.recorder.output())


async def test_upload_when_the_sync_root_is_not_visible(farm: Any, demo_chunk: Chunk) -> None:
    received: dict[str, bytes] = {}

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.headers["Authorization"] == "Bearer agent-token"
        received[request.url.path] = request.read()
        return httpx.Response(204)

    upload = UploadToLeader(
        "http://leader:7878", "agent-token", transport=httpx.MockTransport(handler)
    )
    farm.supervisor.storage = Storage(sync_root=None, delivery=upload)
    farm.supervisor.assign(demo_chunk([1, 2], staging=False))
    finished = await farm.finish()

    assert finished.outcome == "done", finished.reason
    assert sorted(received) == [
        "/api/files/renders/shot/frame_0001.png",
        "/api/files/renders/shot/frame_0002.png",
    ]
    assert all(body.startswith(b"\x89PNG") for body in received.values())
    assert _frames(farm.recorder.of(FramesWritten), staged=True) == [1, 2]


async def test_an_upload_no_leader_takes_waits_for_one_and_then_goes(
    farm: Any, demo_chunk: Chunk
) -> None:
    """A refused connection (the leader restarting) and a standby's answer (a failover)
    are the farm's doing: the upload is tried again, through the leader the link has
    then, and the chunk ends done; it failed, a retry used."""
    answers = iter(["refused", "standby", "refused"])
    received: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        request.read()
        answer = next(answers, "ok")
        if answer == "refused":
            raise httpx.ConnectError("All connection attempts failed")
        if answer == "standby":
            return httpx.Response(503, headers={ROLE_HEADER: "standby"}, text="a standby")
        received.append(request.url.path)
        return httpx.Response(204)

    upload = UploadToLeader("http://leader:7878", "t", transport=httpx.MockTransport(handler))
    farm.supervisor.storage = Storage(sync_root=None, delivery=upload)
    farm.supervisor.assign(demo_chunk([1], staging=False))
    finished = await farm.finish()
    assert finished.outcome == "done", finished.reason
    assert received == ["/api/files/renders/shot/frame_0001.png"]


@pytest.mark.parametrize("role", ["active", "standby", "gone"])
@pytest.mark.parametrize("cuts", [1, 5])
async def test_an_upload_cut_midway_waits_for_a_leader_or_is_tried_a_few_times(
    farm: Any, demo_chunk: Chunk, cuts: int, role: str
) -> None:
    """A leader that refuses a large file before reading it (too large, not current)
    closes the connection under the agent's body, which never reads why: that was taken
    for a leader away, and the upload tried for ever. Now ``/healthz`` says which: a
    leader gone or a standby (cut off from its database) is the farm's doing, and the
    upload waits for it (no retry used); an active one that cuts every try has refused
    the file, and the copy fails after a few (its output kept for a retry sync)."""
    puts: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/healthz":
            if role == "gone":
                raise httpx.ConnectError("All connection attempts failed")
            return httpx.Response(200, json={"ok": True, "role": role, "active": None})
        puts.append(request.url.path)
        if len(puts) <= cuts:
            raise httpx.WriteError("")  # a reset under the body: httpx says nothing
        request.read()
        return httpx.Response(204)

    upload = UploadToLeader("http://leader:7878", "t", transport=httpx.MockTransport(handler))
    farm.supervisor.storage = Storage(sync_root=None, delivery=upload)
    farm.supervisor.assign(demo_chunk([1]))
    finished = await farm.finish()
    if cuts == 1 or role != "active":
        assert finished.outcome == "done", finished.reason
        assert len(puts) == cuts + 1
        return
    assert finished.outcome == "failed"
    assert finished.reason.startswith(
        "copy to the sync root failed: the leader at http://leader:7878 closed the upload"
        " of renders/shot/frame_0001.png midway (WriteError): a refusal unread"
    )
    assert finished.reason.endswith("(3 times)")
    assert finished.kept_staged
    assert len(puts) == 3


class _StuckCopy:
    """A slow filer: a copy that begins (``copying``) and never ends."""

    def __init__(self) -> None:
        self.copying = asyncio.Event()

    async def deliver(self, relative: str, source: Path, fence: Fence) -> None:
        self.copying.set()
        await asyncio.Event().wait()


async def test_a_copy_the_agent_gives_up_going_at_once_stays_for_its_next_start(
    farm: Any, demo_chunk: Chunk
) -> None:
    """A second signal makes the agent go at once: a finished render's copy in flight
    stops there, its frames and journal entry kept (they were removed, the journal
    saying the render ended well: the next start failed it for missing frames)."""
    stuck = _StuckCopy()
    farm.supervisor.storage = Storage(sync_root=farm.sync_root, delivery=stuck)
    farm.supervisor.assign(demo_chunk([1]))
    await poll_until(stuck.copying.is_set, what="the copy to begin")
    farm.supervisor.give_up_copies()
    await farm.supervisor.wait_idle()
    assert farm.recorder.finished() is None, "its end is the next start's to report"
    assert (farm.staging / "job1/1.1/renders/shot/frame_0001.png").exists()
    assert len(farm.supervisor.journal.found()) == 1


async def test_a_copy_on_its_thread_stops_at_its_next_block_when_the_agent_goes_at_once(
    farm: Any, demo_chunk: Chunk, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A node that copies into the sync root does so on a thread, which a second signal
    cannot cancel: the agent waited for the whole file (a large frame on a slow filer)
    before it went (break round 29g). The copy now stops at its next block, leaving no
    file in the sync root, its output and journal entry kept for the next start."""
    from agent import no_follow, staging

    monkeypatch.setattr(no_follow, "COPY_BLOCK", 16)  # the demo's frame is a few blocks
    first_block = threading.Event()
    go_on = threading.Event()
    blocks: list[int] = []
    ended: list[BaseException | None] = []
    copy_range, copy_data = no_follow._copy_range, staging.copy_data

    def slow_filer(source: int, target: int, offset: int, count: int) -> int:
        blocks.append(offset)
        first_block.set()
        go_on.wait(30)
        return copy_range(source, target, offset, count)

    def watched(*args: Any) -> None:
        try:
            copy_data(*args)
        except BaseException as exc:
            ended.append(exc)
            raise
        ended.append(None)

    monkeypatch.setattr(no_follow, "_copy_range", slow_filer)
    monkeypatch.setattr(staging, "copy_data", watched)
    farm.supervisor.assign(demo_chunk([1]))
    await poll_until(first_block.is_set, what="the copy's first block")
    farm.supervisor.give_up_copies()
    await farm.supervisor.wait_idle()
    go_on.set()
    await poll_until(lambda: ended, what="the copy's thread to end")
    assert isinstance(ended[0], CopyGivenUp), ended
    assert len(blocks) == 1, "stopped at the next block, not at the end of the file"
    assert list((farm.sync_root / "renders/shot").iterdir()) == [], "nothing landed"
    assert (farm.staging / "job1/1.1/renders/shot/frame_0001.png").exists()
    assert len(farm.supervisor.journal.found()) == 1
    assert farm.recorder.finished() is None, "its end is the next start's to report"


async def test_a_render_that_ends_after_the_copies_were_given_up_is_delivered_as_ever(
    farm: Any, demo_chunk: Chunk, eventually: Any
) -> None:
    """Giving up the copies in flight is for those chunks alone: a render still running
    then, that ends a moment later, was refused its copy by the first version (break
    round 30b) and reported killed, to be rendered again."""
    run = farm.supervisor.assign(demo_chunk([1], seconds_per_frame=0.5))
    await eventually(lambda: run.first_output_at is not None, what="the renderer to print")
    farm.supervisor.give_up_copies()  # nothing is being copied yet
    finished = await farm.finish()
    assert finished.outcome == "done", finished.reason
    assert (farm.sync_root / "renders/shot/frame_0001.png").read_bytes().startswith(b"\x89PNG")


async def test_a_retry_sync_given_up_going_at_once_keeps_the_output_for_another(
    farm: Any, demo_chunk: Chunk
) -> None:
    """A second signal gave a retry sync's copy in flight no heed (the agent went once it
    was over, 9 s later); given up, the output it had taken over was left unmarked in its
    own attempt's folder, for nobody (break round 29f). Now it is kept as it was."""

    farm.supervisor.storage = Storage(sync_root=farm.sync_root, delivery=BrokenFiler())
    farm.supervisor.assign(demo_chunk([1]))
    assert (await farm.finish()).kept_staged
    stuck = _StuckCopy()
    farm.supervisor.storage = Storage(sync_root=farm.sync_root, delivery=stuck)
    farm.recorder.messages.clear()
    farm.supervisor.assign(msgspec.structs.replace(demo_chunk([1], attempt=2), sync_from=1))
    await poll_until(stuck.copying.is_set, what="the retry sync's copy to begin")
    farm.supervisor.give_up_copies()
    await farm.supervisor.wait_idle()
    assert farm.recorder.finished() is None
    assert (farm.staging / "job1/1.1/renders/shot/frame_0001.png").exists()
    assert (farm.staging / "job1/1.1" / KEPT_MARK).exists()
    assert not (farm.staging / "job1/1.2").exists()


# A process whose supervisor copies kept output (a retry sync) to a filer that never
# answers; it says so in ``COPYING`` and waits there to be killed.
_COPIER = """
import asyncio, sys
from pathlib import Path
import msgspec
from agent.supervisor import Storage, Supervisor
from farmtui.protocol import AssignChunk

staging, sync_root, assign = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]

class Nothing:
    def send(self, message):
        pass

class StuckFiler:
    async def deliver(self, relative, source, fence):
        (staging.parent / "COPYING").write_text(relative)
        await asyncio.Event().wait()

async def main():
    supervisor = Supervisor(
        Nothing(), agent_id="copier", staging_root=staging, zygote=False,
        storage=Storage(sync_root=sync_root, delivery=StuckFiler()),
    )
    supervisor.assign(msgspec.json.decode(assign, type=AssignChunk))
    await asyncio.Event().wait()

asyncio.run(main())
"""


async def test_an_agent_killed_during_a_retry_sync_keeps_the_output_for_the_next_copy(
    farm: Any, demo_chunk: Chunk, tmp_path: Path
) -> None:
    """``kill -9`` of an agent whose retry sync was copying: its next start removed the
    output (moved into the copy's own folder, unmarked) as a leftover, and the chunk was
    rendered again (break round 29f). Now the next start lists it kept under the copy's
    attempt, and the copy after takes it from there: no render."""

    farm.supervisor.storage = Storage(sync_root=farm.sync_root, delivery=BrokenFiler())
    farm.supervisor.assign(demo_chunk([1]))
    assert (await farm.finish()).kept_staged
    copy = msgspec.structs.replace(demo_chunk([1], attempt=2), sync_from=1)
    copying = [str(farm.staging), str(farm.sync_root), msgspec.json.encode(copy).decode()]
    await kill_9_when(_COPIER, copying, tmp_path / "COPYING")

    assert farm.supervisor.clean_abandoned_staging() == 0, "the output is not a leftover"
    assert farm.supervisor.kept_outputs() == [ChunkRef(job_id="job1", chunk=1, attempt=2)]
    farm.supervisor.storage = Storage(
        sync_root=farm.sync_root, delivery=CopyToSyncRoot(farm.sync_root)
    )
    farm.recorder.messages.clear()
    farm.supervisor.assign(msgspec.structs.replace(demo_chunk([1], attempt=3), sync_from=2))
    finished = await farm.finish()
    assert finished.outcome == "done", finished.reason
    assert (farm.sync_root / "renders/shot/frame_0001.png").read_bytes().startswith(b"\x89PNG")
    assert farm.recorder.of(ChunkStarted)[0].pid == 0, "copied, not rendered"
    assert farm.supervisor.kept_outputs() == []


async def test_a_failed_copy_fails_the_chunk_and_keeps_the_staged_files(
    farm: Any, demo_chunk: Chunk
) -> None:
    farm.supervisor.storage = Storage(sync_root=farm.sync_root, delivery=BrokenFiler())
    farm.supervisor.assign(demo_chunk([1]))
    finished = await farm.finish()
    assert finished.outcome == "failed"
    assert finished.reason == "copy to the sync root failed: disk full"
    assert finished.kept_staged, "the leader learns where a retry sync can copy from"
    assert (farm.staging / "job1/1.1/renders/shot/frame_0001.png").exists()
    assert (farm.staging / "job1/1.1" / KEPT_MARK).exists()
    # Listed in every hello, so that a discard lost while the node was away comes again.
    ref = ChunkRef(job_id="job1", chunk=1, attempt=1)
    assert farm.supervisor.kept_outputs() == [ref]
    (farm.staging / "job1" / "\u00b2.1").mkdir()  # a renderer's folder: not a number
    assert farm.supervisor.kept_outputs() == [ref]
    assert farm.supervisor.clean_abandoned_staging() == 1, "that folder only"
    farm.supervisor.discard_staged("job1", 1, 1)
    await farm.supervisor.discards.wait()
    assert farm.supervisor.kept_outputs() == []


async def test_a_file_in_the_way_of_the_output_folder_keeps_the_staged_files_for_a_retry_sync(
    farm: Any, demo_chunk: Chunk
) -> None:
    """The copy was refused as a path escape, whose output is not kept: the retry
    sync then rendered again (audit 28a). The rendered files were never at fault."""
    farm.supervisor.storage = Storage(
        sync_root=farm.sync_root, delivery=CopyToSyncRoot(farm.sync_root)
    )
    (farm.sync_root / "renders").mkdir(exist_ok=True)
    (farm.sync_root / "renders/shot").write_text("in the way\n")
    farm.supervisor.assign(demo_chunk([1]))
    finished = await farm.finish()
    assert finished.outcome == "failed"
    assert finished.reason == (
        "copy to the sync root failed: renders/shot/frame_0001.png: shot on its way is a "
        "symlink or not a folder; refused"
    )
    assert finished.kept_staged
    (farm.sync_root / "renders/shot").unlink()
    farm.recorder.messages.clear()
    sync = msgspec.structs.replace(demo_chunk([1], attempt=2), sync_from=1)
    farm.supervisor.assign(sync)
    assert (await farm.finish()).outcome == "done"
    assert farm.recorder.output() == [], "no renderer ran"
    assert (farm.sync_root / "renders/shot/frame_0001.png").read_bytes()[:4] == b"\x89PNG"


async def test_a_stopping_agent_delivers_a_render_that_ended_by_itself(
    farm: Any, demo_chunk: Chunk
) -> None:
    """Break round 28b: the agent's stop reached a chunk whose renderer had exited 0 and
    whose frames were being copied; it was reported killed and rendered again elsewhere."""
    import asyncio

    from agent.chunk_run import AGENT_STOPPED

    copying, go_on = asyncio.Event(), asyncio.Event()
    copy = CopyToSyncRoot(farm.sync_root)

    class Slow:
        async def deliver(self, relative: str, source: Path, fence: Fence) -> None:
            copying.set()
            await go_on.wait()
            await copy.deliver(relative, source, fence)

    farm.supervisor.storage = Storage(sync_root=farm.sync_root, delivery=Slow())
    farm.supervisor.assign(demo_chunk([1]))
    await asyncio.wait_for(copying.wait(), 30.0)
    stopping = asyncio.ensure_future(farm.supervisor.kill_all(AGENT_STOPPED))
    await asyncio.sleep(0)  # one turn: kill_all has asked its chunks to stop
    go_on.set()
    await stopping
    finished = await farm.finish()
    assert (finished.outcome, finished.reason) == ("done", "")
    assert (farm.sync_root / "renders/shot/frame_0001.png").read_bytes()[:4] == b"\x89PNG"


async def test_output_pattern_is_inferred_when_the_leader_sends_none(
    farm: Any, demo_chunk: Chunk
) -> None:
    assign = demo_chunk([9, 10])
    assign.output = ""
    farm.supervisor.assign(assign)
    finished = await farm.finish()
    assert finished.outcome == "done", finished.reason


async def test_retry_sync_copies_the_kept_output_without_rendering_again(
    farm: Any, demo_chunk: Chunk
) -> None:
    copy = CopyToSyncRoot(farm.sync_root)
    farm.supervisor.storage = Storage(sync_root=farm.sync_root, delivery=BrokenFiler())
    farm.supervisor.assign(demo_chunk([1, 2]))
    assert (await farm.finish()).kept_staged
    rendered = len(farm.recorder.output())
    farm.recorder.messages.clear()

    farm.supervisor.storage = Storage(sync_root=farm.sync_root, delivery=copy)
    sync = msgspec.structs.replace(demo_chunk([1, 2], attempt=2), sync_from=1)
    farm.supervisor.assign(sync)
    finished = await farm.finish()
    assert finished.outcome == "done", finished.reason
    assert (finished.attempt, finished.kept_staged) == (2, False)
    assert farm.recorder.output() == [], "no renderer ran"
    assert rendered > 0
    started = farm.recorder.of(ChunkStarted)[0]
    assert started.command == ["copy the output staged by attempt 1"]
    # On the node's clock, as its end: its log's header came after its footer (audit 28a).
    assert 0 < started.started <= finished.finished
    for frame in (1, 2):
        assert (farm.sync_root / f"renders/shot/frame_{frame:04d}.png").read_bytes()[:4] == (
            b"\x89PNG"
        )
    assert left_in(farm.staging / "job1") == [], "nothing is left staged once copied"


async def test_a_retry_sync_whose_kept_output_is_gone_fails_so_the_leader_renders(
    farm: Any, demo_chunk: Chunk
) -> None:
    sync = msgspec.structs.replace(demo_chunk([1], attempt=2), sync_from=1)
    farm.supervisor.assign(sync)
    finished = await farm.finish()
    assert finished.outcome == "failed"
    assert finished.reason == "the output staged by attempt 1 is no longer on this node"
    assert not finished.kept_staged


async def test_an_attempt_that_reported_its_end_is_no_longer_running(
    farm: Any, demo_chunk: Chunk
) -> None:
    run = farm.supervisor.assign(demo_chunk([1]))
    await farm.finish()
    # Whatever is left of its bookkeeping, a hello must not call it running:
    # the leader would wait for a second report that never comes.
    run.ended = True
    farm.supervisor.runs[run.key] = run
    assert farm.supervisor.running() == []
    assert not farm.supervisor.kill(run.key, "stale")
    del farm.supervisor.runs[run.key]


def entries_in_use(journal: Path) -> list[str]:
    """What a restarted agent would find in the journal (its free entries are kept)."""
    return sorted(found.entry.record.name for found in Journal(journal).found())


async def test_a_journal_found_at_start_is_concluded_unless_it_was_reported(
    farm: Any, demo_chunk: Chunk
) -> None:
    # A render that ended while the agent was down: its files are staged, its
    # journal and exit status are there, and nothing reported it yet.
    farm.supervisor.assign(demo_chunk([1, 2]))
    await farm.finish()
    journal = farm.staging / JOURNAL
    assert entries_in_use(journal) == []  # a concluded attempt leaves no entry
    assign = demo_chunk([1, 2], attempt=2)
    staged = farm.staging / "job1" / "1.2" / "renders" / "shot"
    staged.mkdir(parents=True)
    for frame in (1, 2):
        (staged / f"frame_{frame:04d}.png").write_bytes(b"png")
    (journal / "job1.1.2.json").write_bytes(
        msgspec.json.encode({"assign": assign, "started": 1000.0})
    )
    (journal / "job1.1.2.exit").write_text("0")
    assert farm.supervisor.recover(reported={("job1", 1, 2)}) == 0  # its report is queued
    assert entries_in_use(journal) == []

    (journal / "job1.1.2.json").write_bytes(
        msgspec.json.encode({"assign": assign, "started": 1000.0})
    )
    (journal / "job1.1.2.exit").write_text("0")
    assert farm.supervisor.recover() == 1
    assert [(r.job_id, r.chunk, r.attempt) for r in farm.supervisor.running()] == [("job1", 1, 2)]
    farm.supervisor.resume()
    await farm.finish()
    (finished,) = [m for m in farm.recorder.of(ChunkFinished) if m.attempt == 2]
    assert finished.outcome == "done", finished.reason
    assert (farm.sync_root / "renders" / "shot" / "frame_0002.png").read_bytes() == b"png"
    assert entries_in_use(journal) == []


def test_a_broken_journal_is_skipped_and_the_agent_starts(farm: Any, demo_chunk: Chunk) -> None:
    journal = farm.staging / JOURNAL
    journal.mkdir(parents=True)
    (journal / "job1.1.1.json").mkdir()  # whatever took an entry's name
    assign = msgspec.json.encode({"assign": demo_chunk([1], attempt=2), "started": 1.0})
    (journal / "job1.1.2.json").write_bytes(assign)
    (journal / "job1.1.2.exit").write_text("99999999999999999999")  # not an exit status
    (journal / "job1.1.3.exit").write_text("0")  # its attempt was forgotten
    (journal / "job1.1.4.json").write_bytes(assign)  # no exit status: cut short
    assert farm.supervisor.recover() == 0
    assert entries_in_use(journal) == []


async def test_frames_the_dead_agent_had_renamed_into_place_count_as_delivered(
    farm: Any, demo_chunk: Chunk
) -> None:
    # Staging off: the agent renames each file from the attempt's folder inside
    # the output folder into place, and died after the first of two.
    assign = demo_chunk([1, 2], attempt=2, staging=False)
    partial = partial_folder(farm.sync_root, assign.outdir, "job1", 1, 2)
    partial.mkdir(parents=True)
    (partial / "frame_0002.png").write_bytes(b"two")
    (farm.sync_root / "renders" / "shot" / "frame_0001.png").write_bytes(b"one")
    journal = farm.staging / JOURNAL
    journal.mkdir(parents=True)
    (journal / "job1.1.2.json").write_bytes(
        msgspec.json.encode({"assign": assign, "started": 1000.0})
    )
    (journal / "job1.1.2.exit").write_text("0")
    assert farm.supervisor.recover() == 1
    farm.supervisor.resume()
    finished = await farm.finish()
    assert finished.outcome == "done", finished.reason
    shot = farm.sync_root / "renders" / "shot"
    assert (shot / "frame_0001.png").read_bytes() == b"one"
    assert (shot / "frame_0002.png").read_bytes() == b"two"


async def test_a_chunk_that_fails_on_a_full_staging_disk_says_so(
    farm: Any, demo_chunk: Chunk, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The renderer only says "exited with 1"; the agent knows its disk is full."""

    def full(record: bytes) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(farm.supervisor.journal, "write", full)
    farm.supervisor.assign(demo_chunk([1, 2], extra=["--fail-on", "2"]))
    finished = await farm.finish()
    assert finished.outcome == "failed"
    assert finished.reason == (
        "exited with 1; the node's staging disk is full (No space left on device)"
    )


@pytest.mark.parametrize("renderer_ended", [True, False])
async def test_a_chunk_whose_supervisor_is_killed_is_credited_only_if_its_renderer_ended(
    farm: Any, tmp_path: Path, renderer_ended: bool
) -> None:
    """``kill -9`` of a chunk's shim (an operator, the OOM killer). A renderer that had
    already exited is left to the agent, which reads how it ended: a finished render is
    credited, not rendered again. One still running is swept, its end unknown."""
    gate = tmp_path / "gate"
    farm.supervisor.assign(
        AssignChunk(
            job_id="job1",
            chunk=1,
            attempt=1,
            renderer="generic",
            argv=["/bin/sh", "-c", f"while [ ! -e {gate} ]; do sleep 0.01; done; exit 0"],
            frames=[1],
        )
    )
    started = await poll_until(
        lambda: next((m for m in farm.recorder.of(ChunkStarted) if m.pid), None),
        what="the renderer to start",
    )
    renderer = psutil.Process(started.pid)
    shim = psutil.Process(renderer.ppid())
    shim.suspend()  # so that it can neither reap its renderer nor say how it ended
    if renderer_ended:
        gate.touch()
        await poll_until(
            lambda: renderer.status() == psutil.STATUS_ZOMBIE, what="the renderer to exit"
        )
    os.kill(shim.pid, signal.SIGKILL)
    finished = await farm.finish()
    if renderer_ended:
        assert (finished.outcome, finished.exit_status) == ("done", "0"), finished
    else:
        assert finished.outcome == "failed"
        assert finished.reason == "the renderer's exit status is unknown"
        try:  # gone, or a zombie left for the orphan reaper
            alive = renderer.status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            alive = False
        assert not alive, "the renderer outlived its swept tree"


async def _lease_lapses_as_the_render_ends(
    farm: Any, monkeypatch: pytest.MonkeyPatch, *, watchdog: bool = True
) -> None:
    """The node's lease runs out once the renderer has exited, before the agent read its
    end: a leader slow to answer (a flood of other links), the agent's loop busy.

    ``watchdog``: the link's lease watchdog has looked (the run is told to stop), or
    not yet (an agent frozen past its lease reads the render's end first)."""
    release = farm.supervisor.release_slot
    lapsed: list[bool] = []

    def lapse_then_release(run: Any) -> None:
        release(run)  # first as its tree is gone, then again once it is over
        if not lapsed:
            lapsed.append(True)
            farm.supervisor.lease_until = 0.0
            if watchdog:
                assert farm.supervisor.lease_ran_out() == (0, 1), "its render is over"

    monkeypatch.setattr(farm.supervisor, "release_slot", lapse_then_release)


@pytest.mark.parametrize("watchdog", [True, False], ids=["told", "not-yet-told"])
async def test_a_render_that_ended_before_the_lease_ran_out_is_delivered_once_it_is_back(
    farm: Any, demo_chunk: Chunk, monkeypatch: pytest.MonkeyPatch, watchdog: bool
) -> None:
    """A break round had a healthy node's lease lapse as a render ended: the attempt was
    reported killed, its frame thrown away and rendered again. Its end now waits for the
    lease: nothing reaches the sync root meanwhile, then it is done as ever."""
    await _lease_lapses_as_the_render_ends(farm, monkeypatch, watchdog=watchdog)
    farm.supervisor.assign(demo_chunk([1]))
    run = await poll_until(
        lambda: next((r for r in farm.supervisor.runs.values() if r.awaiting_lease), None),
        what="the end to wait for the lease",
    )
    assert farm.supervisor.lease_ran_out() == (0, 0)  # nothing of it runs: not stopped again
    assert farm.recorder.finished() is None
    assert not (farm.sync_root / "renders/shot/frame_0001.png").exists()
    # A hello now says it is still the node's.
    held = [(ref.job_id, ref.chunk, ref.attempt) for ref in farm.supervisor.running()]
    assert (run.ref.job_id, run.ref.chunk, run.ref.attempt) in held
    farm.supervisor.renew_lease(time.monotonic() + 60.0)
    finished = await farm.finish()
    assert finished.outcome == "done", finished.reason
    assert (farm.sync_root / "renders/shot/frame_0001.png").read_bytes().startswith(b"\x89PNG")


@pytest.mark.parametrize("moved", [False, True], ids=["lease-back", "chunk-moved"])
async def test_a_lease_that_runs_out_while_the_output_is_copied_waits_for_the_lease(
    farm: Any, demo_chunk: Chunk, monkeypatch: pytest.MonkeyPatch, moved: bool
) -> None:
    """A break round froze an agent while it copied a finished render's frames (300 MB
    each) past its lease: the attempt ended killed with exit status 0 and the chunk was
    rendered again, though its node was never lost. The copy now waits for the lease
    and goes on; only the leader's word that the chunk moved ends it killed."""
    from agent.staging import CopyToSyncRoot

    deliver = CopyToSyncRoot.deliver
    lapsed: list[bool] = []

    async def lapse_first(self: CopyToSyncRoot, relative: str, source: Path, fence: Any) -> None:
        if not lapsed:  # the freeze, as the first file goes
            lapsed.append(True)
            farm.supervisor.lease_until = 0.0
            assert farm.supervisor.lease_ran_out() == (0, 1), "waits to copy, not killed"
        await deliver(self, relative, source, fence)

    monkeypatch.setattr(CopyToSyncRoot, "deliver", lapse_first)
    farm.supervisor.assign(demo_chunk([1, 2]))
    run = await poll_until(
        lambda: next((r for r in farm.supervisor.runs.values() if r.awaiting_lease), None),
        what="the copy to wait for the lease",
    )
    assert farm.recorder.finished() is None
    assert not (farm.sync_root / "renders/shot/frame_0001.png").exists()
    if moved:
        farm.supervisor.kill(run.key, "the leader no longer wants it")
    farm.supervisor.renew_lease(time.monotonic() + 60.0)
    finished = await farm.finish()
    if moved:
        assert finished.outcome == "killed"
        assert finished.reason == "attempt 1 may no longer write: the leader no longer wants it"
        assert not (farm.sync_root / "renders/shot/frame_0001.png").exists()
        return
    assert (finished.outcome, finished.exit_status) == ("done", "0"), finished.reason
    for frame in ("frame_0001.png", "frame_0002.png"):
        assert (farm.sync_root / "renders/shot" / frame).read_bytes().startswith(b"\x89PNG")


async def test_the_leaders_stop_while_a_copy_waits_for_the_lease_is_not_forgotten(
    farm: Any, demo_chunk: Chunk, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The lease ran out as the frames were copied, and the node's next Welcome said
    the chunk had moved before the copy noticed: the lapse's stop, kept in its place,
    was cleared when the lease came back, and the copy went on (break round 29d)."""
    from agent.staging import CopyToSyncRoot

    deliver = CopyToSyncRoot.deliver

    async def lapse_then_moved(
        self: CopyToSyncRoot, relative: str, source: Path, fence: Any
    ) -> None:
        farm.supervisor.lease_until = 0.0
        farm.supervisor.lease_ran_out()
        (run,) = farm.supervisor.runs.values()
        farm.supervisor.kill(run.key, "the leader no longer wants it")  # Welcome.stale
        farm.supervisor.renew_lease(time.monotonic() + 60.0)
        await deliver(self, relative, source, fence)

    monkeypatch.setattr(CopyToSyncRoot, "deliver", lapse_then_moved)
    farm.supervisor.assign(demo_chunk([1]))
    finished = await farm.finish()
    assert finished.outcome == "killed"
    assert "the leader no longer wants it" in finished.reason
    assert not (farm.sync_root / "renders/shot/frame_0001.png").exists()


async def test_a_render_waiting_for_the_lease_that_the_leader_moved_meanwhile_is_killed(
    farm: Any, demo_chunk: Chunk, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The node was declared lost and the chunk moved: its welcome lists the attempt as
    stale, and the attempt ends killed, having written nothing to the sync root."""
    await _lease_lapses_as_the_render_ends(farm, monkeypatch)
    farm.supervisor.assign(demo_chunk([1]))
    run = await poll_until(
        lambda: next((r for r in farm.supervisor.runs.values() if r.awaiting_lease), None),
        what="the end to wait for the lease",
    )
    farm.supervisor.kill(run.key, "the leader no longer wants it")
    finished = await farm.finish()
    assert finished.outcome == "killed"
    assert finished.reason == "the leader no longer wants it"
    farm.supervisor.renew_lease(time.monotonic() + 60.0)
    assert not (farm.sync_root / "renders/shot/frame_0001.png").exists()
