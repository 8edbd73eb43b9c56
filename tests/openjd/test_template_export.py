"""farmtui jobs written as OpenJD templates (``farm show JOB --openjd``).

Each template is parsed back with openjd-model and instantiated with its default
parameters; the command an OpenJD runner would run for a task or chunk is then
run for real, and must see the same frames farmtui would give it.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from openjd.model import (
    SymbolTable,
    create_job,
    decode_job_template,
    preprocess_job_parameters,
)

from farmtui.frames import parse_frames
from farmtui.openjd import plan_jobs
from farmtui.openjd_export import TAGS_ATTRIBUTE, job_template, to_yaml
from farmtui.protocol import JobSpec, JobView, Timeouts

# Prints its arguments as JSON: stands in for a renderer.
ECHO = [sys.executable, "-c", "import json, sys; print(json.dumps(sys.argv[1:]))"]


def view(**spec: Any) -> JobView:
    return JobView(
        id="j1",
        name=str(spec.pop("name", "shot 10")),
        owner="me",
        state="queued",
        priority=50,
        position=0,
        frames=str(spec.get("frames", "1")),
        chunk=int(spec.get("chunk", 1)),
        renderer=str(spec.get("renderer", "generic")),
        spec=JobSpec(**spec),
    )


def instantiate(template: dict[str, Any], tmp_path: Path) -> Any:
    """The template as openjd-model makes a job of it, default parameters."""
    parsed = decode_job_template(template=template, supported_extensions=["TASK_CHUNKING"])
    values = preprocess_job_parameters(
        job_template=parsed,
        job_parameter_values={},
        job_template_dir=tmp_path,
        current_working_dir=tmp_path,
        allow_job_template_dir_walk_up=True,
    )
    return create_job(job_template=parsed, job_parameter_values=values), values


def task_argv(job: Any, values: Any, frame_value: str) -> list[str]:
    """The step's onRun as an OpenJD runner resolves it for one task or chunk."""
    symbols = SymbolTable()
    for name, value in values.items():
        symbols[f"Param.{name}"] = value.value
        symbols[f"RawParam.{name}"] = value.value
    symbols["Task.Param.Frame"] = frame_value
    action = job.steps[0].script.actions.onRun
    argv = [action.command.resolve(symtab=symbols)]
    argv += [arg.resolve(symtab=symbols) for arg in action.args or ()]
    if argv[0] == "python3" and shutil.which("python3") is None:
        argv[0] = sys.executable
    return argv


def run_task(job: Any, values: Any, frame_value: str) -> list[str]:
    """Run the step's onRun as an OpenJD runner would for one task or chunk; its argv."""
    argv = task_argv(job, values, frame_value)
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 0, done.stderr
    printed: list[str] = json.loads(done.stdout)
    return printed


def test_one_frame_per_chunk_is_an_int_parameter(tmp_path: Path) -> None:
    job = view(
        frames="1-20x5",
        argv=[*ECHO, "-s", "{start}", "-e", "{end}", "-j", "{step}", "{frames}"],
        tags=["gpu", "linux"],
        env={"OCIO": "/studio/ocio"},
        timeouts=Timeouts(max_render=90.5),
    )
    template = job_template(job)
    parameter = template["steps"][0]["parameterSpace"]["taskParameterDefinitions"][0]
    assert parameter == {"name": "Frame", "range": "{{Param.Frames}}", "type": "INT"}
    assert "extensions" not in template
    instantiated, values = instantiate(template, tmp_path)
    step = instantiated.steps[0]
    assert list(step.parameterSpace.taskParameterDefinitions["Frame"].range) == [1, 6, 11, 16]
    assert step.hostRequirements.attributes[0].name == TAGS_ATTRIBUTE
    assert step.hostRequirements.attributes[0].allOf == ["gpu", "linux"]
    assert step.script.actions.onRun.timeout == 91
    assert instantiated.jobEnvironments[0].variables["OCIO"] == "/studio/ocio"
    assert run_task(instantiated, values, "11") == ["-s", "11", "-e", "11", "-j", "1", "11"]


@pytest.mark.parametrize(
    ("frames", "chunk_value", "expected"),
    [
        ("1-100", "21-30", ["21", "30", "1", "21,22,23,24,25,26,27,28,29,30"]),
        ("100-1x3", "1-10:3", ["1", "10", "3", "1,4,7,10"]),  # a reversed job, as a set
        ("-4-4", "-4--2", ["-4", "-2", "1", "-4,-3,-2"]),
        ("7", "7", ["7", "7", "1", "7"]),
    ],
)
def test_chunks_are_cut_from_openjd_ranges_by_a_runner(
    tmp_path: Path, frames: str, chunk_value: str, expected: list[str]
) -> None:
    job = view(frames=frames, chunk=10, argv=[*ECHO, "{start}", "{end}", "{step}", "{frames}"])
    template = job_template(job)
    assert template["extensions"] == ["TASK_CHUNKING"]
    instantiated, values = instantiate(template, tmp_path)
    definition = instantiated.steps[0].parameterSpace.taskParameterDefinitions["Frame"]
    assert sorted(definition.range) == sorted(parse_frames(frames))
    assert definition.chunks.defaultTaskCount == 10
    assert run_task(instantiated, values, chunk_value) == expected


def test_a_runner_refuses_a_chunk_it_cannot_name_by_start_and_end(tmp_path: Path) -> None:
    job = view(frames="1-10", chunk=5, argv=[*ECHO, "{start}-{end}"])
    instantiated, values = instantiate(job_template(job), tmp_path)
    with pytest.raises(AssertionError, match="not evenly spaced"):
        run_task(instantiated, values, "1,2,5")


def test_scene_and_output_become_path_parameters(tmp_path: Path) -> None:
    job = view(
        frames="1-3",
        renderer="blender",
        scene="shots/a.blend",
        output="renders/a/frame_####.png",
    )
    template = job_template(job)
    names = [parameter["name"] for parameter in template["parameterDefinitions"]]
    assert names == ["Frames", "Scene", "OutputDir"]
    args = template["steps"][0]["script"]["actions"]["onRun"]["args"]
    assert args == [
        "-b", "{{Param.Scene}}", "-o", "{{Param.OutputDir}}/frame_####.png", "-F", "PNG",
        "-f", "{{Task.Param.Frame}}",
    ]  # fmt: skip
    instantiate(template, tmp_path)


def _plate(tmp_path: Path, frames: tuple[int, ...]) -> Path:
    """A plate of 16x16 PNGs ``p_0001.png`` ... in a folder whose name has a '%'."""
    plates = tmp_path / "plates 100%done"
    plates.mkdir()
    for frame in frames:
        make = ["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "testsrc=size=16x16:rate=1"]
        make += ["-vf", f"trim=start_frame={frame}", "-frames:v", "1", "-f", "image2"]
        make += ["-update", "1", str(plates / f"p_{frame:04d}.png")]
        subprocess.run(make, check=True, timeout=60)
    return plates


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs the real ffmpeg")
@pytest.mark.parametrize(("chunk", "tasks"), [(2, ("1-3:2", "5-7:2")), (1, ("1", "3", "5", "7"))])
def test_a_plate_on_twos_renders_from_a_template(
    tmp_path: Path, chunk: int, tasks: tuple[str, ...]
) -> None:
    """The template read a chunk with image2, from its first file on: of a plate on twos
    it wrote the first frame, and exited 0 (break round 35a). A task of one frame had no
    Scene parameter for a '####' plate, and an output folder with a '%' failed it (35b).
    Its runner writes the task's list of files and doubles the '%', as an agent does."""
    plates = _plate(tmp_path, (1, 3, 5, 7))
    job = view(
        frames="1-7x2", chunk=chunk, renderer="ffmpeg", scene=f"{plates}/p_####.png",
        output="r 5%/c_####.png",
    )  # fmt: skip
    template = job_template(job)
    names = [p["name"] for p in template["parameterDefinitions"]]
    assert names == ["Frames", "Scene", "OutputDir"]
    instantiated, values = instantiate(template, tmp_path)
    (tmp_path / "r 5%").mkdir()  # (ffmpeg makes no folder; an agent makes it on the farm)
    for task in tasks:
        argv = task_argv(instantiated, values, task)
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60, cwd=tmp_path)
        assert done.returncode == 0, done.stderr
    written = sorted(p.name for p in (tmp_path / "r 5%").iterdir())
    assert written == ["c_0001.png", "c_0003.png", "c_0005.png", "c_0007.png"]
    # A file missing fails its task, naming it, as on the farm.
    (plates / "p_0005.png").unlink()
    argv = task_argv(instantiated, values, next(task for task in tasks if task.startswith("5")))
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert done.returncode != 0
    assert "p_0005.png" in done.stderr


def test_a_scene_with_braces_is_a_scene_parameter_as_written(tmp_path: Path) -> None:
    """Its command has the braces doubled (literal, not tokens): it was left in the
    command as a fixed text, not made the Scene parameter."""
    job = view(frames="1-3", renderer="blender", scene="shots/v{2}/a.blend", output="r/f_####.png")
    template = job_template(job)
    assert template["steps"][0]["script"]["actions"]["onRun"]["args"][:2] == [
        "-b",
        "{{Param.Scene}}",
    ]
    (scene,) = [p for p in template["parameterDefinitions"] if p["name"] == "Scene"]
    assert scene["default"] == "shots/v{2}/a.blend"
    instantiate(template, tmp_path)


def test_a_template_reads_back_as_the_same_job(tmp_path: Path) -> None:
    job = view(
        name="round trip",
        frames="100-1x3",
        chunk=4,
        argv=["render", "--from", "{start}", "--to", "{end}", "--by", "{step}"],
        tags=["gpu"],
        env={"A": "1"},
    )
    path = tmp_path / "job.template.yaml"
    path.write_text(to_yaml(job_template(job)), encoding="utf-8")
    (plan,) = plan_jobs(path, {})
    spec = plan.spec
    assert spec.name == "round trip"
    assert sorted(parse_frames(spec.frames)) == sorted(parse_frames("100-1x3"))
    assert spec.chunk == 4
    assert spec.tags == ["gpu"]
    assert spec.env == {"A": "1"}
    assert spec.argv[-6:] == ["--from", "{{start}}", "--to", "{{end}}", "--by", "{{step}}"]
    assert spec.argv[3] == "{start}-{end}:{step}"  # the chunk, for the runner


def test_yaml_reads_back_as_the_template() -> None:
    job = view(frames="1-3", argv=["echo", "{frames}"], env={"PS1": "\x1b[31m$ "})
    template = job_template(job)
    assert yaml.safe_load(to_yaml(template)) == template
    assert "\x1b" not in to_yaml(template)  # control characters are escaped, never raw


@pytest.mark.parametrize("chunk", [1, 2])
def test_a_literal_brace_reaches_the_command_as_written(tmp_path: Path, chunk: int) -> None:
    """Refused in a chunk (the runner read "{start}" as its token, OpenJD "{{" as its own),
    and in every ffmpeg job once their tasks of one frame went through the runner too
    (break round 36b)."""
    job = view(frames="1-10", chunk=chunk, argv=[*ECHO, "{{start}}", "a}}b{{", "{start}"])
    instantiated, values = instantiate(job_template(job), tmp_path)
    assert run_task(instantiated, values, "3-4" if chunk == 2 else "3") == ["{start}", "a}b{", "3"]


def test_gpus_travel_as_openjd_gpu_amounts_and_come_back(tmp_path: Path) -> None:
    template = job_template(view(frames="1-4", argv=[*ECHO, "{frames}"], gpus=2, gpu_memory=8192))
    instantiated, _ = instantiate(template, tmp_path)
    amounts = {a.name: a.min for a in instantiated.steps[0].hostRequirements.amounts}
    assert amounts == {"amount.worker.gpu": 2, "amount.worker.gpu.memory": 8192}
    path = tmp_path / "gpu.json"
    path.write_text(json.dumps(template))
    (plan,) = plan_jobs(path, {})
    assert (plan.spec.gpus, plan.spec.gpu_memory) == (2, 8192)


@pytest.mark.parametrize("chunk", [1, 2])
@pytest.mark.parametrize(
    "scene", ["/tmp/x{lb}y{rb}.mov", "/tmp/x{start}y.mov", "/tmp/a{{b}}.mov", "/tmp/plain.mov"]
)
def test_paths_reach_the_command_as_written(tmp_path: Path, chunk: int, scene: str) -> None:
    """The runner read a path OpenJD had put into its words for tokens: "x{lb}y" became
    "x{y", "x{start}y" the chunk's frame; the wrong file read, without a word (36c)."""
    job = view(
        frames="1-10", chunk=chunk, scene=scene, output="/tmp/o{lb}/f_####.png",
        argv=[*ECHO, "{scene}", "{output}", "{outdir}", "{{x}}", "{start}}"],
    )  # fmt: skip
    instantiated, values = instantiate(job_template(job), tmp_path)
    printed = run_task(instantiated, values, "3-4" if chunk == 2 else "3")
    assert printed == [scene, "/tmp/o{lb}/f_####.png", "/tmp/o{lb}", "{x}", "3}"]
