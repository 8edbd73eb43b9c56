"""Copies into the sync root an agent was killed in the middle of leave no file behind."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import msgspec

from agent.copy_records import RECORDS, CopyRecords, temporary_name
from farmtui.path_limits import MAX_NAME_BYTES
from tests.agent.conftest import demo_assign, kill_9_when

# An agent's supervisor copying a rendered chunk into the sync root (``argv[2]``) to a
# filer that takes the first block and then hangs: it says so in ``COPYING`` and waits
# there to be killed.
_COPIER = """
import asyncio, sys, threading
from pathlib import Path
import msgspec
from agent import no_follow
from agent.staging import CopyToSyncRoot
from agent.supervisor import Storage, Supervisor
from farmtui.protocol import AssignChunk

staging, sync_root, assign = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
copy_range = no_follow._copy_range

def hanging_filer(source, target, offset, count):
    copied = copy_range(source, target, offset, count)
    (staging.parent / "COPYING").write_text("1")
    threading.Event().wait()

no_follow.COPY_BLOCK = 16
no_follow._copy_range = hanging_filer

class Nothing:
    def send(self, message):
        pass

async def main():
    supervisor = Supervisor(Nothing(), agent_id="copier", staging_root=staging, zygote=False,
                            storage=Storage(sync_root=sync_root, delivery=None))
    supervisor.storage = Storage(
        sync_root=sync_root, delivery=CopyToSyncRoot(sync_root, supervisor.copy_records)
    )
    supervisor.assign(msgspec.json.decode(assign, type=AssignChunk))
    await asyncio.Event().wait()

asyncio.run(main())
"""


async def test_a_copy_cut_by_kill_9_leaves_its_temporary_file_only_until_the_next_start(
    farm: Any, tmp_path: Path
) -> None:
    """Break round 30b: each kill -9 of an agent in the middle of a copy left its
    ``.frame.farmtui-XXXXXXXX.tmp`` in the sync root for good. The next start's sweep
    removes it, and nothing else."""
    copying = [
        str(farm.staging),
        str(farm.sync_root),
        msgspec.json.encode(demo_assign([1])).decode(),
    ]
    await kill_9_when(_COPIER, copying, tmp_path / "COPYING")
    shot = farm.sync_root / "renders/shot"
    [left] = list(shot.iterdir())
    assert left.name.startswith(".frame_0001.png.farmtui-"), left.name
    (shot / "frame_0002.png").write_bytes(b"another node's frame")

    again = farm.supervisor  # a supervisor on the same staging: the agent's next start
    assert await asyncio.to_thread(again.copy_records.sweep, farm.sync_root) == 1
    assert [path.name for path in shot.iterdir()] == ["frame_0002.png"]
    assert list((farm.staging / RECORDS).iterdir()) == [], "its record goes too"


async def test_the_sweep_removes_only_a_copys_own_file_never_through_a_symlink(
    tmp_path: Path,
) -> None:
    root = tmp_path / "sync"
    (root / "a/b").mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    (root / "link").symlink_to(outside)
    records = CopyRecords(tmp_path / "staging")
    made = temporary_name("f.png", "0123abcd")
    for folder in (root / "a/b", outside):
        (folder / made).write_bytes(b"half a frame")
    (root / "a/b/f.png").write_bytes(b"a frame")
    assert records.note(made, ("a", "b"))
    # A record planted by hand: through a symlink, and names that are not a copy's.
    (records.folder / made.replace("0123abcd", "0123abce")).write_text("link")
    (records.folder / "f.png").write_text("a/b")
    (outside / made.replace("0123abcd", "0123abce")).write_bytes(b"not ours to reach")
    assert records.sweep(root) == 0, "a copy of this process' own may still be writing it"
    records.done(made)
    assert (root / "a/b" / made).exists(), "done: renamed or removed by its copy, not here"
    records.note(made, ("a", "b"))
    fresh = CopyRecords(tmp_path / "staging")  # the next run of the agent
    assert fresh.sweep(root) == 1
    assert sorted(path.name for path in (root / "a/b").iterdir()) == ["f.png"]
    assert sorted(path.name for path in outside.iterdir()) == sorted(
        [made, made.replace("0123abcd", "0123abce")]
    )
    assert list(records.folder.iterdir()) == []


def test_the_longest_name_a_job_may_have_still_has_a_temporary_file(tmp_path: Path) -> None:
    """A name the submit check lets through is never too long for its copy's temporary file
    (245-byte names rendered, then failed their copy into place on every retry)."""
    longest = "é" * (MAX_NAME_BYTES // 2)
    temporary = tmp_path / temporary_name(longest, "0123abcd")
    temporary.write_bytes(b"frame")
    assert len(temporary.name.encode()) <= 255
