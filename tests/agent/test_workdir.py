"""A renderer runs in its own attempt's folder, never in the sync root (issue 9, item 2).

What it writes to ``.`` stays on the node and goes with the attempt; the
paths it is given (scene, output) are absolute, so they still resolve.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from agent.supervisor import JOB_FOLDER_KEPT, SYNC_ROOT_VARIABLE
from farmtui.config import TOKEN_VARIABLE
from farmtui.frames import frame_path
from farmtui.protocol import AssignChunk
from farmtui.renderers import build_argv
from tests.helpers.staging import left_in

Chunk = Callable[..., AssignChunk]

# Says where it runs, writes a file there, and leaves its frame where it is told.
PROBE = (
    "import json, os, sys; "
    "open('junk.txt', 'w').write('x'); "
    "open(sys.argv[1], 'wb').write(b'frame'); "
    "print('PROBE ' + json.dumps({'cwd': os.getcwd(), 'args': sys.argv[2:], "
    f"'root': os.environ.get('{SYNC_ROOT_VARIABLE}')}}))"
)


def probe_report(output: list[str]) -> dict[str, Any]:
    (line,) = [line for line in output if line.startswith("PROBE ")]
    report: dict[str, Any] = json.loads(line.removeprefix("PROBE "))
    return report


@pytest.mark.parametrize("staging", [True, False])
async def test_the_renderer_runs_in_its_attempts_folder_and_leaves_nothing_behind(
    farm: Any, demo_chunk: Chunk, python: str, staging: bool
) -> None:
    argv = [python, "-c", PROBE, "{outdir}/frame_0001.png"]
    farm.supervisor.assign(demo_chunk([1], argv=argv, renderer="generic", staging=staging))
    finished = await farm.finish()

    assert finished.outcome == "done", finished.reason
    report = probe_report(farm.recorder.output())
    assert Path(report["cwd"]) == farm.staging / "job1" / "1.1"
    assert report["root"] == str(farm.sync_root)
    assert (farm.sync_root / "renders/shot/frame_0001.png").read_bytes() == b"frame"
    assert not list(farm.sync_root.rglob("junk.txt")), "nothing lands in the sync root"
    assert left_in(farm.staging / "job1") == [], "the attempt's folder goes with it"


@pytest.fixture
def token_in_environment(monkeypatch: pytest.MonkeyPatch) -> str:
    """The agent was started with its token in ``FARM_TOKEN`` (before its zygote)."""
    monkeypatch.setenv(TOKEN_VARIABLE, "farm-secret-0123456789")
    return "farm-secret-0123456789"


async def test_a_renderer_never_gets_the_agents_token(
    token_in_environment: str, farm: Any, demo_chunk: Chunk, python: str
) -> None:
    """A job that prints its environment (a common way to debug one) wrote the
    token the agent was started with into a chunk log any viewer can read. Nor is it
    in its supervisor's environment, which a renderer running as root can read."""
    dump = (
        "import json, os\n"
        "try:\n"
        "    parent = open(f'/proc/{os.getppid()}/environ', 'rb').read().decode('latin-1')\n"
        "except OSError:\n"  # another user's, or not dumpable: unreadable, as it should be
        "    parent = ''\n"
        "print('ENV ' + json.dumps(dict(os.environ)))\n"
        "print('PARENT ' + json.dumps(parent))\n"
    )
    assign = demo_chunk([1], argv=[python, "-c", dump], renderer="generic", staging=False)
    assign.env = {"JOB_VARIABLE": "kept"}
    farm.supervisor.assign(assign)
    finished = await farm.finish()
    assert finished.outcome == "failed"  # no frame written: only its output matters here
    (line,) = [line for line in farm.recorder.output() if line.startswith("ENV ")]
    seen = json.loads(line.removeprefix("ENV "))
    assert seen["JOB_VARIABLE"] == "kept"
    assert TOKEN_VARIABLE not in seen
    assert token_in_environment not in line
    (parent,) = [line for line in farm.recorder.output() if line.startswith("PARENT ")]
    assert token_in_environment not in parent


async def test_a_relative_scene_is_given_to_the_renderer_in_the_sync_root(
    farm: Any, demo_chunk: Chunk, python: str
) -> None:
    scene = farm.sync_root / "shots" / "a.blend"
    scene.parent.mkdir()
    scene.write_text("scene")
    # Command builders put the scene in the argv as written; {scene} is the token form.
    argv = [python, "-c", PROBE, "{outdir}/frame_0001.png", "{scene}", "shots/a.blend", "other"]
    assign = demo_chunk([1], argv=argv, renderer="generic")
    assign.scene = "shots/a.blend"
    farm.supervisor.assign(assign)
    finished = await farm.finish()

    assert finished.outcome == "done", finished.reason
    args = probe_report(farm.recorder.output())["args"]
    assert args == [str(scene), str(scene), "other"]


def test_a_blender_command_gets_the_scene_from_the_sync_root(farm: Any) -> None:
    from agent.supervisor import ChunkRun

    argv = build_argv("blender", "shots/a.blend", "renders/shot/frame_####.png")
    assign = AssignChunk(
        job_id="job1", chunk=0, attempt=1, renderer="blender", argv=argv, frames=[1, 2],
        outputs=["renders/shot/frame_0001.png", "renders/shot/frame_0002.png"],
        outdir="renders/shot", output="renders/shot/frame_####.png", scene="shots/a.blend",
    )  # fmt: skip
    run = ChunkRun(farm.supervisor, assign)
    command, cwd = run._prepare()
    assert str(farm.sync_root / "shots/a.blend") in command
    assert "shots/a.blend" not in command
    assert cwd == farm.staging / "job1" / "0.1"
    assert all(Path(arg).is_absolute() for arg in command if "frame_" in arg)


def make_images(folder: Path, name: str, frames: list[int]) -> None:
    """A PNG for each of ``frames``, each of its own colour, by the real ffmpeg."""
    folder.mkdir(parents=True)
    for frame in frames:
        colour = f"color=c=0x{frame % 10}0{frame % 10}0{frame % 10}0:s=16x16"
        make = ["ffmpeg", "-v", "error", "-f", "lavfi", "-i", colour, "-frames:v", "1"]
        subprocess.run([*make, str(folder / name.format(frame))], check=True, timeout=60)


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs the real ffmpeg")
async def test_an_ffmpeg_plate_on_twos_is_read_from_the_sync_root_file_by_file(
    farm: Any,
) -> None:
    """``--scene plates/frame_####.png``: ffmpeg reads the chunk's own files, in the sync
    root (break round 33c: the padding was passed on as written, and every chunk failed),
    a plate with only its odd files too (ffmpeg's image2 stopped at the first gap). The
    list of the files is the attempt's, and goes with it."""
    make_images(farm.sync_root / "plates", "frame_{:04d}.png", [1, 3, 5])
    pattern = "renders/shot/frame_####.png"
    assign = AssignChunk(
        job_id="job1", chunk=0, attempt=1, renderer="ffmpeg",
        argv=build_argv("ffmpeg", "plates/frame_####.png", pattern), frames=[1, 3, 5],
        outputs=[frame_path(pattern, f) for f in (1, 3, 5)],
        outdir="renders/shot", output=pattern, scene="plates/frame_####.png",
    )  # fmt: skip
    farm.supervisor.assign(assign)
    finished = await farm.finish()
    assert finished.outcome == "done", finished.reason
    written = farm.sync_root / "renders" / "shot"
    assert sorted(p.name for p in written.iterdir()) == [
        "frame_0001.png",
        "frame_0003.png",
        "frame_0005.png",
    ]
    assert left_in(farm.staging / "job1") == []


async def test_a_scene_escaping_the_sync_root_is_refused(
    farm: Any, demo_chunk: Chunk, python: str
) -> None:
    assign = demo_chunk([1], argv=[python, "-c", "pass", "{scene}"], renderer="generic")
    assign.scene = "../outside.blend"
    farm.supervisor.assign(assign)
    finished = await farm.finish()
    assert finished.outcome == "failed"
    assert "escapes" in finished.reason
    assert left_in(farm.staging / "job1") == []


async def test_a_jobs_folder_waits_for_its_next_chunk_then_goes_once_unused(
    farm: Any, demo_chunk: Chunk, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Made and removed with every chunk, a job's folder cost two of an attempt's costliest
    calls (0.3-0.5 ms each on this machine's ext4)."""
    farm.supervisor.assign(demo_chunk([1], chunk=1))
    assert (await farm.finish()).outcome == "done"
    job = farm.staging / "job1"
    folder = job.stat().st_ino
    assert left_in(job) == [], "nothing of the attempt is left"

    farm.recorder.messages.clear()
    farm.supervisor.assign(demo_chunk([2], chunk=2))
    assert (await farm.finish()).outcome == "done"
    assert job.stat().st_ino == folder, "the job's next chunk made its folder again"

    farm.supervisor.remove_job_folders(JOB_FOLDER_KEPT)
    assert job.exists(), "removed while the job may still send chunks here"
    later = farm.supervisor.clock() + JOB_FOLDER_KEPT
    monkeypatch.setattr(farm.supervisor, "clock", lambda: later)
    farm.supervisor.remove_job_folders(JOB_FOLDER_KEPT)
    assert not job.exists()


async def test_a_later_attempt_renders_in_the_folder_an_earlier_one_left_empty(
    farm: Any, demo_chunk: Chunk, python: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A rename, where a mkdir and a rmdir cost 0.4-0.6 ms a chunk on this machine's ext4."""
    made: list[str] = []
    mkdir = os.mkdir

    def counting_mkdir(path: Any, mode: int = 0o777) -> None:
        mkdir(path, mode)
        made.append(str(path))  # only those it made: an existing folder raised above

    argv = [python, "-c", "import os; print('CWD', os.getcwd())"]
    for chunk in (1, 2):
        if chunk == 2:
            monkeypatch.setattr(os, "mkdir", counting_mkdir)
        assign = demo_chunk([chunk], chunk=chunk, argv=argv, renderer="generic", staging=False)
        assign.outputs, assign.output = [], ""  # nothing to deliver: its folder is left empty
        farm.supervisor.assign(assign)
        assert (await farm.finish()).outcome == "done"
    assert f"CWD {farm.staging / 'job1' / '2.1'}" in farm.recorder.output()
    assert made == [], "the second attempt made its folder anew"
    assert left_in(farm.staging / "job1") == []

    await farm.supervisor.kill_all("the agent stops")
    assert [p.name for p in farm.staging.iterdir()] == [".attempts"], "spare folders left"


async def test_a_symlink_a_renderer_left_for_its_folder_is_never_a_later_attempts_folder(
    farm: Any, demo_chunk: Chunk, python: str, tmp_path: Path
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    swap = (
        f"import os; d = os.getcwd(); os.chdir('/'); os.rmdir(d); os.symlink({str(elsewhere)!r}, d)"
    )
    probe = "import os; print('CWD', os.path.realpath('.'))"
    for chunk, code in ((1, swap), (2, probe)):
        farm.recorder.messages.clear()
        argv = [python, "-c", code]
        assign = demo_chunk([chunk], chunk=chunk, argv=argv, renderer="generic", staging=False)
        assign.outputs, assign.output = [], ""
        farm.supervisor.assign(assign)
        assert (await farm.finish()).outcome == "done"
    (line,) = [line for line in farm.recorder.output() if line.startswith("CWD")]
    assert line == f"CWD {farm.staging / 'job1' / '2.1'}"
    assert list(elsewhere.iterdir()) == []
    assert not (farm.staging / "job1" / "1.1").is_symlink(), "the renderer's symlink was left"
