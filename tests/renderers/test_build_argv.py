"""Argv templates per renderer and token expansion."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from farmtui.protocol import JobSpec
from farmtui.renderers import (
    FFMPEG_LIST_FILTER,
    RendererError,
    build_argv,
    expand,
    frame_tokens,
    input_list,
    outdir_tokens,
)


def test_expand_substitutes_every_token_and_keeps_literal_braces() -> None:
    tokens = {
        **frame_tokens([5, 6, 7]),
        "outdir": "/o",
        "output": "/o/f_####.png",
        "scene": "a.blend",
    }
    argv = [
        "{scene}",
        "-s",
        "{start}",
        "-e",
        "{end}",
        "-j",
        "{step}",
        "{frames}",
        "{output}",
        "{{x}}",
    ]
    assert expand(argv, tokens) == [
        "a.blend",
        "-s",
        "5",
        "-e",
        "7",
        "-j",
        "1",
        "5,6,7",
        "/o/f_####.png",
        "{x}",
    ]


def test_unknown_tokens_are_errors() -> None:
    with pytest.raises(RendererError, match=r"unknown token \{frame\}"):
        expand(["{frame}"], frame_tokens([1]))


def test_known_tokens_without_a_value_are_errors() -> None:
    with pytest.raises(RendererError, match=r"\{scene\} has no value"):
        expand(["{scene}"], frame_tokens([1]))


def test_braces_that_are_not_tokens_pass_through() -> None:
    assert expand(['{"a": 1}', "{ spaced }", "{}"], {}) == ['{"a": 1}', "{ spaced }", "{}"]


@pytest.mark.parametrize(
    ("frames", "start", "end", "step"),
    [
        ([1, 2, 3], "1", "3", "1"),
        ([1, 6, 11], "1", "11", "5"),
        ([9, 8, 7], "7", "9", "1"),
        ([4], "4", "4", "1"),
        ([-3, -2], "-3", "-2", "1"),
        ([20, 18, 16], "16", "20", "2"),
    ],
)
def test_frame_tokens(frames: list[int], start: str, end: str, step: str) -> None:
    tokens = frame_tokens(frames)
    assert (tokens["start"], tokens["end"], tokens["step"]) == (start, end, step)
    assert tokens["frames"] == ",".join(map(str, frames))


def test_a_range_is_never_made_up_for_unevenly_spaced_frames() -> None:
    # A chunk cut by an older leader: 1-12 would render frames that are not its own.
    tokens = frame_tokens([1, 5, 10, 11, 12])
    assert expand(["{frames}"], tokens) == ["1,5,10,11,12"]
    with pytest.raises(RendererError, match="not evenly spaced"):
        expand(["nuke", "-F", "{start}-{end}x{step}"], tokens)


def test_blender_renders_exactly_the_chunk_frames_into_outdir() -> None:
    assert build_argv("blender", "shots/a.blend", "renders/a/frame_####.png", ["-E", "CYCLES"]) == [
        "blender",
        "-b",
        "shots/a.blend",
        "-o",
        "{outdir}/frame_####.png",
        "-F",
        "PNG",
        "-E",
        "CYCLES",
        "-f",
        "{frames}",
    ]


@pytest.mark.parametrize(
    ("pattern", "extra", "format_args"),
    [
        ("r/f_####.jpg", [], ["-F", "JPEG"]),
        ("r/f_####.TIFF", [], ["-F", "TIFF"]),
        ("r/f_####.exr", [], []),  # the scene's own EXR, single or multilayer
        ("r/f_####", [], []),  # a scene with File Extensions off writes f_0001
        ("r/f_####.j2c", [], []),  # other names: the scene's format
        ("r/f_####.png", ["-F", "OPEN_EXR"], []),  # the submitter's own -F wins
    ],
)
def test_blender_is_told_the_format_of_the_pattern_s_extension(
    pattern: str, extra: list[str], format_args: list[str]
) -> None:
    """A PNG scene asked for f_####.jpg wrote f_0001.png and failed for files it never wrote."""
    argv = build_argv("blender", "a.blend", pattern, extra)
    output = argv.index("-o") + 2
    assert argv[output : output + len(format_args)] == format_args
    assert argv.count("-F") == (1 if format_args or extra else 0)


def test_braces_in_a_scene_or_output_name_are_not_tokens() -> None:
    """A folder "v{2} final" was refused as an unknown token; "{frames}" in an output
    name was filled with the chunk's frames."""
    argv = build_argv("blender", "shots/v{2} final/a.blend", "r/{frames}/f{v}_####.png")
    expanded = expand(argv, {**frame_tokens([1, 2]), **outdir_tokens("/o")})
    assert expanded[2] == "shots/v{2} final/a.blend"
    assert expanded[4] == "/o/f{v}_####.png"
    ffmpeg = build_argv("ffmpeg", "in/{a}/p.mov", "r/c{b}_####.png")
    expanded = expand(ffmpeg, {**frame_tokens([1, 2]), **outdir_tokens("/o")})
    assert "in/{a}/p.mov" in expanded
    assert expanded[-1] == "/o/c{b}_%04d.png"
    listed = input_list("in/{a}/p_####.png", [2, 1])
    assert listed.splitlines() == [
        "ffconcat version 1.0",
        "file 'in/{a}/p_0001.png'",
        "option pattern_type none",
        "duration 1",
        "file 'in/{a}/p_0002.png'",
        "option pattern_type none",
        "duration 1",
    ]


def test_ffmpeg_uses_printf_padding_and_names_files_after_the_job_frames() -> None:
    argv = build_argv("ffmpeg", "plate.mov", "renders/plate_####.png", [])
    assert argv[-1] == "{outdir_printf}/plate_%04d.png"
    # Files are named after each frame's timestamp (its job frame), never numbered
    # consecutively from -start_number (which names a stepped chunk 1,2,3 for 1,4,7).
    assert "-start_number" not in argv
    assert argv[argv.index("-frame_pts") + 1] == "1"
    assert argv[argv.index("-r") + 1] == "1"
    tokens = {**frame_tokens([10, 13]), **outdir_tokens("/o")}
    assert expand(argv, tokens)[argv.index("-vf") + 1] == (
        r"settb=1,setpts=N+1,trim=end_frame=13,"
        r"select=between(n+1\,10\,13)*not(mod(n+1-10\,3))"
    )


def test_ffmpeg_keeps_a_literal_percent_in_the_file_name() -> None:
    argv = build_argv("ffmpeg", "plate.mov", "renders/100%_####.png", [])
    assert argv[-1] == "{outdir_printf}/100%%_%04d.png"


def test_demo() -> None:
    # `farm demo-render` as the node finds it: never the submitter's interpreter path.
    assert build_argv("demo", None, "r/f_####.png", []) == [
        "farm",
        "demo-render",
        "--frames={frames}",
        "--output={output}",
    ]


def test_a_demo_chunk_of_negative_frames_renders(tmp_path: Path) -> None:
    from farmtui.demo_render import main

    argv = build_argv("demo", None, "r/f_####.png", [])
    tokens = {**frame_tokens([-3, -2]), "output": str(tmp_path / "f_####.png")}
    assert main([*expand(argv, tokens)[2:], "--seconds-per-frame", "0"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f_-002.png", "f_-003.png"]


def test_generic_needs_an_argv() -> None:
    with pytest.raises(RendererError, match="needs a command"):
        build_argv("generic")
    assert build_argv("generic", None, None, ["render", "{frames}"]) == ["render", "{frames}"]


def test_aerender_uses_bracketed_padding_and_no_reuse() -> None:
    argv = build_argv("aerender", "p.aep", "r/main_####.png", ["-comp", "Main"])
    assert argv[:5] == ["aerender", "-project", "p.aep", "-comp", "Main"]
    assert "{outdir}/main_[####].png" in argv
    assert "-reuse" not in argv
    assert argv[argv.index("-s") + 1 : argv.index("-s") + 6] == [
        "{start}",
        "-e",
        "{end}",
        "-i",
        "{step}",
    ]
    assert "-rqindex" in build_argv("aerender", "p.aep", "r/main_####.png")


def test_nuke() -> None:
    assert build_argv("nuke", "comp.nk", "r/c.####.exr", ["-X", "Write1"]) == [
        "nuke",
        "-x",
        "-F",
        "{start}-{end}x{step}",
        "-X",
        "Write1",
        "comp.nk",
    ]


def test_houdini_runs_hrender_under_hython_with_dollar_f_padding() -> None:
    argv = build_argv("houdini", "fx.hip", "r/smoke_####.exr")
    assert argv[:2] == ["hython", "-c"]
    assert "hrender.py" in argv[2]
    assert argv[argv.index("-d") + 1] == "/out/mantra1"
    assert "{outdir}/smoke_$F4.exr" in argv
    assert argv[-1] == "fx.hip"
    assert build_argv("houdini", "fx.hip", "r/s_####.exr", ["-d", "/out/karma1"]).count("-d") == 1


def test_maya() -> None:
    argv = build_argv("maya", "light.ma", "r/beauty_####.exr")
    assert argv[0] == "Render"
    assert argv[argv.index("-im") + 1] == "beauty"
    assert argv[argv.index("-fnc") + 1] == "name_#.ext"
    assert argv[argv.index("-pad") + 1] == "4"
    assert argv[argv.index("-rd") + 1] == "{outdir}"
    assert argv[-1] == "light.ma"


@pytest.mark.parametrize("renderer", ["blender", "ffmpeg", "aerender", "nuke", "houdini", "maya"])
def test_scene_is_required(renderer: str) -> None:
    with pytest.raises(RendererError, match="needs a"):
        build_argv(renderer, None, "r/f_####.png")


def test_unknown_renderer() -> None:
    with pytest.raises(RendererError, match="unknown renderer 'povray'"):
        build_argv("povray", "a.pov", "r/f_####.png")


def test_build_argv_from_a_job_spec() -> None:
    spec = JobSpec(renderer="blender", scene="a.blend", output="r/f_####.png")
    assert build_argv(spec)[:3] == ["blender", "-b", "a.blend"]
    given = JobSpec(renderer="blender", argv=["blender", "-b", "{scene}"], scene="a.blend")
    assert build_argv(given) == ["blender", "-b", "{scene}"]


def test_every_template_expands_with_chunk_tokens() -> None:
    tokens = {**frame_tokens([1, 2]), **outdir_tokens("/o"), "output": "/o/f_##.png", "scene": "s"}
    for renderer in ["blender", "ffmpeg", "demo", "aerender", "nuke", "houdini", "maya"]:
        expand(build_argv(renderer, "scene.file", "r/f_####.png"), tokens)


def test_a_blender_gpu_job_asks_cycles_for_the_gpus_the_agent_gives_it() -> None:
    base = {"renderer": "blender", "scene": "a.blend", "output": "r/f_####.png"}
    gpu = build_argv(JobSpec(**base, gpus=1))
    assert gpu[-5:] == ["-f", "{frames}", "--", "--cycles-device", "CUDA"]
    assert "--cycles-device" not in build_argv(JobSpec(**base))


def test_an_ffmpeg_filter_in_the_extra_options_is_merged_after_the_adapters() -> None:
    argv = build_argv("ffmpeg", "p_####.png", "o/c_####.png", ["-vf", "scale=16:12", "-an"])
    assert argv.count("-vf") == 1
    assert argv[argv.index("-vf") + 1] == FFMPEG_LIST_FILTER + ",scale=16:12"
    assert "-an" in argv
    for merged in (["-filter", "scale=16:12"], ["-filter:0", "scale=16:12"]):
        argv = build_argv("ffmpeg", "p_####.png", "o/c_####.png", merged)
        assert argv[argv.index("-vf") + 1] == FFMPEG_LIST_FILTER + ",scale=16:12"
    refused = [["-filter_complex", "x"], ["-lavfi", "x"], ["-lavfi:v", "x"], ["-vf"]]
    refused += [["-filter_complex_script", "f"], ["-filter_script:v", "f"]]
    for options in refused:
        with pytest.raises(RendererError, match="ffmpeg's"):
            build_argv("ffmpeg", "p.mov", "o/c_####.png", options)


@pytest.mark.parametrize("option", ["-a", "-f", "-s", "-e", "-j", "-o", "-b", "--render-anim"])
def test_blender_options_that_undo_the_chunk_are_refused(option: str) -> None:
    """-a rendered the scene's whole range in every chunk (break round 35b)."""
    with pytest.raises(RendererError, match=f"blender's {option} is the adapter's"):
        build_argv("blender", "a.blend", "o/f_####.png", [option, "1"])


@pytest.mark.parametrize(
    ("renderer", "scene", "options", "said"),
    [
        ("blender", "a.blend", ["-E", ""], "blender's options cannot hold an empty word"),
        ("ffmpeg", "a.mov", [""], "ffmpeg's options cannot hold an empty word"),
        ("ffmpeg", "a.mov", ["--"], "ffmpeg's options cannot hold `--`"),
    ],
)
def test_options_that_fail_every_chunk_are_refused(
    renderer: str, scene: str, options: list[str], said: str
) -> None:
    """Blender read an empty word as a scene to open, ffmpeg as an output to write; ffmpeg
    refused a '--': every chunk failed on every node (break round 36b)."""
    with pytest.raises(RendererError, match=re.escape(said)):
        build_argv(renderer, scene, "o/f_####.png", options)
