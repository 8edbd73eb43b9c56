"""The ffmpeg adapter's argv run by the real ffmpeg, chunk by chunk.

Inputs are made by ffmpeg itself (``testsrc``: every frame differs), once as a
video file and once as an image sequence. Each chunk of a stepped, a gapped and a
reversed frame list is rendered by the argv a node would run; the files written
must be exactly the chunk's frames, real PNGs (ffprobe), and frame N of the job
must be frame N of the input (compared pixel for pixel with the sequence).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from farmtui.frames import chunk_frames, frame_path, parse_frames
from farmtui.renderers import (
    build_argv,
    expand,
    frame_tokens,
    input_list,
    outdir_tokens,
    tokens_used,
)
from server.failures import last_error_line

FFMPEG = shutil.which("ffmpeg")
FFPROBE = shutil.which("ffprobe")
pytestmark = pytest.mark.skipif(
    FFMPEG is None or FFPROBE is None, reason="needs the real ffmpeg and ffprobe"
)

INPUT_FRAMES = 24
PATTERN = "renders/plate_####.png"


def run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, f"{argv}\n{done.stderr[-2000:]}"
    return done


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A lossless video and a PNG sequence (src_0001.png ...) of the same 24 frames."""
    folder = tmp_path_factory.mktemp("ffmpeg-inputs")
    source = ["-f", "lavfi", "-i", "testsrc=size=48x32:rate=24"]
    quiet = [str(FFMPEG), "-hide_banner", "-nostdin", "-loglevel", "error", "-y"]
    sequence = folder / "src_%04d.png"
    run([*quiet, *source, "-frames:v", str(INPUT_FRAMES), "-start_number", "1", str(sequence)])
    video = folder / "plate.mkv"
    run([*quiet, *source, "-frames:v", str(INPUT_FRAMES), "-c:v", "ffv1", str(video)])
    padded = folder / "src_####.png"
    # ffmpeg reads a "%" anywhere in the path as its pattern's: one in a folder's name too.
    percent = folder / "plates 100%"
    percent.mkdir()
    for frame in folder.glob("src_*.png"):
        shutil.copy(frame, percent / frame.name)
    # Sequences numbered from 0 and from 1001: image2 looks for a first file in 0-4 only.
    for first in (0, 1001):
        shifted = folder / f"from{first}"
        shifted.mkdir()
        for index in range(INPUT_FRAMES):
            shutil.copy(folder / f"src_{index + 1:04d}.png", shifted / f"p_{first + index:04d}.png")
    return {
        "video": video,
        "sequence": sequence,
        "padded": padded,
        "percent": percent / "src_####.png",
        "folder": folder,
    }


def pixel_digests(images: list[Path]) -> list[str]:
    """The MD5 of each image's decoded RGB pixels, in order (one ffmpeg run for all)."""
    argv = [str(FFMPEG), "-v", "error"]
    for image in images:
        argv += ["-f", "image2", "-pattern_type", "none", "-i", str(image)]  # "%" is a "%"
    for index in range(len(images)):
        argv += ["-map", str(index)]
    lines = run([*argv, "-pix_fmt", "rgb24", "-f", "framemd5", "-"]).stdout.splitlines()
    rows = [line.split(",") for line in lines if line and not line.startswith("#")]
    by_stream = {int(row[0]): row[-1].strip() for row in rows}
    assert len(rows) == len(images) == len(by_stream), lines
    return [by_stream[index] for index in range(len(images))]


@pytest.fixture(scope="module")
def source_pixels(inputs: dict[str, Path]) -> dict[int, str]:
    """Input frame N -> the digest of its pixels; every frame of testsrc differs."""
    done = run(
        [str(FFMPEG), "-v", "error", "-i", str(inputs["sequence"]), "-pix_fmt", "rgb24",
         "-f", "framemd5", "-"]
    )  # fmt: skip
    rows = [line.split(",") for line in done.stdout.splitlines() if not line.startswith("#")]
    digests = {index + 1: row[-1].strip() for index, row in enumerate(rows)}
    assert len(set(digests.values())) == INPUT_FRAMES
    return digests


def probe(image: Path) -> dict[str, object]:
    done = run(
        [
            str(FFPROBE), "-v", "error", "-select_streams", "v:0", "-count_frames",
            "-show_entries", "stream=codec_name,width,height,nb_read_frames", "-of", "json",
            str(image),
        ]
    )  # fmt: skip
    stream: dict[str, object] = json.loads(done.stdout)["streams"][0]
    return stream


def chunk_argv(scene: Path, frames: list[int], outdir: Path) -> list[str]:
    """What a node runs for one chunk: the job's argv expanded for it, with the list of
    its files written (beside ``outdir``, as the agent does in the attempt's folder)."""
    argv = build_argv("ffmpeg", str(scene), PATTERN, ["-loglevel", "error"])
    tokens = {**frame_tokens(frames), **outdir_tokens(str(outdir))}
    if "input_list" in tokens_used(argv):
        listed = outdir.with_name(outdir.name + ".ffconcat")
        listed.write_text(input_list(str(scene), frames))
        tokens["input_list"] = str(listed)
    return expand(argv, tokens)


def render_chunk(scene: Path, frames: list[int], outdir: Path) -> None:
    run(chunk_argv(scene, frames, outdir))


@pytest.mark.parametrize(
    ("kind", "frames", "chunk"),
    [
        ("video", "1-12x3", 2),  # stepped: 1,4 7,10 (the case -start_number got wrong)
        ("sequence", "1-12x3", 2),  # the same from an image sequence
        ("video", "2,5,9-11,20", 3),  # gapped: chunks follow the runs: 2,5 9-11 20
        ("video", "12-1x4", 2),  # reversed and stepped: 12,8 4
        ("sequence", "24-19", 4),  # reversed: 24-21 20,19
        ("padded", "1-12x3", 2),  # the sequence named with the farm's padding, src_####.png
        ("percent", "3-6", 2),  # the same in a folder named "plates 100%"
    ],
)
def test_every_chunk_writes_exactly_its_frames(
    inputs: dict[str, Path],
    source_pixels: dict[int, str],
    tmp_path: Path,
    kind: str,
    frames: str,
    chunk: int,
) -> None:
    job_frames = parse_frames(frames)
    for index, chunk_of in enumerate(chunk_frames(job_frames, chunk)):
        outdir = tmp_path / f"chunk{index}"
        outdir.mkdir()
        render_chunk(inputs[kind], chunk_of, outdir)
        expected = sorted(Path(frame_path(PATTERN, frame)).name for frame in chunk_of)
        assert sorted(p.name for p in outdir.iterdir()) == expected, (frames, chunk_of)
        written = [outdir / Path(frame_path(PATTERN, frame)).name for frame in chunk_of]
        for image in written:
            info = probe(image)
            assert info["codec_name"] == "png"
            assert (info["width"], info["height"]) == (48, 32)
            assert info["nb_read_frames"] == "1"
        # Frame N of the job is frame N of the input, pixel for pixel.
        assert pixel_digests(written) == [source_pixels[frame] for frame in chunk_of]


def test_a_chunk_past_the_end_of_the_input_writes_only_what_exists(
    inputs: dict[str, Path], tmp_path: Path
) -> None:
    """Frames the input lacks are missing, so the agent's output check fails the chunk."""
    render_chunk(inputs["video"], [22, 24, 26], tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plate_0022.png", "plate_0024.png"]


def test_a_node_folder_with_a_percent_sign_gets_every_frame(
    inputs: dict[str, Path], tmp_path: Path
) -> None:
    """ffmpeg reads its whole output path as the pattern; a node's state folder or a job's
    outdir named "100%" once failed every chunk."""
    outdir = tmp_path / "state 100%" / "renders %d"
    outdir.mkdir(parents=True)
    render_chunk(inputs["video"], [3, 4, 5], outdir)
    assert sorted(p.name for p in outdir.iterdir()) == [
        "plate_0003.png",
        "plate_0004.png",
        "plate_0005.png",
    ]


@pytest.mark.parametrize(
    ("first", "frames", "chunk"),
    [
        (0, "0-11", 4),  # a sequence from file 0: frame 0 of the job is p_0000
        (1001, "1001-1012x3", 2),  # from file 1001, stepped: 1001,1004 1007,1010
        (1001, "1010-1003", 3),  # reversed: 1010-1008 1007-1005 1004,1003
        (0, "5,9-11", 3),  # gapped: chunks follow the runs
    ],
)
def test_each_file_of_an_image_sequence_is_its_own_frame(
    inputs: dict[str, Path], tmp_path: Path, first: int, frames: str, chunk: int
) -> None:
    """Frame N of the job is file N of the sequence, wherever its numbers start (a
    sequence from 0 was written one file late, one from 1001 failed every chunk)."""
    source = inputs["folder"] / f"from{first}"
    for index, chunk_of in enumerate(chunk_frames(parse_frames(frames), chunk)):
        for padding, scene in enumerate((source / "p_####.png", source / "p_%04d.png")):
            outdir = tmp_path / f"chunk{index}-{padding}"
            outdir.mkdir()
            render_chunk(scene, chunk_of, outdir)
            expected = sorted(Path(frame_path(PATTERN, frame)).name for frame in chunk_of)
            assert sorted(p.name for p in outdir.iterdir()) == expected, (frames, chunk_of)
            written = [outdir / Path(frame_path(PATTERN, frame)).name for frame in chunk_of]
            originals = [source / f"p_{frame:04d}.png" for frame in chunk_of]
            assert pixel_digests(written) == pixel_digests(originals)


def test_a_printf_sequence_in_a_folder_with_a_percent_sign(
    inputs: dict[str, Path], tmp_path: Path
) -> None:
    """An input already written in %04d has its folder's "%" doubled too."""
    render_chunk(inputs["folder"] / "plates 100%" / "src_%04d.png", [3, 4], tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plate_0003.png", "plate_0004.png"]


@pytest.mark.parametrize("hole", [1003, 1004])
def test_a_chunk_with_a_file_missing_fails_and_names_it(
    inputs: dict[str, Path], tmp_path: Path, hole: int
) -> None:
    """image2 looked up to 4 numbers on for a first file: with p_1003 missing, the chunk
    1003-1005 wrote p_1004-1006 as frames 1003-1005, and was done (break round 34c).
    A file missing further in ended the chunk early, its error naming no file."""
    holed = tmp_path / "holed"
    shutil.copytree(inputs["folder"] / "from1001", holed)
    (holed / f"p_{hole}.png").unlink()
    outdir = tmp_path / "out"
    outdir.mkdir()
    argv = chunk_argv(holed / "p_####.png", [1003, 1004, 1005], outdir)
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode != 0
    assert f"{holed}/p_{hole}.png" in last_error_line(done.stderr.splitlines())
    assert {p.name for p in outdir.iterdir()} <= {"plate_1003.png"}


@pytest.mark.parametrize(
    ("frames", "chunk", "folder"),
    [
        ("1-23x2", 4, "it's 100% twos"),
        ("23-1x2", 5, "grade 100%done"),  # "%d" for image2, which reads each file
        ("3-15x4", 2, "x%{y} a%*"),  # "%{" and "%*" too
    ],
)
def test_a_plate_on_twos_renders_from_its_own_files(
    inputs: dict[str, Path], tmp_path: Path, frames: str, chunk: int, folder: str
) -> None:
    """A sequence with only the odd files (a plate shot on twos) failed every chunk:
    image2 reads consecutive files and stopped at the first number missing."""
    twos = tmp_path / folder
    twos.mkdir()
    for frame in range(1, INPUT_FRAMES + 1, 2):
        shutil.copy(inputs["folder"] / f"src_{frame:04d}.png", twos / f"t_{frame:04d}.png")
    for index, chunk_of in enumerate(chunk_frames(parse_frames(frames), chunk)):
        outdir = tmp_path / f"chunk{index}"
        outdir.mkdir()
        render_chunk(twos / "t_%04d.png", chunk_of, outdir)
        written = [outdir / Path(frame_path(PATTERN, frame)).name for frame in chunk_of]
        assert sorted(outdir.iterdir()) == sorted(written), (frames, chunk_of)
        originals = [twos / f"t_{frame:04d}.png" for frame in chunk_of]
        assert pixel_digests(written) == pixel_digests(originals)


def test_a_movie_whose_name_looks_like_a_pattern_is_read_as_a_movie(
    inputs: dict[str, Path], tmp_path: Path
) -> None:
    """ "my%20day.mp4" was taken for an image sequence and every chunk failed."""
    movie = tmp_path / "my%20day #2.mkv"
    shutil.copy(inputs["video"], movie)
    render_chunk(movie, [2, 3], tmp_path)
    assert sorted(p.name for p in tmp_path.glob("*.png")) == ["plate_0002.png", "plate_0003.png"]


def test_a_filter_of_the_submitters_follows_the_adapters(
    inputs: dict[str, Path], tmp_path: Path
) -> None:
    """ffmpeg keeps the last -vf it is given: one in the extra options (before the
    adapter's) was dropped without a word, and the job was done at the input's size."""
    argv = build_argv("ffmpeg", str(inputs["padded"]), PATTERN, ["-vf", "scale=16:12"])
    tokens = {**frame_tokens([3, 5]), **outdir_tokens(str(tmp_path))}
    listed = tmp_path / "inputs.ffconcat"
    listed.write_text(input_list(str(inputs["padded"]), [3, 5]))
    run(expand(argv, {**tokens, "input_list": str(listed)}))
    for frame in (3, 5):
        info = probe(tmp_path / Path(frame_path(PATTERN, frame)).name)
        assert (info["width"], info["height"]) == (16, 12)


def test_a_chunk_read_from_its_list_logs_no_timestamp_noise(
    inputs: dict[str, Path], tmp_path: Path
) -> None:
    """Three lines of "DTS ... out of order" a frame: 6,000 for a chunk of 2,000."""
    argv = chunk_argv(inputs["padded"], [1, 3, 5, 7], tmp_path)
    at = argv.index("-loglevel")
    argv[at : at + 2] = ["-loglevel", "info"]  # what a chunk's log has
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert "out of order" not in done.stderr
    assert "Unused options" not in done.stderr  # an option only image2 reads, for each
