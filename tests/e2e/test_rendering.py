"""Issue A end to end: a real leader, real agents and real renderers on loopback.

Everything a user would notice: frames in the sync root, logs on disk, what
``farm show`` says, and one-line errors for bad input that change nothing.
"""

from __future__ import annotations

import json
import re
import shutil
import struct
import subprocess
from pathlib import Path

import httpx
import pytest

from farmtui.localfarm import free_port
from tests.e2e.e2e_support import (
    demo,
    farm,
    farm_json,
    is_png,
    one_line_error,
    submit,
    wait_job,
)
from tests.helpers.farm import AgentFactory, LiveLeader


def test_two_agents_render_a_demo_job_into_the_sync_root(
    farm_leader: LiveLeader, farm_agents: AgentFactory
) -> None:
    agents = farm_agents(2, slots=1)
    job_id = submit(
        farm_leader, "--name", "shot", "--frames", "1-24", "--chunk", "4",
        "--output", "renders/shot/frame_####.png", *demo(0.01),
    )  # fmt: skip
    with farm_leader.client() as client:
        wait_job(client, job_id, ("done", "failed"))

    frames = [farm_leader.root / f"renders/shot/frame_{n:04d}.png" for n in range(1, 25)]
    assert [f for f in frames if not f.is_file()] == []
    assert all(is_png(f) for f in frames)
    assert sorted(p.name for p in (farm_leader.root / "renders/shot").iterdir()) == sorted(
        f.name for f in frames
    )  # nothing else: no partial or staged leftovers

    detail = farm_json(farm_leader, "show", job_id)
    assert detail["job"]["state"] == "done"
    assert detail["frame_states"] == {str(n): "done" for n in range(1, 25)}
    chunks = detail["chunks"]
    assert len(chunks) == 6
    assert {chunk["node"] for chunk in chunks} == {agent.name for agent in agents}

    logs = farm_leader.root / "jobs" / job_id
    events = (logs / "events.log").read_text(encoding="utf-8")
    assert "submitted: 24 frames in 6 chunks" in events
    for chunk in chunks:
        log = logs / f"chunk-{chunk['index']:04d}.attempt-1.log"
        text = log.read_text(encoding="utf-8")
        assert re.search(r"^# command: .*farmtui\.demo_render --frames \d", text, re.M), text
        assert f"# node: {chunk['node']}\n" in text
        assert re.search(r"^# started: \d{4}-\d\d-\d\dT", text, re.M), text
        assert "Saved: " in text  # the renderer's own output is in between
        assert re.search(r"^# outcome: done; exit status: 0; duration: \d+\.\d+s$", text, re.M)
        assert re.search(r"^# finished: \d{4}-\d\d-\d\dT.* on " + chunk["node"], text, re.M)
    assert sorted(p.name for p in logs.glob("chunk-*.log")) == [
        f"chunk-{n:04d}.attempt-1.log" for n in range(6)
    ]


@pytest.mark.blender
@pytest.mark.skipif(shutil.which("blender") is None, reason="blender is not installed")
def test_two_agents_render_a_real_blender_scene(
    farm_leader: LiveLeader, farm_agents: AgentFactory
) -> None:
    farm_agents(2, slots=1)
    project = farm_leader.root  # the scene lives on the shared storage, like the frames
    scene = project / "shot.blend"
    setup = (
        "import bpy\n"
        "s = bpy.context.scene\n"
        "s.render.engine = 'CYCLES'\n"
        "s.cycles.device = 'CPU'\n"
        "s.cycles.samples = 1\n"
        "s.cycles.use_denoising = False\n"  # this blender build has no OpenImageDenoise
        "s.render.resolution_x = 32\n"
        "s.render.resolution_y = 18\n"
        "s.render.resolution_percentage = 100\n"
        "s.render.image_settings.file_format = 'PNG'\n"
        f"bpy.ops.wm.save_as_mainfile(filepath={str(scene)!r})\n"
    )
    made = subprocess.run(
        ["blender", "-b", "--factory-startup", "--python-expr", setup],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert made.returncode == 0, made.stdout + made.stderr
    assert scene.is_file(), made.stdout

    job_id = submit(
        farm_leader, "--renderer", "blender", "--scene", "shot.blend", "--frames", "1-4",
        "--chunk", "2", "--output", "renders/shot/frame_####.png", cwd=project,
    )  # fmt: skip
    with farm_leader.client() as client:
        detail = wait_job(client, job_id, ("done", "failed"), timeout=25)
    assert detail.job.state == "done", [c.attempts for c in detail.chunks]
    frames = [project / f"renders/shot/frame_{n:04d}.png" for n in range(1, 5)]
    assert [f for f in frames if not f.is_file()] == []
    assert all(is_png(f) for f in frames)
    # The scene's own settings were used: 32x18 pixels.
    assert {struct.unpack(">II", f.read_bytes()[16:24]) for f in frames} == {(32, 18)}
    assert len({c.node for c in detail.chunks}) == 2


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg is not installed")
def test_an_ffmpeg_plate_on_twos_renders_and_a_missing_file_is_named(
    farm_leader: LiveLeader, farm_agents: AgentFactory
) -> None:
    """A plate with only its odd files failed every chunk (ffmpeg's image2 reads files
    in a row). The agent lists each chunk's own files; one missing fails its chunk, and
    ``farm failures`` names the file, not ffmpeg's closing "Conversion failed!"."""
    farm_agents(1, slots=2)
    project = farm_leader.root
    plates = project / "plates"
    plates.mkdir()
    for frame in range(1, 10, 2):
        make = ["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "testsrc=size=16x16:rate=1"]
        make += ["-vf", f"trim=start_frame={frame}", "-frames:v", "1"]
        subprocess.run([*make, str(plates / f"p_{frame:04d}.png")], check=True, timeout=60)
    job_id = submit(
        farm_leader, "--renderer", "ffmpeg", "--scene", "plates/p_####.png", "--frames",
        "1-9x2", "--chunk", "3", "--output", "renders/comp/c_####.png", cwd=project,
    )  # fmt: skip
    with farm_leader.client() as client:
        detail = wait_job(client, job_id, ("done", "failed"), timeout=60)
    assert detail.job.state == "done", [c.attempts for c in detail.chunks]
    written = sorted(p.name for p in (project / "renders/comp").iterdir())
    assert written == [f"c_{frame:04d}.png" for frame in range(1, 10, 2)]
    assert all(is_png(project / "renders/comp" / name) for name in written)

    (plates / "p_0005.png").unlink()
    held = submit(
        farm_leader, "--renderer", "ffmpeg", "--scene", "plates/p_####.png", "--frames",
        "1-9x2", "--chunk", "3", "--retries", "0", "--output", "renders/late/c_####.png",
        cwd=project,
    )  # fmt: skip
    with farm_leader.client() as client:
        wait_job(client, held, ("done", "failed"), timeout=60)
    (failure,) = farm_json(farm_leader, "failures")
    assert failure["frames"] == "1-5x2"
    assert failure["reason"] == "exited with 1"
    assert f"{plates}/p_0005.png" in failure["error_line"]


def test_a_renderer_that_exits_0_without_its_frame_fails_the_chunk(
    farm_leader: LiveLeader, farm_agents: AgentFactory
) -> None:
    farm_agents(1, slots=1)
    job_id = submit(
        farm_leader, "--frames", "1-2", "--chunk", "2", "--retries", "0",
        "--output", "renders/lazy/f_####.png", *demo(0.01, "--skip-write", "2"),
    )  # fmt: skip
    with farm_leader.client() as client:
        wait_job(client, job_id, ("done", "failed"))
    detail = farm_json(farm_leader, "show", job_id)
    assert detail["job"]["state"] == "failed"
    (chunk,) = detail["chunks"]
    assert chunk["state"] == "failed"
    (attempt,) = chunk["attempts"]
    assert attempt["exit_status"] == "0"
    assert "did not write frame(s) 2" in attempt["reason"]
    assert detail["frame_states"] == {"1": "failed", "2": "failed"}
    assert not (farm_leader.root / "renders/lazy/f_0002.png").exists()
    # Staged output is copied only when the whole chunk succeeds.
    assert not (farm_leader.root / "renders/lazy/f_0001.png").exists()
    log = (farm_leader.root / "jobs" / job_id / "chunk-0000.attempt-1.log").read_text()
    assert "# missing frames: 2" in log


def test_bad_input_gives_one_line_errors_and_changes_nothing(
    farm_leader: LiveLeader, tmp_path: Path
) -> None:
    existing = submit(farm_leader, "--name", "keep", "--frames", "1-3", "--", "true")

    def job_list() -> list[tuple[str, str, int, int]]:
        jobs = farm_json(farm_leader, "jobs", "--all")
        return [(j["id"], j["state"], j["priority"], j["position"]) for j in jobs]

    before = job_list()
    assert [job[0] for job in before] == [existing]

    bad_frames = farm(farm_leader, "submit", "--frames", "1-x", "--", "true")
    assert bad_frames.returncode == 2
    assert "malformed frame list '1-x'" in one_line_error(bad_frames)
    too_long = farm(farm_leader, "submit", "--frames", "1-100000000", "--", "true")
    assert too_long.returncode == 2
    assert "'1-100000000' has too many frames; the limit is" in one_line_error(too_long)

    unknown = farm(farm_leader, "show", "no-such-job")
    assert unknown.returncode == 1
    assert "no job 'no-such-job'" in one_line_error(unknown)
    unknown = farm(farm_leader, "cancel", "no-such-job", "--yes")
    assert "no job 'no-such-job'" in one_line_error(unknown)

    wrong_token = farm(farm_leader, "pause", existing, token="not-a-token")
    assert wrong_token.returncode == 1
    assert one_line_error(wrong_token) == "farm pause: the leader refused the token"

    down = farm_leader.env()
    down["FARM_LEADER"] = f"http://127.0.0.1:{free_port()}"
    leader_down = farm(farm_leader, "jobs", env=down)
    assert leader_down.returncode == 1
    assert "cannot reach the leader" in one_line_error(leader_down)

    outside = tmp_path / "outside"
    for pattern in ("renders/../../outside/f_####.png", f"{outside}/f_####.png"):
        escaping = farm(farm_leader, "submit", "--output", pattern, *demo())
        assert escaping.returncode != 0
        assert "sync root" in one_line_error(escaping)
    # The same through the API, for submitters that bypass the CLI's own checks.
    headers = {"Authorization": f"Bearer {farm_leader.admin_token}"}
    with httpx.Client(base_url=farm_leader.url, headers=headers, timeout=10) as http:
        spec = {"frames": "1", "renderer": "demo", "output": "../outside/f_####.png"}
        answer = http.post("/api/jobs", json=spec)
        assert answer.status_code == 400
        assert "escapes the sync root" in answer.json()["error"]
        for frames, error in (
            ("1-x", "malformed frame list"),
            ("1-100000000", "too many"),
            ("1-99999999999999999999", "beyond ±999,999,999"),  # a 500 before: an overflow
        ):
            answer = http.post("/api/jobs", json={"frames": frames, "argv": ["true"]})
            assert answer.status_code == 400
            assert error in answer.json()["error"]
        # A typo in the command is refused now, not on every node for every chunk.
        for argv, error in (
            (["true", "{strat}"], "unknown token {strat}"),
            (["cp", "in.png", "{output}"], "uses {output} but the job has no output pattern"),
        ):
            answer = http.post("/api/jobs", json={"frames": "1", "argv": argv})
            assert answer.status_code == 400
            assert error in answer.json()["error"]

        malformed = http.post(
            "/api/jobs",
            content=b'{"name": "x", "frames": ',
            headers={"Content-Type": "application/json"},
        )
        assert malformed.status_code == 400
        error = malformed.json()["error"]
        assert error.startswith("malformed JSON")
        assert "\n" not in error

        wrong_type = http.post("/api/jobs", json={"frames": 5, "chunk": "four"})
        assert wrong_type.status_code in (400, 422)
        assert "\n" not in wrong_type.json()["error"]

        huge = json.dumps({"name": "x" * (2 * 1024 * 1024), "frames": "1", "argv": ["true"]})
        oversized = http.post(
            "/api/jobs", content=huge.encode(), headers={"Content-Type": "application/json"}
        )
        assert oversized.status_code == 413
        assert "limit" in oversized.json()["error"]

    assert not outside.exists()
    assert job_list() == before
    assert sorted(p.name for p in (farm_leader.root / "jobs").iterdir()) == [existing]
