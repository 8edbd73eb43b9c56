"""What the agent writes where renderers write too: never through a symlink (break round 26)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from agent import no_follow
from agent.chunk_delivery import KEPT_MARK, is_kept, mark_kept, take_back_attempt
from agent.errors import DestinationBlocked, OutputRefused, PathEscapeError
from agent.no_follow import MOST_LEVELS, make_folder, open_folder, take_back
from agent.staging import CopyToSyncRoot, Fence, partial_folder, remove_partial_folder
from tests.agent.conftest import demo_assign

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")
NOBODY = 65534


def test_a_folder_is_reached_and_made_a_step_at_a_time_never_through_a_symlink(
    tmp_path: Path,
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    root = tmp_path / "root"
    (root / "shots").mkdir(parents=True)
    (root / "shots/a").symlink_to(elsewhere)
    with pytest.raises(PathEscapeError, match="a on its way is a symlink or not a folder"):
        make_folder(root, ("shots", "a", "renders"))
    assert not list(elsewhere.iterdir())
    make_folder(root, ("shots", "b", "renders"))
    assert (root / "shots/b/renders").is_dir()
    with pytest.raises(FileNotFoundError):
        os.close(open_folder(root, ("shots", "c")))


# A renderer's swapper, in a process of its own: renameat2(RENAME_EXCHANGE) of a folder
# and a symlink, atomically, again and again (what the break round's C program did).
SWAPPER = """
import ctypes, sys
libc = ctypes.CDLL(None, use_errno=True)
one, other = sys.argv[1].encode(), sys.argv[2].encode()
if libc.renameat2(-100, one, -100, other, 2) != 0:
    sys.exit("no renameat2")
print("swapping", flush=True)
while True:
    libc.renameat2(-100, one, -100, other, 2)
"""


def test_a_folder_swapped_for_a_symlink_during_copies_never_lets_one_out(
    tmp_path: Path,
) -> None:
    """Break round 26 (F1): a renderer swapped a folder of a job's output path for a
    symlink to /etc/cron.d while the agent (root) copied; 17 copies in 150 landed there
    (27 in 300 here before the change)."""
    root = tmp_path / "root"
    victim = tmp_path / "victim"
    victim.mkdir()
    folder = root / "shots/d"
    folder.mkdir(parents=True)
    link = root / "shots/link"
    link.symlink_to(victim)
    source = tmp_path / "frame.txt"
    source.write_text("* * * * * root id\n")
    swapper = subprocess.Popen(
        [sys.executable, "-c", SWAPPER, str(folder), str(link)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert swapper.stdout is not None
        if swapper.stdout.readline() != "swapping\n":
            pytest.skip("no renameat2 here")
        landed = asyncio.run(_copies(CopyToSyncRoot(root), source, 300))
    finally:
        swapper.kill()
        swapper.wait()
    assert not list(victim.iterdir()), "nothing lands through the symlink"
    assert landed == len(list(root.rglob("pwn_*"))), "every copy said landed is in the root"


async def _copies(delivery: CopyToSyncRoot, source: Path, count: int) -> int:
    """Copy ``source`` to ``count`` names in shots/d; how many landed."""
    fence = Fence(job_id="j", chunk=0, attempt=1, refusal=lambda: None)
    landed = 0
    for number in range(count):
        with contextlib.suppress(PathEscapeError, DestinationBlocked, FileNotFoundError):
            await delivery.deliver(f"shots/d/pwn_{number:04d}.txt", source, fence)
            landed += 1
    return landed


def test_the_kept_mark_is_made_where_it_belongs_never_through_a_planted_symlink(
    tmp_path: Path,
) -> None:
    """Break round 26 (F2): a renderer left ``.farmtui-kept -> /etc/nologin`` and failed
    its copy; the agent (root) made that file."""
    attempt = tmp_path / "0.1"
    attempt.mkdir()
    target = tmp_path / "made-by-the-agent"
    (attempt / KEPT_MARK).symlink_to(target)
    assert not is_kept(attempt), "a symlink is not the agent's mark"
    mark_kept(attempt)
    assert not target.exists()
    assert stat.S_ISREG(os.lstat(attempt / KEPT_MARK).st_mode)
    assert is_kept(attempt)


@needs_root
def test_what_the_render_user_wrote_becomes_the_agents_and_loses_its_set_id_bits(
    tmp_path: Path,
) -> None:
    attempt = tmp_path / "0.1"
    renders = attempt / "renders"
    renders.mkdir(parents=True)
    frame = renders / "f_0001.exr"
    frame.write_bytes(b"frame")
    tool = renders / "tool"
    tool.write_bytes(b"#!/bin/sh\n")
    roots = tmp_path / "roots-own"
    roots.write_text("root's\n")
    linked = renders / "linked"
    os.link(roots, linked)  # what a hard link to another's file would be
    (renders / "link").symlink_to(roots)
    for path in (attempt, renders, frame, tool):
        os.chown(path, NOBODY, NOBODY)
    os.chmod(tool, 0o6755)
    os.chmod(renders, 0o777)

    take_back(tmp_path, ("0.1",), NOBODY)

    for path in (attempt, renders, frame, tool):
        info = os.lstat(path)
        assert (info.st_uid, info.st_gid) == (0, 0), path
    assert stat.S_IMODE(os.stat(tool).st_mode) == 0o755, "no set-id bit, no write by others"
    assert stat.S_IMODE(os.stat(renders).st_mode) == 0o755
    assert not linked.exists(), "a file of another's is not the render's"
    assert roots.read_text() == "root's\n"
    assert (renders / "link").is_symlink(), "a symlink is left alone, not followed"
    assert frame.read_bytes() == b"frame"
    # Its mark, forged by the renderer, is not the agent's.
    forged = tmp_path / "0.2"
    forged.mkdir()
    (forged / KEPT_MARK).touch()
    os.chown(forged / KEPT_MARK, NOBODY, NOBODY)
    assert not is_kept(forged)


@needs_root
def test_a_tree_too_deep_is_not_taken_back(tmp_path: Path) -> None:
    deep = tmp_path / "0.1"
    path = deep
    for _ in range(MOST_LEVELS + 2):
        path = path / "d"
    path.mkdir(parents=True)
    with pytest.raises(OutputRefused, match=f"over {MOST_LEVELS} levels deep"):
        take_back(tmp_path, ("0.1",), NOBODY)


def test_a_folder_on_a_files_way_swapped_for_a_symlink_is_refused_when_it_is_read(
    tmp_path: Path,
) -> None:
    """Break round 26c (N1): a renderer put ``leak -> /root-only`` in place of its output
    folder; the agent (root) copied ``/root-only/f_0001.txt`` into the sync root."""
    secret = tmp_path / "root-only"
    secret.mkdir(mode=0o700)
    (secret / "f_0001.txt").write_text("a host key\n")
    attempt = tmp_path / "staging/job/0.1"
    (attempt / "renders").mkdir(parents=True)
    (attempt / "renders/leak").symlink_to(secret)
    root = tmp_path / "root"
    root.mkdir()
    fence = Fence(job_id="j", chunk=0, attempt=1, refusal=lambda: None, folder=attempt)
    source = attempt / "renders/leak/f_0001.txt"
    with pytest.raises(PathEscapeError, match="leak on its way is a symlink"):
        asyncio.run(CopyToSyncRoot(root).deliver("renders/leak/f_0001.txt", source, fence))
    assert not list(root.rglob("f_0001.txt"))


@needs_root
def test_a_hard_link_to_a_file_elsewhere_is_copied_not_taken(tmp_path: Path) -> None:
    """Break round 26c (N3): a file of the render user's outside its folder, hard linked
    into it, became root's with the user's content (a 4777 one, root's 0755)."""
    attempt = tmp_path / "0.1"
    attempt.mkdir()
    outside = tmp_path / "outside"
    outside.write_text("the user's\n")
    os.chown(outside, NOBODY, NOBODY)
    os.chmod(outside, 0o4777)
    os.link(outside, attempt / "f_0001.txt")
    os.chown(attempt, NOBODY, NOBODY)
    take_back(tmp_path, ("0.1",), NOBODY)
    kept = os.stat(outside)
    assert (kept.st_uid, stat.S_IMODE(kept.st_mode)) == (NOBODY, 0o4777), "left as it was"
    inside = os.stat(attempt / "f_0001.txt")
    assert (inside.st_uid, inside.st_nlink, stat.S_IMODE(inside.st_mode)) == (0, 1, 0o755)
    assert (attempt / "f_0001.txt").read_text() == "the user's\n"


@needs_root
def test_a_wide_tree_is_taken_back_with_few_descriptors(tmp_path: Path) -> None:
    """Break round 26c (N4): every folder of a level was opened at once; 1,100 of them
    failed the chunk at the usual limit of 1,024 descriptors."""
    attempt = tmp_path / "0.1"
    for number in range(400):
        (attempt / f"cache{number}").mkdir(parents=True)
    os.chown(attempt, NOBODY, NOBODY)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    in_use = len(os.listdir("/proc/self/fd"))
    resource.setrlimit(resource.RLIMIT_NOFILE, (in_use + 64, hard))
    try:
        take_back(tmp_path, ("0.1",), NOBODY)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert {os.stat(folder).st_uid for folder in attempt.iterdir()} == {0}


@needs_root
def test_a_kept_mark_the_renderer_left_is_removed_with_the_take_back(tmp_path: Path) -> None:
    """Break round 26c (N5): taken back, a renderer's forged mark became the agent's."""
    attempt = tmp_path / "job/0.1"
    attempt.mkdir(parents=True)
    (attempt / KEPT_MARK).write_text("")
    for path in (attempt, attempt / KEPT_MARK):
        os.chown(path, NOBODY, NOBODY)
    take_back_attempt(tmp_path, ("job", "0.1"), NOBODY)
    assert not (attempt / KEPT_MARK).exists()
    assert not is_kept(attempt)


@needs_root
def test_a_hard_link_made_while_the_file_is_taken_back_leaves_nothing_of_roots_outside(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Break rounds 26d and 26e (U1): the next chunk of the job, already rendering as the
    same user, linked each file elsewhere while it was taken back; chowned in place, 2,877
    files with its content became root's where it chose (30 in 108,000 even with the link
    count looked at again: a link under way in the kernel). The file is never chowned now."""
    attempt = tmp_path / "0.1"
    attempt.mkdir()
    frame = attempt / "f_0001.txt"
    frame.write_text("the user's\n")
    for path in (attempt, frame):
        os.chown(path, NOBODY, NOBODY)
    before = os.stat(frame)
    outside = tmp_path / "chosen-by-the-user"
    copy_data = no_follow.copy_data

    def linked_meanwhile(source: int, target: int, size: int) -> None:
        os.link(frame, outside)  # the racing renderer, as the copy is made
        copy_data(source, target, size)

    monkeypatch.setattr(no_follow, "copy_data", linked_meanwhile)
    take_back(tmp_path, ("0.1",), NOBODY)
    left = os.stat(outside)
    assert (left.st_uid, left.st_mode) == (NOBODY, before.st_mode), "the user's, as it was"
    inside = os.stat(frame)
    assert (inside.st_uid, inside.st_nlink) == (0, 1)
    assert inside.st_ino != before.st_ino
    assert frame.read_text() == "the user's\n"


def test_a_sparse_file_is_copied_as_sparse_and_no_further_than_it_was(tmp_path: Path) -> None:
    """Break round 26e (N3): ``truncate -s 1G`` and a hard link made the agent (root)
    write 1,056 MiB of zeros."""
    source = tmp_path / "sparse"
    with source.open("wb") as out:
        out.truncate(1024**3)
        out.seek(512 * 1024**2)
        out.write(b"data")
    target = tmp_path / "copy"
    with source.open("rb") as read, target.open("wb") as written:
        no_follow.copy_data(read.fileno(), written.fileno(), 1024**3)
    info = os.stat(target)
    assert info.st_size == 1024**3
    assert info.st_blocks * 512 < 16 * 1024**2, "the holes stay holes"
    with target.open("rb") as read:
        read.seek(512 * 1024**2)
        assert read.read(4) == b"data"


@needs_root
def test_a_file_of_many_names_is_copied_once(tmp_path: Path) -> None:
    """Break round 26f: a 1 MB frame given 2,000 names made the agent (root) write 2 GB."""
    attempt = tmp_path / "0.1"
    (attempt / "more").mkdir(parents=True)
    frame = attempt / "f_0001.exr"
    frame.write_bytes(b"frame" * 1000)
    names = [frame, *(attempt / f"alias{n}" for n in range(20))]
    names += [attempt / "more" / f"alias{n}" for n in range(20)]
    for name in names[1:]:
        os.link(frame, name)
    for path in [attempt, attempt / "more", frame]:
        os.chown(path, NOBODY, NOBODY)
    user_file = os.stat(frame).st_ino
    take_back(tmp_path, ("0.1",), NOBODY)
    inodes = {os.stat(name).st_ino for name in names}
    assert len(inodes) == 1, "one copy, linked under every name"
    assert inodes != {user_file}
    copy = os.stat(frame)
    assert (copy.st_uid, copy.st_nlink) == (0, len(names))
    assert frame.read_bytes() == b"frame" * 1000


@needs_root
def test_a_cut_short_folder_is_removed_without_copying_its_files(tmp_path: Path) -> None:
    """Break round 26f: removing a staging-off attempt's folder after the agent's death
    copied its 1.5 GB first; on a full disk it stayed, its files still the user's."""
    root = tmp_path / "root"
    assign = demo_assign([1], staging=False)
    partial = partial_folder(root, assign.outdir, assign.job_id, assign.chunk, assign.attempt)
    partial.mkdir(parents=True)
    big = partial / "big"
    with big.open("wb") as out:
        out.truncate(64 * 1024**2)
        out.write(b"not a hole")
    for path in (partial, big):
        os.chown(path, NOBODY, NOBODY)
    copied: list[int] = []
    real_copy = no_follow.copy_data
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(no_follow, "copy_data", lambda *args: copied.append(1) or real_copy(*args))
        remove_partial_folder(root, assign, NOBODY)
    assert not partial.exists()
    assert copied == []


@needs_root
def test_too_many_files_of_several_names_are_refused(tmp_path: Path) -> None:
    """Each is held open while its folder is taken back (so that its inode number is no
    new file's meanwhile, break round 26g): at most ``MOST_SHARED`` of them."""
    attempt = tmp_path / "0.1"
    attempt.mkdir()
    for number in range(no_follow.MOST_SHARED + 1):
        frame = attempt / f"f_{number:04d}"
        frame.write_bytes(b"x")
        os.link(frame, attempt / f"alias_{number:04d}")
        os.chown(frame, NOBODY, NOBODY)
    os.chown(attempt, NOBODY, NOBODY)
    with pytest.raises(OutputRefused, match="files have several names"):
        take_back(tmp_path, ("0.1",), NOBODY)


def test_a_copy_asks_before_each_block_whether_to_go_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A copy runs on a thread: asked between blocks, a stopped one ends within a block."""
    monkeypatch.setattr(no_follow, "COPY_BLOCK", 4096)
    source = tmp_path / "frame"
    source.write_bytes(os.urandom(5 * 4096))
    asked: list[int] = []

    def check() -> None:
        asked.append(1)
        if len(asked) == 3:
            raise RuntimeError("stop")

    target = tmp_path / "copy"
    with source.open("rb") as read, target.open("wb") as written, pytest.raises(RuntimeError):
        no_follow.copy_data(read.fileno(), written.fileno(), 5 * 4096, check)
    assert target.stat().st_size == 2 * 4096
    with source.open("rb") as read, target.open("wb") as written:
        no_follow.copy_data(read.fileno(), written.fileno(), 5 * 4096, lambda: None)
    assert target.read_bytes() == source.read_bytes()
