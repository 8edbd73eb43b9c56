"""Demo jobs name ``farm demo-render``, not the submitting machine's interpreter."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from farmtui.demo_render import png_bytes
from farmtui.localfarm import child_environment, demo_specs
from farmtui.renderers import build_argv


def test_demo_jobs_do_not_carry_the_submitters_interpreter() -> None:
    for spec in demo_specs():
        assert spec.argv[:2] == ["farm", "demo-render"], spec.argv
        assert sys.executable not in spec.argv
        assert not any(arg.endswith(("python", "python3")) for arg in spec.argv)
    assert build_argv("demo", None, "r/f_####.png")[:2] == ["farm", "demo-render"]


def test_farm_demo_render_renders_like_the_module(tmp_path: Path) -> None:
    # As a node runs it: `farm` found on PATH, here the one installed with this Python.
    env = child_environment(sys.executable)
    pattern = str(tmp_path / "out" / "f_####.png")
    argv = ["farm", "demo-render", "--frames", "3,1", "--output", pattern]
    done = subprocess.run(
        [*argv, "--seconds-per-frame", "0"], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert f"Saved: {tmp_path / 'out' / 'f_0003.png'}" in done.stdout
    assert (tmp_path / "out" / "f_0001.png").read_bytes() == png_bytes(1)


def test_the_local_farm_puts_its_own_farm_first_on_the_path(tmp_path: Path) -> None:
    bin_dir = tmp_path / "venv" / "bin"
    bin_dir.mkdir(parents=True)
    (bin_dir / "farm").write_text("#!/bin/sh\n", encoding="utf-8")
    env = child_environment(str(bin_dir / "python"), {"PATH": "/usr/bin"})
    assert env["PATH"] == os.pathsep.join([str(bin_dir), "/usr/bin"])
    # No farm script beside the interpreter: PATH is left as it is.
    assert child_environment(str(tmp_path / "python"), {"PATH": "/usr/bin"})["PATH"] == "/usr/bin"
