"""OpenJD job templates mapped to farmtui jobs (``farmtui.openjd.plan_jobs``), and refused.

Where a chunk's command stands for OpenJD's ``{{Task.Param.Frame}}``, the tests
expand it for every chunk the leader will cut and read it back with openjd-model:
it must be exactly that chunk's frames.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
from openjd.model import IntRangeExpr

from farmtui.errors import InputError
from farmtui.frames import chunk_frames, parse_frames
from farmtui.jobfields import Given, read
from farmtui.openjd import TemplateError, load_template, parse_params, plan_jobs
from farmtui.renderers import expand, frame_tokens


def write(tmp_path: Path, body: str, name: str = "job.template.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(body), encoding="utf-8")
    return path


def chunk_args(argv: list[str], frames: str, chunk: int, at: int) -> list[str]:
    """Argument ``at`` of the command for every chunk of the job."""
    return [
        expand(argv, frame_tokens(part))[at] for part in chunk_frames(parse_frames(frames), chunk)
    ]


HEADER = """\
specificationVersion: jobtemplate-2023-09
name: Shot {{Param.Shot}}
parameterDefinitions:
  - {name: Scene, type: PATH}
  - {name: Shot, type: STRING, default: "010"}
  - {name: Frames, type: STRING, default: "1-10"}
"""

INT_STEP = (
    HEADER
    + """\
steps:
  - name: Render
    parameterSpace:
      taskParameterDefinitions:
        - {name: Frame, type: INT, range: "{{Param.Frames}}"}
    script:
      actions:
        onRun:
          command: blender
          args: ["-b", "{{Param.Scene}}", "-o", "/out/{{Param.Shot}}_####", "-f", "{{Task.Param.Frame}}"]
          timeout: 600
"""  # noqa: E501
)


def test_an_int_frame_parameter_is_a_job_of_one_frame_per_chunk(tmp_path: Path) -> None:
    path = write(tmp_path, INT_STEP)
    (plan,) = plan_jobs(path, {"Scene": "/mnt/x.blend", "Frames": "1-100:5"})
    spec = plan.spec
    assert plan.step == "Render"
    assert spec.name == "Shot 010"
    assert spec.frames == "1-96x5"  # OpenJD's ':' is a step
    assert parse_frames(spec.frames) == list(range(1, 101, 5))
    assert spec.chunk == 1
    assert spec.renderer == "generic"
    assert spec.argv == ["blender", "-b", "/mnt/x.blend", "-o", "/out/010_####", "-f", "{start}"]
    assert spec.timeouts.max_render == 600
    assert plan.after_steps == ()
    assert chunk_args(spec.argv, spec.frames, spec.chunk, 6)[:3] == ["1", "6", "11"]


def test_defaults_and_relative_paths_follow_openjd(tmp_path: Path) -> None:
    path = write(tmp_path, INT_STEP)
    (plan,) = plan_jobs(path, {"Scene": "shots/x.blend"}, cwd=tmp_path)
    assert plan.spec.frames == "1-10"  # the parameter's default
    # A relative PATH value is relative to the submitter's folder, as OpenJD says.
    assert plan.spec.argv[2] == str(tmp_path.resolve() / "shots" / "x.blend")


def chunked(constraint: str, count: int = 4) -> str:
    return (
        HEADER.replace("name: Shot", "extensions: [TASK_CHUNKING]\nname: Shot", 1)
        + f"""\
steps:
  - name: Render
    parameterSpace:
      taskParameterDefinitions:
        - name: Frame
          type: CHUNK[INT]
          range: "{{{{Param.Frames}}}}"
          chunks: {{defaultTaskCount: {count}, rangeConstraint: {constraint}}}
    script:
      actions:
        onRun:
          command: render
          args: ["--frames={{{{Task.Param.Frame}}}}"]
"""
    )


@pytest.mark.parametrize("frames", ["1-10", "1-100:7", "1,3,5-9,20-30:5", "-5-5"])
def test_noncontiguous_chunks_hand_the_command_an_openjd_range_of_the_chunk(
    tmp_path: Path, frames: str
) -> None:
    path = write(tmp_path, chunked("NONCONTIGUOUS"))
    (plan,) = plan_jobs(path, {"Scene": "/s", "Frames": frames})
    spec = plan.spec
    assert spec.chunk == 4
    assert spec.argv == ["render", "--frames={start}-{end}:{step}"]
    assert sorted(parse_frames(spec.frames)) == sorted(IntRangeExpr.from_str(frames))
    for part, arg in zip(
        chunk_frames(parse_frames(spec.frames), 4),
        chunk_args(spec.argv, spec.frames, spec.chunk, 1),
        strict=True,
    ):
        # What OpenJD reads in the argument is exactly the chunk's frames.
        assert sorted(IntRangeExpr.from_str(arg.removeprefix("--frames="))) == sorted(part)


def test_contiguous_chunks_are_start_end(tmp_path: Path) -> None:
    path = write(tmp_path, chunked("CONTIGUOUS", 3))
    (plan,) = plan_jobs(path, {"Scene": "/s", "Frames": "1-8"})
    assert plan.spec.chunk == 3
    assert plan.spec.argv == ["render", "--frames={start}-{end}"]
    assert chunk_args(plan.spec.argv, "1-8", 3, 1) == [
        "--frames=1-3",
        "--frames=4-6",
        "--frames=7-8",
    ]
    assert plan.notes == ()


def test_contiguous_chunks_of_a_stepped_list_are_one_frame_each(tmp_path: Path) -> None:
    """As OpenJD forms them: a CONTIGUOUS chunk of 1,3,5 can only hold one frame."""
    path = write(tmp_path, chunked("CONTIGUOUS", 3))
    (plan,) = plan_jobs(path, {"Scene": "/s", "Frames": "1-9:2"})
    assert plan.spec.chunk == 1
    first_two = chunk_args(plan.spec.argv, plan.spec.frames, 1, 1)[:2]
    assert first_two == ["--frames=1-1", "--frames=3-3"]
    assert "CONTIGUOUS" in plan.notes[0]


DEPENDENT_STEPS = """\
specificationVersion: jobtemplate-2023-09
name: Shot
steps:
  - name: Encode
    dependencies: [{dependsOn: Render}, {dependsOn: Sim}]
    script: {actions: {onRun: {command: ffmpeg, args: ["-i", "in_%04d.png", "out.mov"]}}}
  - name: Render
    dependencies: [{dependsOn: Sim}]
    parameterSpace:
      taskParameterDefinitions: [{name: F, type: INT, range: "1-3"}]
    hostRequirements:
      attributes:
        - {name: attr.worker.os.family, anyOf: [linux]}
        - {name: attr.pool, allOf: [gpu, big]}
      amounts:
        - {name: amount.worker.vcpu, min: 0}
    script: {actions: {onRun: {command: render, args: ["{{Task.Param.F}}"]}}}
  - name: Sim
    script: {actions: {onRun: {command: sim}}}
"""


def test_steps_become_jobs_in_dependency_order_with_after_and_tags(tmp_path: Path) -> None:
    plans = plan_jobs(write(tmp_path, DEPENDENT_STEPS), {})
    assert [plan.step for plan in plans] == ["Sim", "Render", "Encode"]
    sim, render, encode = plans
    assert sim.after_steps == ()
    assert render.after_steps == ("Sim",)
    assert encode.after_steps == ("Render", "Sim")
    assert [plan.spec.name for plan in plans] == ["Shot: Sim", "Shot: Render", "Shot: Encode"]
    # A step without a parameter space runs once: a one-frame job.
    assert (sim.spec.frames, sim.spec.chunk, sim.spec.argv) == ("1", 1, ["sim"])
    assert render.spec.tags == ["linux", "gpu", "big"]
    assert render.spec.frames == "1-3"
    assert encode.spec.argv == ["ffmpeg", "-i", "in_%04d.png", "out.mov"]


def test_environment_variables_literal_braces_and_json(tmp_path: Path) -> None:
    template = {
        "specificationVersion": "jobtemplate-2023-09",
        "name": "env",
        "parameterDefinitions": [{"name": "Root", "type": "STRING", "default": "/p"}],
        "jobEnvironments": [
            {"name": "Job", "variables": {"OCIO": "{{Param.Root}}/ocio", "A": "1"}}
        ],
        "steps": [
            {
                "name": "Render",
                "stepEnvironments": [{"name": "Step", "variables": {"A": "2"}}],
                "script": {"actions": {"onRun": {"command": "echo", "args": ["{start}", "a}b"]}}},
            }
        ],
    }
    path = tmp_path / "job.json"
    path.write_text(json.dumps(template), encoding="utf-8")
    (plan,) = plan_jobs(path, {})
    assert plan.spec.env == {"OCIO": "/p/ocio", "A": "2"}
    # OpenJD's single braces are literal text; farmtui's argv escapes them.
    assert plan.spec.argv == ["echo", "{{start}}", "a}}b"]
    assert expand(plan.spec.argv, frame_tokens([1])) == ["echo", "{start}", "a}b"]


def test_flags_are_laid_over_every_job(tmp_path: Path) -> None:
    flags = read(
        {"priority": "20", "tags": "farm", "name": "mine", "timeout-max": "2h"},
        lambda key: f"--{key}",
    )
    plans = plan_jobs(write(tmp_path, DEPENDENT_STEPS), {}, flags)
    assert {plan.spec.priority for plan in plans} == {20}
    assert plans[1].spec.tags == ["linux", "gpu", "big", "farm"]
    assert plans[1].spec.name == "mine: Render"
    assert plans[0].spec.timeouts.max_render == 7200


def refusal(tmp_path: Path, body: str, params: dict[str, str] | None = None) -> str:
    with pytest.raises(TemplateError) as caught:
        plan_jobs(write(tmp_path, body), params or {})
    message = str(caught.value)
    assert "\n" not in message
    return message


def step_with(parameters: str = "", script: str = "", extra: str = "") -> str:
    return f"""\
specificationVersion: jobtemplate-2023-09
name: refused
steps:
  - name: Render
{extra}{parameters}    script:
{script or "      actions: {onRun: {command: render}}"}
"""


def test_two_task_parameters_are_refused(tmp_path: Path) -> None:
    body = step_with(
        parameters="""\
    parameterSpace:
      taskParameterDefinitions:
        - {name: Frame, type: INT, range: "1-3"}
        - {name: Eye, type: STRING, range: [left, right]}
"""
    )
    message = refusal(tmp_path, body)
    assert "steps[0] (Render).parameterSpace: 2 task parameters (Frame, Eye)" in message


def test_a_frame_parameter_that_is_not_int_is_refused(tmp_path: Path) -> None:
    body = step_with(
        parameters="""\
    parameterSpace:
      taskParameterDefinitions:
        - {name: Layer, type: STRING, range: [a, b]}
"""
    )
    assert "parameterSpace.Layer: type STRING" in refusal(tmp_path, body)


def test_an_environment_with_a_script_is_refused(tmp_path: Path) -> None:
    body = step_with(
        extra="""\
    stepEnvironments:
      - name: Licence
        script: {actions: {onEnter: {command: checkout-licence}}}
"""
    )
    message = refusal(tmp_path, body)
    assert message.startswith("steps[0] (Render).stepEnvironments[0] (Licence): ")
    assert "script" in message


def test_embedded_files_are_refused(tmp_path: Path) -> None:
    body = step_with(
        script="""\
      actions: {onRun: {command: bash, args: ["{{Task.File.Run}}"]}}
      embeddedFiles:
        - {name: Run, type: TEXT, data: "echo hi"}
"""
    )
    assert "embedded files" in refusal(tmp_path, body)


def test_a_session_value_is_refused(tmp_path: Path) -> None:
    body = step_with(
        script='      actions: {onRun: {command: render, args: ["{{Session.WorkingDirectory}}"]}}'
    )
    message = refusal(tmp_path, body)
    assert "onRun.args[0]: {{Session.WorkingDirectory}} has no value on farmtui" in message


def test_gpu_amounts_become_the_jobs_gpus(tmp_path: Path) -> None:
    body = step_with(
        extra="""\
    hostRequirements:
      amounts: [{name: amount.worker.gpu, min: 2}, {name: amount.worker.gpu.memory, min: 16384}]
"""
    )
    (plan,) = plan_jobs(write(tmp_path, body), {})
    assert (plan.spec.gpus, plan.spec.gpu_memory) == (2, 16384)


def test_amounts_and_alternatives_are_refused(tmp_path: Path) -> None:
    amounts = step_with(
        extra="""\
    hostRequirements:
      amounts: [{name: amount.worker.vcpu, min: 8}]
"""
    )
    assert "hostRequirements.amounts[0] (amount.worker.vcpu)" in refusal(tmp_path, amounts)
    any_of = step_with(
        extra="""\
    hostRequirements:
      attributes: [{name: attr.worker.os.family, anyOf: [linux, macos]}]
"""
    )
    assert "anyOf with 2 values" in refusal(tmp_path, any_of)


def test_an_extension_farmtui_cannot_run_is_refused(tmp_path: Path) -> None:
    body = step_with().replace("name: refused", "extensions: [REDACTED_ENV_VARS]\nname: refused")
    assert "extensions: REDACTED_ENV_VARS cannot run on farmtui" in refusal(tmp_path, body)


def test_an_invalid_template_and_bad_parameters_are_refused_in_one_line(tmp_path: Path) -> None:
    assert "specificationVersion" in refusal(tmp_path, "name: x\nsteps: []\n")
    bad_range = step_with(
        parameters="""\
    parameterSpace:
      taskParameterDefinitions: [{name: F, type: INT, range: "1-x"}]
"""
    )
    assert "range" in refusal(tmp_path, bad_range)
    assert "Scene" in refusal(tmp_path, INT_STEP)  # a required parameter left out
    assert "Nope" in refusal(tmp_path, INT_STEP, {"Scene": "/s", "Nope": "1"})


def test_flags_that_a_template_decides_are_refused(tmp_path: Path) -> None:
    flags = read({"frames": "1-5"}, lambda key: f"--{key}")
    with pytest.raises(TemplateError, match="^--frames: .*--param"):
        plan_jobs(write(tmp_path, INT_STEP), {"Scene": "/s"}, flags)
    with pytest.raises(TemplateError, match="^the command after --"):
        plan_jobs(write(tmp_path, INT_STEP), {"Scene": "/s"}, Given({"argv": ["x"]}))


def test_params_are_name_equals_value() -> None:
    assert parse_params(["Frames=1-10:2", "Note=a=b"]) == {"Frames": "1-10:2", "Note": "a=b"}
    with pytest.raises(InputError, match="NAME=VALUE"):
        parse_params(["Frames"])


def test_a_yaml_alias_bomb_is_refused_at_once_not_expanded(tmp_path: Path) -> None:
    import time

    levels = ['a: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    levels += [f"l{n}: &l{n} [{', '.join([f'*l{n - 1}'] * 9)}]" for n in range(1, 9)]
    body = (
        "specificationVersion: jobtemplate-2023-09\nname: bomb\n"
        + "\n".join(levels)
        + "\nsteps:\n  - name: s\n    script:\n      actions:\n"
        + "        onRun: {command: echo, args: *l8}\n"
    )
    began = time.monotonic()
    message = refusal(tmp_path, body)
    assert time.monotonic() - began < 10  # 9**9 strings: it used to run for hours
    assert "aliases" in message


def test_hundreds_of_steps_in_a_chain_plan_in_order(tmp_path: Path) -> None:
    steps = ["steps:"]
    for n in range(300):
        after = f"\n    dependencies: [{{dependsOn: s{n - 1}}}]" if n else ""
        steps.append(
            f"  - name: s{n}{after}\n    script:\n      actions: {{onRun: {{command: r}}}}"
        )
    body = "specificationVersion: jobtemplate-2023-09\nname: many\n" + "\n".join(steps) + "\n"
    planned = plan_jobs(write(tmp_path, body), {})
    assert [job.step for job in planned] == [f"s{n}" for n in range(300)]
    assert planned[-1].after_steps == ("s298",)


def test_cyclic_step_dependencies_are_refused_in_one_line(tmp_path: Path) -> None:
    body = """\
    specificationVersion: jobtemplate-2023-09
    name: cycle
    steps:
      - name: a
        dependencies: [{dependsOn: b}]
        script: {actions: {onRun: {command: r}}}
      - name: b
        dependencies: [{dependsOn: a}]
        script: {actions: {onRun: {command: r}}}
    """
    assert refusal(tmp_path, body).endswith("Step dependencies form a cycle: a -> b -> a")


def test_a_template_libyaml_reads_is_read_as_before(tmp_path: Path) -> None:
    """The nesting check must not change what is accepted: a tab after a key's colon,
    which libyaml (openjd-model's loader) takes and PyYAML's own scanner refuses."""
    path = tmp_path / "tab.template.yaml"
    path.write_text(INT_STEP.replace("specificationVersion: ", "specificationVersion:\t"))
    assert load_template(path).name == "Shot {{Param.Shot}}"
