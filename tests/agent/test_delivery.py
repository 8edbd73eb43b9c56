"""Files reach the sync root whole, only from the current attempt, and only when non-empty."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from agent.errors import DestinationBlocked, FenceError, OutputRefused, PathEscapeError
from agent.staging import ChunkFiles, CopyToSyncRoot, Fence, RenameIntoPlace
from farmtui.protocol import AssignChunk, FramesWritten, encode


def _fence(refusal: str | None = None) -> Fence:
    return Fence(job_id="job1", chunk=1, attempt=1, refusal=lambda: refusal)


async def test_a_copy_replaces_the_file_never_rewrites_it_in_place(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "renders").mkdir(parents=True)
    target = root / "renders/f_0001.png"
    target.write_bytes(b"old frame")
    source = tmp_path / "staged.png"
    source.write_bytes(b"new frame" * 1000)
    # A reader (a compositor, a review tool) holding the old file open keeps
    # seeing a whole old frame: the new one arrives under a temporary name and
    # is renamed over it, never written into the file being read.
    with target.open("rb") as reader:
        await CopyToSyncRoot(root).deliver("renders/f_0001.png", source, _fence())
        assert reader.read() == b"old frame"
    assert target.read_bytes() == b"new frame" * 1000
    assert [p.name for p in (root / "renders").iterdir()] == ["f_0001.png"]


@pytest.mark.parametrize("delivery", [CopyToSyncRoot, RenameIntoPlace])
async def test_an_attempt_that_may_no_longer_write_leaves_the_sync_root_alone(
    tmp_path: Path, delivery: Callable[[Path], CopyToSyncRoot | RenameIntoPlace]
) -> None:
    root = tmp_path / "root"
    (root / "renders").mkdir(parents=True)
    (root / "renders/f_0001.png").write_bytes(b"the current attempt's frame")
    source = root / "renders/.farmtui-job1.1.1/f_0001.png"
    source.parent.mkdir()
    source.write_bytes(b"a stale attempt's frame")
    with pytest.raises(FenceError, match="told to stop"):
        await delivery(root).deliver("renders/f_0001.png", source, _fence("told to stop"))
    assert (root / "renders/f_0001.png").read_bytes() == b"the current attempt's frame"
    assert sorted(p.name for p in (root / "renders").iterdir()) == [
        ".farmtui-job1.1.1",
        "f_0001.png",
    ]


@pytest.mark.parametrize("delivery", [CopyToSyncRoot, RenameIntoPlace])
async def test_no_output_lands_in_the_leaders_folders_through_a_symlink(
    tmp_path: Path, delivery: Callable[[Path], CopyToSyncRoot | RenameIntoPlace]
) -> None:
    """A renderer left ``links/jobs -> ../jobs`` in the shared sync root; a job whose
    output went through it replaced another job's chunk log."""
    root = tmp_path / "root"
    log = root / "jobs/victim/chunk-0001.attempt-1.log"
    log.parent.mkdir(parents=True)
    log.write_text("the victim's log\n")
    (root / "links").mkdir()
    (root / "links/jobs").symlink_to("../jobs")
    source = root / "links/.farmtui-job1.1.1/forged.log"
    source.parent.mkdir()
    source.write_text("# farmtui: FORGED LOG\n")
    relative = "links/jobs/victim/chunk-0001.attempt-1.log"
    # (Copied, it is the sync root that is at fault, not the output: kept for a retry sync.)
    refused = (PathEscapeError, DestinationBlocked)
    with pytest.raises(refused, match="jobs on its way is a symlink or not a folder"):
        await delivery(root).deliver(relative, source, _fence())
    assert log.read_text() == "the victim's log\n"
    relative = "jobs/victim/chunk-0001.attempt-1.log"
    with pytest.raises(PathEscapeError, match="is in jobs, which only the leader writes"):
        await delivery(root).deliver(relative, source, _fence())
    assert log.read_text() == "the victim's log\n"


def test_an_empty_file_is_not_a_frame(tmp_path: Path) -> None:
    frame = tmp_path / "f_0001.png"
    files = ChunkFiles(outdir=tmp_path, write_root=tmp_path, staged=True)
    files.expected[1] = ("f_0001.png", frame)
    assert files.missing() == ([1], [])
    frame.write_bytes(b"")
    assert files.missing() == ([1], []), "an empty file is a crashed write, not a frame"
    frame.write_bytes(b"\x89PNG")
    assert files.missing() == ([], [])


async def test_a_renderer_that_leaves_an_empty_frame_fails_its_chunk(
    farm: Any, demo_chunk: Callable[..., AssignChunk]
) -> None:
    touch = "import pathlib, sys; pathlib.Path(sys.argv[1].replace('####', '0001')).touch()"
    farm.supervisor.assign(demo_chunk([1], argv=[sys.executable, "-c", touch, "{output}"]))
    finished = await farm.finish()
    assert finished.outcome == "failed"
    assert finished.reason == "exited 0 but did not write frame(s) 1"
    assert finished.missing == [1]
    assert not farm.recorder.of(FramesWritten)
    assert not (farm.sync_root / "renders/shot/frame_0001.png").exists()


@pytest.mark.parametrize("delivery", [CopyToSyncRoot, RenameIntoPlace])
async def test_an_output_left_as_a_symlink_is_never_followed(
    tmp_path: Path, delivery: Callable[[Path], CopyToSyncRoot | RenameIntoPlace]
) -> None:
    """A renderer left its frame as a symlink to a file it may not read; the agent
    (root, renderers run as another user) copied that file into the sync root."""
    root = tmp_path / "root"
    secret = tmp_path / "secret"
    secret.write_text("only the agent's user reads this\n")
    source = root / "renders/.farmtui-job1.1.1/f_0001.png"
    source.parent.mkdir(parents=True)
    source.symlink_to(secret)
    with pytest.raises(OutputRefused, match="f_0001.png is (a symlink|not a regular file)"):
        await delivery(root).deliver("renders/f_0001.png", source, _fence())
    assert not (root / "renders/f_0001.png").exists()


async def test_an_output_left_as_a_fifo_is_refused_without_waiting(tmp_path: Path) -> None:
    """Opening a FIFO for reading waits for a writer: the copy's thread, for good."""
    source = tmp_path / "f_0001.png"
    os.mkfifo(source)
    with pytest.raises(OutputRefused, match="not a regular file"):
        await asyncio.wait_for(
            CopyToSyncRoot(tmp_path / "root").deliver("renders/f_0001.png", source, _fence()),
            timeout=10.0,
        )


async def test_with_an_owner_only_that_uids_files_are_delivered(tmp_path: Path) -> None:
    """With a render user, the files the agent took back from it (``no_follow.take_back``)."""
    source = tmp_path / "f_0001.png"
    source.write_bytes(b"frame")
    (tmp_path / "root").mkdir()
    someone_else = os.getuid() + 1
    fence = Fence(job_id="job1", chunk=1, attempt=1, refusal=lambda: None, owner=someone_else)
    match = f"is not its renderer's \\(it belongs to uid {os.getuid()}\\)"
    with pytest.raises(OutputRefused, match=match):
        await CopyToSyncRoot(tmp_path / "root").deliver("renders/f_0001.png", source, fence)
    mine = Fence(job_id="job1", chunk=1, attempt=1, refusal=lambda: None, owner=os.getuid())
    await CopyToSyncRoot(tmp_path / "root").deliver("renders/f_0001.png", source, mine)
    assert (tmp_path / "root/renders/f_0001.png").read_bytes() == b"frame"


@pytest.mark.parametrize("delivery", [CopyToSyncRoot, RenameIntoPlace])
async def test_a_file_that_landed_as_its_attempt_was_stopped_is_taken_back(
    tmp_path: Path, delivery: Callable[[Path], CopyToSyncRoot | RenameIntoPlace]
) -> None:
    """Break round 26 (F2): the rename into an NFS sync root hung for seconds; the
    operator cancelled the job meanwhile, and its frame landed all the same."""
    root = tmp_path / "root"
    source = root / "renders/.farmtui-job1.1.1/f_0001.png"
    source.parent.mkdir(parents=True)
    source.write_bytes(b"a frame of a cancelled attempt")
    asked = iter([None])  # current as it starts landing, stopped once it has
    fence = Fence(job_id="job1", chunk=1, attempt=1, refusal=lambda: next(asked, "cancelled"))
    with pytest.raises(FenceError, match="cancelled"):
        await delivery(root).deliver("renders/f_0001.png", source, fence)
    assert not (root / "renders/f_0001.png").exists()


async def test_a_chunk_that_wrote_its_frames_under_another_name_says_what_it_wrote(
    farm: Any, demo_chunk: Callable[..., AssignChunk]
) -> None:
    """A PNG scene asked for .jpg files wrote f_0001.png: "did not write frame(s) 1" alone
    sent artists hunting for why (break round 34a)."""
    write = "import pathlib, sys; pathlib.Path(sys.argv[1]).write_bytes(b'\\x89PNG')"
    argv = [sys.executable, "-c", write, "{outdir}/frame_0001.jpg"]
    farm.supervisor.assign(demo_chunk([1], argv=argv))
    finished = await farm.finish()
    assert finished.outcome == "failed"
    assert finished.reason == "exited 0 but did not write frame(s) 1; it wrote frame_0001.jpg"


async def test_a_stray_file_whose_name_is_not_utf8_is_named_in_escapes(
    farm: Any, demo_chunk: Callable[..., AssignChunk]
) -> None:
    """Its name, undecodable, made the report unencodable: the agent died, and then the
    next one the chunk went to (break round 34d)."""
    write = "import os, sys; open(os.path.join(os.fsencode(sys.argv[1]), b'\\xff\\xfe.png'), 'w')"
    farm.supervisor.assign(demo_chunk([1], argv=[sys.executable, "-c", write, "{outdir}"]))
    finished = await farm.finish()
    assert finished.outcome == "failed"
    assert finished.reason == "exited 0 but did not write frame(s) 1; it wrote \\xff\\xfe.png"
    encode(finished)  # what the agent sends and keeps in its outbox
