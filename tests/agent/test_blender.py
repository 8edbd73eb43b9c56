"""A real Blender render through the supervisor (Cycles on CPU, 32x18, 1 sample)."""

from __future__ import annotations

import shutil
import subprocess
import textwrap
from pathlib import Path
from typing import Any

import pytest

from farmtui.frames import frame_path
from farmtui.protocol import AssignChunk, ChunkProgress, ChunkStarted, FramesWritten
from farmtui.renderers import build_argv

pytestmark = [
    pytest.mark.blender,
    pytest.mark.skipif(shutil.which("blender") is None, reason="blender is not installed"),
]

MAKE_SCENE = textwrap.dedent(
    """
    import sys
    import bpy

    scene = bpy.context.scene
    scene.render.engine = "CYCLES"
    scene.cycles.device = "CPU"
    scene.cycles.samples = 1
    scene.cycles.use_denoising = False
    scene.render.resolution_x = 32
    scene.render.resolution_y = 18
    scene.render.resolution_percentage = 100
    scene.render.image_settings.file_format = "PNG"
    scene.frame_start = 1
    scene.frame_end = 10
    bpy.ops.wm.save_as_mainfile(filepath=sys.argv[sys.argv.index("--") + 1])
    """
)


@pytest.fixture(scope="module")
def tiny_blend(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("blend")
    script = folder / "make_scene.py"
    script.write_text(MAKE_SCENE)
    scene = folder / "tiny.blend"
    subprocess.run(
        ["blender", "-b", "--factory-startup", "--python", str(script), "--", str(scene)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    return scene


def blender_chunk(scene: Path, pattern: str, frames: list[int], chunk: int = 0) -> AssignChunk:
    """A chunk of a Blender job as the leader hands it over: the adapter's command line."""
    return AssignChunk(
        job_id="blendjob",
        chunk=chunk,
        attempt=1,
        renderer="blender",
        argv=build_argv("blender", str(scene), pattern, []),
        frames=frames,
        outputs=[frame_path(pattern, f) for f in frames],
        outdir=pattern.rsplit("/", 1)[0],
        output=pattern,
    )


async def test_blender_renders_exactly_the_chunk_frames(farm: Any, tiny_blend: Path) -> None:
    pattern = "renders/blender/frame_####.png"
    frames = [2, 3, 5]
    farm.supervisor.assign(blender_chunk(tiny_blend, pattern, frames, chunk=1))
    finished = await farm.finish(within=120)

    assert finished.outcome == "done", finished.reason
    command = farm.recorder.of(ChunkStarted)[0].command
    assert command[-2:] == ["-f", "2,3,5"]
    for frame in frames:
        data = (farm.sync_root / frame_path(pattern, frame)).read_bytes()
        assert data.startswith(b"\x89PNG")
    assert sorted(p.name for p in (farm.sync_root / "renders/blender").iterdir()) == [
        "frame_0002.png",
        "frame_0003.png",
        "frame_0005.png",
    ]
    staged = sorted(f for m in farm.recorder.of(FramesWritten) if m.staged for f in m.frames)
    assert staged == frames
    progress = farm.recorder.of(ChunkProgress)
    assert progress
    assert {p.frame for p in progress} <= set(frames)
    assert progress[-1].fraction == pytest.approx(1.0)


async def test_a_png_scene_asked_for_jpeg_files_writes_jpeg(farm: Any, tiny_blend: Path) -> None:
    """The pattern's extension picks Blender's format: a PNG scene wrote f_0001.png for
    f_####.jpg, and every attempt failed for the files it never wrote."""
    farm.supervisor.assign(blender_chunk(tiny_blend, "renders/jpeg/f_####.jpg", [4]))
    finished = await farm.finish(within=120)

    assert finished.outcome == "done", finished.reason
    written = farm.sync_root / "renders/jpeg/f_0004.jpg"
    assert written.read_bytes().startswith(b"\xff\xd8\xff")  # a JPEG's magic
    assert [p.name for p in written.parent.iterdir()] == ["f_0004.jpg"]
