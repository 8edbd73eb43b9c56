"""``farm submit T.yaml --param ...`` and ``farm show JOB --openjd`` against a real leader.

A template of two steps is submitted, mapped to two jobs, the second ``after`` the
first; a real agent renders them and the frames each chunk's command was given
are checked; a template refused at its second step submits nothing; and what
``farm show --openjd`` prints is a template openjd-model accepts.
"""

from __future__ import annotations

import json
import sys
import textwrap
import time
from pathlib import Path

import pytest
from openjd.model import IntRangeExpr, decode_job_template

from tests.helpers.farm import AgentFactory, LiveLeader, needs_agent, needs_leader

pytestmark = pytest.mark.slow

# Writes an empty file named after its argument (a chunk's OpenJD range) into a folder.
TOUCH = "import pathlib, sys; (pathlib.Path(sys.argv[1]) / sys.argv[2].replace(':', 's')).touch()"


def template(marks: Path, second_step_extra: str = "") -> str:
    text = textwrap.dedent(
        f"""\
        specificationVersion: jobtemplate-2023-09
        extensions: [TASK_CHUNKING]
        name: live {{{{Param.Shot}}}}
        parameterDefinitions:
          - {{name: Shot, type: STRING}}
          - {{name: Frames, type: STRING, default: "1-4"}}
        steps:
          - name: Encode
            dependencies: [{{dependsOn: Render}}]
            script:
              actions:
                onRun:
                  command: {json.dumps(sys.executable)}
                  args: ["-c", {json.dumps(TOUCH)}, {json.dumps(str(marks))}, encoded]
          - name: Render
            hostRequirements:
              attributes: [{{name: attr.worker.os.family, anyOf: [linux]}}]
            parameterSpace:
              taskParameterDefinitions:
                - name: Frame
                  type: CHUNK[INT]
                  range: "{{{{Param.Frames}}}}"
                  chunks: {{defaultTaskCount: 3, rangeConstraint: NONCONTIGUOUS}}
        EXTRA
            script:
              actions:
                onRun:
                  command: {json.dumps(sys.executable)}
                  args: ["-c", {json.dumps(TOUCH)}, {json.dumps(str(marks))}, "{{{{Task.Param.Frame}}}}"]
                  timeout: 600
        """  # noqa: E501
    )
    return text.replace("EXTRA\n", second_step_extra)


def submit(leader: LiveLeader, *args: str) -> list[dict[str, object]]:
    done = leader.cli("submit", *args, "--json")
    assert done.returncode == 0, done.stderr
    jobs: list[dict[str, object]] = json.loads(done.stdout)
    return jobs


def wait_done(leader: LiveLeader, job_ids: list[str], timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    with leader.client() as farm:
        while True:
            states = [farm.show(job_id, 1).job.state for job_id in job_ids]
            if all(state == "done" for state in states):
                return
            assert "failed" not in states, states
            assert time.monotonic() < deadline, f"jobs not done in {timeout} s: {states}"
            time.sleep(0.1)


@needs_agent
def test_a_template_becomes_jobs_that_render_in_order(
    farm_leader: LiveLeader, farm_agents: AgentFactory, tmp_path: Path
) -> None:
    marks = tmp_path / "marks"
    marks.mkdir()
    path = tmp_path / "shot.template.yaml"
    path.write_text(template(marks), encoding="utf-8")
    render, encode = submit(
        farm_leader, str(path), "--param", "Shot=010", "--param", "Frames=1-13:2",
        "--priority", "30",
    )  # fmt: skip
    assert render["name"] == "live 010: Render"
    assert encode["name"] == "live 010: Encode"
    assert render["frames"] == "1-13x2"
    assert render["chunk"] == 3
    render_spec = render["spec"]
    encode_spec = encode["spec"]
    assert isinstance(render_spec, dict)
    assert isinstance(encode_spec, dict)
    assert render_spec["tags"] == ["linux"]
    assert render_spec["priority"] == 30
    assert render_spec["argv"][-1] == "{start}-{end}:{step}"
    assert encode_spec["after"] == [render["id"]]

    farm_agents(1, slots=2, tags=["linux"])
    wait_done(farm_leader, [str(render["id"]), str(encode["id"])])
    chunks = sorted(p.name for p in marks.iterdir() if p.name != "encoded")
    # Each chunk's command got its frames as an OpenJD range: 1,3,5 7,9,11 13.
    assert sorted(chunks) == sorted(["1-5s2", "7-11s2", "13-13s1"])
    seen = sorted(f for name in chunks for f in IntRangeExpr.from_str(name.replace("s", ":")))
    assert seen == list(range(1, 14, 2))
    assert (marks / "encoded").exists()
    # Encode waited for Render: it started only after every render chunk was written.
    last_chunk = max((marks / name).stat().st_mtime for name in chunks)
    assert (marks / "encoded").stat().st_mtime >= last_chunk


@needs_leader
def test_a_template_refused_at_its_second_step_submits_nothing(
    farm_leader: LiveLeader, tmp_path: Path
) -> None:
    path = tmp_path / "bad.template.yaml"
    refused = (
        "    stepEnvironments:\n"
        "      - {name: Licence, script: {actions: {onEnter: {command: x}}}}\n"
    )
    path.write_text(template(tmp_path, refused), encoding="utf-8")
    done = farm_leader.cli("submit", str(path), "--param", "Shot=1")
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1
    assert "steps[1] (Render).stepEnvironments[0] (Licence)" in done.stderr
    listed = farm_leader.cli("jobs", "--all", "--json")
    assert listed.returncode == 0, listed.stderr
    assert json.loads(listed.stdout) == []


@needs_leader
def test_show_openjd_prints_a_template_openjd_accepts(farm_leader: LiveLeader) -> None:
    done = farm_leader.cli(
        "submit", "--json", "--name", "export me", "--frames", "100-1x3", "--chunk", "5",
        "--tags", "gpu", "--timeout-max", "1h", "--", "render", "-s", "{start}", "-e", "{end}",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    job_id = json.loads(done.stdout)["id"]

    shown = farm_leader.cli("show", job_id, "--openjd")
    assert shown.returncode == 0, shown.stderr
    import yaml

    template = yaml.safe_load(shown.stdout)
    parsed = decode_job_template(template=template, supported_extensions=["TASK_CHUNKING"])
    assert parsed.name == "export me"
    frames = template["parameterDefinitions"][0]
    assert frames["name"] == "Frames"
    assert sorted(IntRangeExpr.from_str(frames["default"])) == list(range(1, 101, 3))
    on_run = template["steps"][0]["script"]["actions"]["onRun"]
    assert on_run["timeout"] == 3600

    as_json = farm_leader.cli("show", job_id, "--openjd", "--json")
    assert as_json.returncode == 0, as_json.stderr
    assert json.loads(as_json.stdout) == template
