"""The Blender add-on for real: installed from `farm blender-addon`'s zip into Debian's
blender, its Submit operator called against a real leader with a real agent.

Blender runs with ``--factory-startup`` and its user config and scripts folders
under ``tmp_path``, so nothing touches the real home.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import textwrap
from pathlib import Path

import pytest

from farmtui.integrations.blender import submission
from tests.helpers.farm import AgentFactory, LiveLeader, needs_agent, needs_leader, run_farm

pytestmark = pytest.mark.slow

needs_blender = pytest.mark.skipif(shutil.which("blender") is None, reason="no blender here")

# Runs inside Blender: install and enable the add-on, set its preferences, build a
# tiny scene in the sync root, submit once with a wrong token and once for real.
SUBMIT_FROM_BLENDER = textwrap.dedent(
    """
    import json, sys
    import bpy

    args = json.loads(sys.argv[sys.argv.index("--") + 1])
    bpy.ops.preferences.addon_install(filepath=args["zip"], overwrite=True)
    bpy.ops.preferences.addon_enable(module="farmtui_blender")
    prefs = bpy.context.preferences.addons["farmtui_blender"].preferences
    prefs.leader_url = args["leader"]
    prefs.sync_root = args["root"]

    scene = bpy.context.scene
    scene.render.engine = "CYCLES"
    scene.cycles.device = "CPU"
    scene.cycles.samples = 1
    scene.cycles.use_denoising = False  # this build has no OpenImageDenoise
    scene.render.resolution_x = 32
    scene.render.resolution_y = 18
    scene.render.resolution_percentage = 100
    scene.render.image_settings.file_format = "PNG"
    scene.render.filepath = "//renders/shot_"
    scene.frame_start, scene.frame_end, scene.frame_step = 2, 6, 2
    settings = scene.farmtui
    settings.job_name = "from blender"
    settings.chunk = 2
    settings.priority = 30
    settings.tags = "blender"
    bpy.ops.wm.save_as_mainfile(filepath=args["blend"])

    # The panel's draw, with a layout that records its labels (nothing draws in -b).
    class Layout:
        def __init__(self):
            self.labels = []

        def prop(self, data, name, **kw):
            getattr(data, name)  # a typo'd property name fails here

        def label(self, text="", **kw):
            self.labels.append(text)

        def row(self):
            return self

        def operator(self, idname, **kw):
            self.labels.append("operator " + idname)

    addon = sys.modules["farmtui_blender.ui"]
    layout = Layout()
    addon.FARMTUI_PT_render.draw(type("Panel", (), {"layout": layout})(), bpy.context)
    forward = {"layout": layout, "__getattr__": lambda self, name: getattr(prefs, name)}
    addon.FarmtuiPreferences.draw(type("Prefs", (), forward)(), bpy.context)
    result = {"labels": layout.labels}

    prefs.token = "not-a-farm-token"
    try:
        bpy.ops.farmtui.submit()
    except RuntimeError as exc:  # an operator's ERROR report raises here
        result["refused"] = str(exc)
    result["refused_status"] = settings.status

    prefs.token = args["token"]
    result["submitted"] = sorted(bpy.ops.farmtui.submit())
    result["job_id"] = settings.last_job_id
    result["status"] = settings.status
    print("RESULT=" + json.dumps(result))
    """
)


@needs_blender
@needs_agent
@pytest.mark.blender
def test_the_addon_submits_the_scene_and_the_farm_renders_its_frames(
    farm_leader: LiveLeader, farm_agents: AgentFactory, tmp_path: Path
) -> None:
    (agent,) = farm_agents(1, slots=2, tags=("blender",))
    made = run_farm("blender-addon", "--out", str(tmp_path / "addon"), "--json")
    assert made.returncode == 0, made.stderr
    zip_path = json.loads(made.stdout)["path"]

    root = farm_leader.root
    project = root / "project"
    project.mkdir()
    blend = project / "shot.blend"
    script = tmp_path / "submit_from_blender.py"
    script.write_text(SUBMIT_FROM_BLENDER, encoding="utf-8")
    arguments = {
        "zip": zip_path,
        "leader": farm_leader.url,
        "token": farm_leader.admin_token,
        "root": str(root),
        "blend": str(blend),
    }
    env = dict(os.environ)
    env["BLENDER_USER_CONFIG"] = str(tmp_path / "blender-config")
    env["BLENDER_USER_SCRIPTS"] = str(tmp_path / "blender-scripts")
    env["XDG_CONFIG_HOME"] = str(tmp_path / "xdg")
    for name in ("FARM_LEADER", "FARM_TOKEN", "FARM_TOKEN_FILE"):
        env.pop(name, None)
    ran = subprocess.run(
        [
            "blender",
            "-b",
            "--factory-startup",
            "--python",
            str(script),
            "--",
            json.dumps(arguments),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    lines = [line for line in ran.stdout.splitlines() if line.startswith("RESULT=")]
    output = ran.stdout[-3000:] + ran.stderr[-3000:]
    assert ran.returncode == 0, output
    assert lines, output
    result = json.loads(lines[0].removeprefix("RESULT="))

    assert result["labels"] == [
        "Scene range: 2-6x2",
        "Output: project/renders/shot_####.png",
        "operator farmtui.submit",
    ]

    # The wrong token: one clear line, in the operator's report and the panel's status.
    refused_line = result["refused_status"]
    assert refused_line.startswith("the leader refused the token (HTTP 401)")
    assert "\n" not in refused_line
    assert "not-a-farm-token" not in refused_line
    assert refused_line in result["refused"]

    assert result["submitted"] == ["FINISHED"]
    job_id = result["job_id"]
    assert job_id
    assert f"`farm show {job_id}`" in result["status"]

    # One copy was saved next to the original (the refused one was removed), and no
    # .blend holds the token: it lives in the add-on preferences only.
    copies = sorted(project.glob("shot.farm-*.blend"))
    assert len(copies) == 1
    token = farm_leader.admin_token.encode()
    assert all(token not in path.read_bytes() for path in (blend, *copies))

    with farm_leader.client() as client:
        finished = client.wait(job_id, timeout=40)
        detail = client.show_all(job_id)
    attempts = [attempt for chunk in detail.chunks for attempt in chunk.attempts]
    assert finished.state == "done", attempts
    spec = detail.job.spec
    assert spec.renderer == "blender"
    assert spec.scene == f"project/{copies[0].name}"
    assert spec.output == "project/renders/shot_####.png"
    assert (spec.frames, spec.chunk, spec.priority, spec.tags) == ("2-6x2", 2, 30, ["blender"])
    assert detail.job.name == "from blender"
    assert {chunk.node for chunk in detail.chunks} == {agent.name}

    # Exactly the scene's frames (2, 4, 6), where its output path says, at its size.
    renders = project / "renders"
    assert sorted(p.name for p in renders.iterdir()) == [
        "shot_0002.png",
        "shot_0004.png",
        "shot_0006.png",
    ]
    for frame in renders.iterdir():
        assert struct.unpack(">II", frame.read_bytes()[16:24]) == (32, 18)


@needs_leader
def test_the_addons_request_against_a_real_leader(farm_leader: LiveLeader, tmp_path: Path) -> None:
    """Without Blender: what the operator sends is accepted, and a refusal is one line."""
    root = farm_leader.root
    (root / "project").mkdir()
    scene = submission.SceneFacts(
        blend_file=str(root / "project" / "shot.blend"),
        scene_name="Scene",
        frame_start=1,
        frame_end=10,
        frame_step=1,
        render_path="//renders/shot_",
        file_format="PNG",
    )
    plan = submission.plan(scene, submission.FarmSettings(sync_root=str(root), chunk=5))
    job = submission.post_job(farm_leader.url, farm_leader.admin_token, plan.spec)
    with farm_leader.client() as client:
        shown = client.show(job["id"]).job
    assert (shown.spec.frames, shown.spec.chunk, shown.spec.renderer) == ("1-10", 5, "blender")
    assert shown.spec.argv[:3] == ["blender", "-b", plan.spec["scene"]]

    bad = dict(plan.spec, frames="1-x")
    with pytest.raises(submission.SubmitError) as refused:
        submission.post_job(farm_leader.url, farm_leader.admin_token, bad)
    line = str(refused.value)
    assert line.startswith("the leader refused the job (HTTP 400): ")
    assert "1-x" in line
    assert "\n" not in line

    outside = dict(plan.spec, scene="../elsewhere/shot.blend")
    with pytest.raises(submission.SubmitError, match="HTTP 400"):
        submission.post_job(farm_leader.url, farm_leader.admin_token, outside)
