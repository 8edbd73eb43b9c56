"""Job files: the same fields as the submit flags, unknown keys refused, flags win."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from farmtui.errors import InputError, JobFileError
from farmtui.jobfile import build_spec, load_jobfile, normalize

GOOD = """
name = "shot-010"
frames = "1-240"
chunk = 10
priority = 30
renderer = "demo"
output = "renders/shot010/frame_####.png"
scout = "1,120,240"
after = ["abc123"]
max-running = 4
tags = "gpu,linux"
timeout-min = 5
timeout-max = "1h30m"
timeout_start = "2m"
per-frame-timeouts = true
on-timeout = "requeue"
auto-timeout-chunks = 3
auto-timeout-multiplier = 3.0
pre-job = "python prep.py --fast"
post-job = ["python", "publish.py"]
script-timeout = "10m"
retries = 2
retry-delay = "30s"
retry-cap = "10m"
no-staging = true
webhook = "https://hooks.example/farm"

[env]
OCIO = "/studio/ocio/config.ocio"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "job.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_a_good_job_file_becomes_a_job_spec(tmp_path: Path) -> None:
    spec = build_spec(load_jobfile(write(tmp_path, GOOD)))
    assert (spec.name, spec.frames, spec.chunk, spec.priority) == ("shot-010", "1-240", 10, 30)
    assert spec.renderer == "demo"
    # The demo adapter's command, tokens left for the agent.
    assert spec.argv == ["farm", "demo-render", "--frames={frames}", "--output={output}"]
    assert spec.output == "renders/shot010/frame_####.png"
    assert spec.scout == "1,120,240"
    assert spec.after == ["abc123"]
    assert spec.max_running == 4
    assert spec.tags == ["gpu", "linux"]
    t = spec.timeouts
    assert (t.min_render, t.max_render, t.max_start) == (5.0, 5400.0, 120.0)
    assert t.per_frame is True
    assert t.on_timeout == "requeue"
    assert t.auto is True
    assert t.auto_min_chunks == 3
    assert t.auto_multiplier == 3.0
    assert t.script_timeout == 600.0
    assert spec.pre_job == ["python", "prep.py", "--fast"]
    assert spec.post_job == ["python", "publish.py"]
    assert (spec.retries, spec.retry_delay, spec.retry_cap) == (2, 30.0, 600.0)
    assert spec.staging is False
    assert spec.webhook == "https://hooks.example/farm"
    assert spec.env == {"OCIO": "/studio/ocio/config.ocio"}


def test_a_generic_job_file_carries_its_argv(tmp_path: Path) -> None:
    path = write(tmp_path, 'frames = "1-3"\nargv = ["echo", "{frames}"]\n')
    spec = build_spec(load_jobfile(path))
    assert spec.renderer == "generic"
    assert spec.argv == ["echo", "{frames}"]
    assert spec.name == "echo"


def test_an_unknown_key_is_an_error_with_a_suggestion(tmp_path: Path) -> None:
    with pytest.raises(JobFileError, match=r"timout-max: unknown key \(did you mean 'timeout-max'"):
        load_jobfile(write(tmp_path, 'frames = "1-10"\ntimout-max = "1h"\n'))


def test_an_unknown_table_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(JobFileError, match="timeouts: unknown key"):
        load_jobfile(write(tmp_path, "[timeouts]\nmax_render = 10\n"))


def test_bad_frames_in_a_job_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"job\.toml: frames: malformed frame list '1-x'"):
        load_jobfile(write(tmp_path, 'frames = "1-x"\n'))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("chunk = 0", "job.toml: chunk: 0 is out of range (1-1000000)"),
        ("priority = 101", "job.toml: priority: 101 is out of range (0-100)"),
        ('priority = "high"', "job.toml: priority: 'high' is not a whole number"),
        ("priority = 1.5", "job.toml: priority: 1.5 is not a whole number"),
        ('timeout-max = "soon"', "job.toml: timeout-max: bad duration 'soon'"),
        ("timeout-max = 0", "job.toml: timeout-max: the maximum render time must be more than 0"),
        ("timeout_max = 0", "job.toml: timeout_max: the maximum render time must be more than 0"),
        (
            'on-timeout = "explode"',
            "job.toml: on-timeout: 'explode' is not one of complete, error, fail",
        ),
        ('output = "/abs/frame_####.png"', "must be relative to the sync root"),
        ('output = "renders/frame.png"', "needs '#' padding"),
        ('frames = "1.5"', "job.toml: frames: frame list '1.5' has a frame or step that is not"),
        ('scene = "../../etc/passwd"', "job.toml: scene: scene '../../etc/passwd' escapes"),
        ('name = "a\\u001b[2Jb"', "job.toml: name: must be printable text"),
        (f'name = "{"n" * 201}"', "job.toml: name: must have at most 200 characters"),
        ("per-frame-timeouts = 1", "job.toml: per-frame-timeouts: must be true or false"),
        ('argv = "sleep 1"', "job.toml: argv: must be a list of strings"),
        ('argv = ["", "x"]', "job.toml: argv: the command's program is empty"),
        ("env = { A = 1 }", "job.toml: env: must be a table of strings"),
        # A tag of an escape sequence was "not a list of strings": it was one.
        ('tags = ["\\u001b[31mred"]', "tags: must be a list of at most 64 tags (each 1-64"),
        ('limits = ["a b"]', "limits: must be a list of at most"),
        ('env = { "A=B" = "1" }', "job.toml: env: must be a table of strings"),
        ("auto-timeout-percent = 0", "auto-timeout-percent: 0 is out of range (> 0 and <= 100)"),
        ("auto-timeout-multiplier = inf", "auto-timeout-multiplier: inf is out of range"),
        ('retry-delay = "10m"\nretry-cap = "1m"', "job.toml: retry-delay: the retry delay (600s)"),
    ],
)
def test_bad_values_name_the_key(tmp_path: Path, text: str, message: str) -> None:
    command = "" if text.startswith("argv") else '\nargv = ["true"]'
    path = write(tmp_path, text + command + "\n")
    with pytest.raises(InputError, match=re.escape(message)):
        build_spec(load_jobfile(path))


def test_not_toml_is_a_job_file_error(tmp_path: Path) -> None:
    with pytest.raises(JobFileError, match="is not valid TOML"):
        load_jobfile(write(tmp_path, "frames = 1-10 ["))
    with pytest.raises(JobFileError, match="cannot read job file"):
        load_jobfile(tmp_path / "missing.toml")


def test_flags_override_file_values(tmp_path: Path) -> None:
    from_file = load_jobfile(write(tmp_path, GOOD))
    flags = normalize({"priority": "5", "timeout-max": "2h", "name": None}, lambda k: f"--{k}")
    spec = build_spec(flags.over(from_file))
    assert spec.priority == 5
    assert spec.timeouts.max_render == 7200.0
    assert spec.name == "shot-010"  # None means "flag not given"


def test_flags_and_file_values_are_checked_together(tmp_path: Path) -> None:
    from_file = load_jobfile(write(tmp_path, GOOD))  # timeout-min = 5
    flags = normalize({"timeout-max": "2"}, lambda k: f"--{k}")
    with pytest.raises(InputError, match=r"the minimum render time \(5s\) is longer than the"):
        build_spec(flags.over(from_file))
    flags = normalize({"timeout-max": "0"}, lambda k: f"--{k}")
    with pytest.raises(InputError, match=r"^--timeout-max: the maximum render time must be more"):
        build_spec(flags.over(from_file))


def test_a_default_name_is_made_a_valid_name() -> None:
    spec = build_spec({"argv": ["/bin/odd\x1bname" + "x" * 300]})
    assert spec.name == "oddname" + "x" * 193


def test_a_relative_scene_is_taken_from_the_job_files_folder(tmp_path: Path) -> None:
    (tmp_path / "shot.blend").write_bytes(b"BLENDER")
    path = write(tmp_path, 'scene = "shot.blend"\nrenderer = "blender"\n'
                 'output = "r/f_####.png"\n')  # fmt: skip
    spec = build_spec(load_jobfile(path))
    assert spec.scene == str((tmp_path / "shot.blend").resolve())
    assert spec.name == "shot"


def test_cross_field_checks() -> None:
    with pytest.raises(InputError, match="generic job needs its command"):
        build_spec({"frames": "1-10"})
    with pytest.raises(InputError, match="scout frame 50 is not in the frame list"):
        build_spec({"frames": "1-10", "scout": "1,50", "argv": ["true"]})
    with pytest.raises(
        InputError,
        match=r"timeout-min: the minimum render time \(60s\) is longer than the maximum render "
        r"time \(10s\)",
    ):
        build_spec({"argv": ["true"], "timeout-min": 60.0, "timeout-max": 10.0})
    with pytest.raises(InputError, match="needs a scene"):
        build_spec({"renderer": "blender", "output": "r/f_####.png"})
    with pytest.raises(InputError, match="unknown renderer"):
        build_spec({"renderer": "povray"})
    with pytest.raises(InputError, match=r"unknown token \{frame\}"):
        build_spec({"argv": ["echo", "{frame}"]})


def test_one_table_covers_every_setting_and_derives_both_commands_flags() -> None:
    import argparse

    import msgspec

    from farmtui.cli import build_parser
    from farmtui.jobfields import FIELDS
    from farmtui.protocol import JobPatch, JobSpec, Timeouts

    paths = {field.path for field in FIELDS}
    spec_fields = {(name,) for name in JobSpec.__struct_fields__} - {("timeouts",), ("owner",)}
    timeout_fields = {("timeouts", name) for name in Timeouts.__struct_fields__}
    assert paths == spec_fields | timeout_fields  # `owner` is the API's (admins submit for)

    def flags(command: str) -> set[str]:
        sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
        parser = sub.choices[command]
        names = {o for a in parser._actions for o in a.option_strings if o.startswith("--")}
        return names - {"--help", "--leader", "--token", "--token-file", "--ca", "--json"}

    settable = [f for f in FIELDS if f.path[0] in JobPatch.__struct_fields__ and not f.inverted]
    assert flags("set") == {f.flag for f in settable if f.metavar != ""} | {
        f"--no-{f.key}" for f in settable if f.switch
    }
    # --param is not a job setting: it fills an OpenJD template's job parameters.
    assert flags("submit") - {"--param"} == {f.flag for f in FIELDS if f.metavar != ""}
    # What `farm set` can change is exactly what a JobPatch carries.
    assert {f.path[0] for f in settable} == set(JobPatch.__struct_fields__)
    assert msgspec.structs.fields(JobPatch)  # a Struct, checked by msgspec.convert


SCHEDULING = """
frames = "1-10"
argv = ["comp", "{frames}"]
after = ["render1:frames"]
after-offset = "-1:1"
gpus = 2
gpu-memory = "16G"
limits = ["nuke", "ocio-lic"]
"""


def test_gpus_limits_and_frame_dependencies_in_a_job_file(tmp_path: Path) -> None:
    spec = build_spec(load_jobfile(write(tmp_path, SCHEDULING)))
    assert (spec.after, spec.after_frames, spec.after_offset) == (["render1"], True, (-1, 1))
    assert (spec.gpus, spec.gpu_memory, spec.limits) == (2, 16384, ["nuke", "ocio-lic"])
    text = 'frames = "1"\nargv = ["x"]\nafter = ["a"]\nafter-frames = true\n'
    flagged = build_spec(load_jobfile(write(tmp_path, text)))
    assert (flagged.after, flagged.after_frames) == (["a"], True)


@pytest.mark.parametrize(
    ("lines", "says"),
    [
        ('after = ["a:frames", "b"]', "not both"),
        ('after = ["a:frames"]\nafter-offset = "2:1"', "ends before it starts"),
        ('after-offset = "1"', "needs a job to wait on"),
        ('after = ["a"]\nafter-offset = 1', "frame-by-frame"),
        ('gpu-memory = "8G"', "needs GPUs"),
        ("gpus = 65", "gpus"),
        ('limits = ["nuke", "nuke"]', "named twice"),
        ('limits = ["bad name"]', "limits"),
        ('gpu-memory = "much"', "is not a size"),
    ],
)
def test_scheduling_fields_refuse_what_means_nothing(tmp_path: Path, lines: str, says: str) -> None:
    with pytest.raises((InputError, JobFileError)) as caught:
        build_spec(load_jobfile(write(tmp_path, f'frames = "1-3"\nargv = ["x"]\n{lines}\n')))
    message = str(caught.value)
    assert says in message, message
    assert "\n" not in message


def test_extra_args_go_where_the_renderer_reads_options() -> None:
    """Options after `--` replaced a built command whole: `-E CYCLES` could not be added
    to a Blender job without writing its command out."""
    given = {"renderer": "blender", "scene": "s.blend", "output": "r/f_####.png"}
    flags = normalize({"extra-args": "-E CYCLES -t 4"}, lambda k: f"--{k}")
    spec = build_spec(flags.over(normalize(given, lambda k: k)))
    assert spec.extra_args == ["-E", "CYCLES", "-t", "4"]
    assert spec.argv[spec.argv.index("-f") - 4 :] == ["-E", "CYCLES", "-t", "4", "-f", "{frames}"]
    from_file = normalize({**given, "extra_args": ["-E", "BLENDER_EEVEE"]}, lambda k: k)
    assert "BLENDER_EEVEE" in build_spec(from_file).argv


@pytest.mark.parametrize(
    "given",
    [
        {"argv": ["render", "{start}"]},  # a generic job: its command is all there is
        {"renderer": "blender", "scene": "s.blend", "output": "r/f_####.png",
         "argv": ["blender", "-b", "s.blend", "-f", "{frames}"]},
    ],
)  # fmt: skip
def test_extra_args_with_a_command_of_ones_own_are_refused(given: dict[str, object]) -> None:
    flags = normalize({"extra-args": "-E CYCLES"}, lambda k: f"--{k}")
    with pytest.raises(InputError, match=r"^--extra-args: extra-args go into a renderer's built"):
        build_spec(flags.over(normalize(given, lambda k: k)))


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({"argv": ["x", "{input_list}"]}, "not an image sequence"),
        ({"argv": ["x", "{input_list}"], "scene": "a.mov"}, "not an image sequence"),
        (
            {"renderer": "blender", "scene": "s.blend", "output": "r/f_####.png",
             "extra_args": ["-a", "--", "--x"]},
            "blender's options cannot hold `--`",
        ),
    ],
)  # fmt: skip
def test_commands_that_would_fail_on_every_node_are_refused_at_submit(
    given: dict[str, object], message: str
) -> None:
    """Both were taken, and failed every attempt on every node (break round 35a)."""
    with pytest.raises(InputError, match=message):
        build_spec(normalize(given, lambda k: k))
