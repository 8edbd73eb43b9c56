"""The built-in demo renderer writes real PNGs and obeys its test flags."""

from __future__ import annotations

import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

from farmtui.demo_render import main, png_bytes


def test_png_is_valid_and_differs_per_frame() -> None:
    data = png_bytes(7)
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    assert (width, height) == (64, 36)
    idat_length = struct.unpack(">I", data[33:37])[0]
    raw = zlib.decompress(data[41 : 41 + idat_length])
    assert len(raw) == 36 * (1 + 64 * 3)
    assert png_bytes(8) != data


def test_writes_frames_and_prints_progress(tmp_path: Path, capsys: object) -> None:
    pattern = str(tmp_path / "out" / "f_####.png")
    assert main(["--frames", "3-4", "--output", pattern, "--seconds-per-frame", "0"]) == 0
    assert (tmp_path / "out/f_0003.png").read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "out/f_0004.png").exists()
    assert not list((tmp_path / "out").glob("*.partial"))


def test_fail_on_and_skip_write(tmp_path: Path) -> None:
    pattern = str(tmp_path / "f_####.png")
    assert (
        main(
            [
                "--frames",
                "1-3",
                "--output",
                pattern,
                "--seconds-per-frame",
                "0",
                "--skip-write",
                "2",
            ]
        )
        == 0
    )
    assert sorted(p.name for p in tmp_path.glob("*.png")) == ["f_0001.png", "f_0003.png"]
    assert (
        main(["--frames", "5-6", "--output", pattern, "--seconds-per-frame", "0", "--fail-on", "6"])
        == 1
    )
    assert (tmp_path / "f_0005.png").exists()
    assert not (tmp_path / "f_0006.png").exists()


def test_runs_as_a_module(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "farmtui.demo_render",
            "--frames",
            "7,9",
            "--output",
            str(tmp_path / "f_##.png"),
            "--seconds-per-frame",
            "0",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert result.stdout.splitlines() == [
        f"demo: rendering 2 frame(s) to {tmp_path}/f_##.png",
        "demo: frame 7 (1/2)",
        f"Saved: {tmp_path}/f_07.png",
        "demo: frame 9 (2/2)",
        f"Saved: {tmp_path}/f_09.png",
        "demo: done",
    ]


@pytest.mark.parametrize(
    ("output", "status", "said"),
    [
        ("out/no_padding.png", 2, "has no '#' padding"),
        ("/dev/null/f_####.png", 1, "cannot write frame 1"),
    ],
)
def test_a_bad_output_is_one_line_not_a_traceback(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    output: str,
    status: int,
    said: str,
) -> None:
    target = output if output.startswith("/") else str(tmp_path / output)
    assert main(["--frames", "1", "--output", target, "--seconds-per-frame", "0"]) == status
    err = capsys.readouterr().err
    assert said in err
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
