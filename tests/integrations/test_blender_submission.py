"""The Blender add-on's logic without Blender: scene settings to job spec, paths, errors.

``farmtui.integrations.blender.submission`` imports no ``bpy`` and nothing
from farmtui (it runs in Blender's Python); these tests hold it to the
product's own rules: the spec it builds is a valid ``JobSpec``, its output
pattern names the files farmtui expects, and every failure is one line.
"""

from __future__ import annotations

import ast
import http.server
import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import msgspec
import pytest

from farmtui.frames import frame_path
from farmtui.integrations.blender import submission
from farmtui.integrations.blender.submission import FarmSettings, SceneFacts, SubmitError
from farmtui.jobfields import command_for
from farmtui.localfarm import free_port
from farmtui.protocol import JobSpec

ADDON = Path(submission.__file__).parent


def facts(blend: Path, **changes: object) -> SceneFacts:
    values: dict[str, object] = {
        "blend_file": str(blend),
        "scene_name": "Scene",
        "frame_start": 1,
        "frame_end": 250,
        "frame_step": 1,
        "render_path": "//renders/shot_",
        "file_format": "PNG",
    }
    values.update(changes)
    return SceneFacts(**values)  # type: ignore[arg-type]


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "root" / "project").mkdir(parents=True)
    return tmp_path / "root"


# --- what runs inside Blender imports nothing it does not have ---------------------


def test_the_addon_uses_only_the_standard_library_and_keeps_bpy_out_of_the_logic() -> None:
    for path in sorted(ADDON.glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        imported = {
            alias.name.split(".")[0]
            for node in ast.walk(tree)
            if isinstance(node, ast.Import)
            for alias in node.names
        } | {
            (node.module or "").split(".")[0]
            for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and node.level == 0
        }
        assert "farmtui" not in imported, path.name
        allowed = {"bpy"} if path.name == "ui.py" else set()
        assert imported - allowed <= set(__import__("sys").stdlib_module_names), path.name
    init = ast.parse((ADDON / "__init__.py").read_text(encoding="utf-8"))
    names = {
        target.id
        for node in init.body
        if isinstance(node, ast.Assign)
        for target in node.targets
        if isinstance(target, ast.Name)
    }
    functions = {node.name for node in init.body if isinstance(node, ast.FunctionDef)}
    assert "bl_info" in names
    assert {"register", "unregister"} <= functions


# --- frames -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("start", "end", "step", "expected"),
    [(1, 250, 1, "1-250"), (1, 250, 2, "1-250x2"), (7, 7, 1, "7"), (-5, 5, 5, "-5-5x5")],
)
def test_frames_default_to_the_scene_range_and_step(
    start: int, end: int, step: int, expected: str
) -> None:
    assert submission.scene_frames(start, end, step) == expected


def test_an_end_frame_before_the_start_is_refused() -> None:
    with pytest.raises(SubmitError, match="end frame 1 is before its start frame 10"):
        submission.scene_frames(10, 1)


# --- output pattern: Blender's own rules ---------------------------------------------


@pytest.mark.parametrize(
    ("render_path", "file_format", "use_extension", "expected"),
    [
        ("//renders/shot_", "PNG", True, "renders/shot_####.png"),  # Blender appends ####
        ("//renders/shot_##", "OPEN_EXR", True, "renders/shot_##.exr"),
        ("//renders/shot_###_v2", "JPEG", True, "renders/shot_###_v2.jpg"),
        ("//renders/shot_####.jpg", "PNG", True, "renders/shot_####.png"),  # replaced
        ("//renders/shot.v2", "PNG", True, "renders/shot.v2####.png"),  # not an image ext
        ("//renders/", "TIFF", True, "renders/####.tif"),  # a folder: frame number only
        ("//renders/shot_", "PNG", False, "renders/shot_####"),  # File Extensions off
        ("//../project/renders/a_", "PNG", True, "renders/a_####.png"),
        ("//renders/shot_", "OPEN_EXR_MULTILAYER", True, "renders/shot_####.exr"),
    ],
)
def test_output_pattern_follows_blenders_path_rules(
    root: Path, render_path: str, file_format: str, use_extension: bool, expected: str
) -> None:
    blend = root / "project" / "shot.blend"
    scene = facts(
        blend, render_path=render_path, file_format=file_format, use_file_extension=use_extension
    )
    pattern = submission.output_pattern(scene, FarmSettings(sync_root=str(root)))
    assert pattern == "project/" + expected


def test_the_pattern_names_the_files_farmtui_expects(root: Path) -> None:
    scene = facts(root / "project" / "shot.blend", render_path="//out/f_")
    pattern = submission.output_pattern(scene, FarmSettings(sync_root=str(root)))
    # Blender writes frame 7 of "//out/f_" as out/f_0007.png; the agent looks for the same.
    assert frame_path(pattern, 7) == "project/out/f_0007.png"


def test_jpeg2000_with_the_j2k_codec_writes_j2c(root: Path) -> None:
    scene = facts(root / "project" / "a.blend", file_format="JPEG2000", jpeg2k_codec="J2K")
    assert submission.output_pattern(scene, FarmSettings(sync_root=str(root))).endswith(".j2c")


@pytest.mark.parametrize(
    ("render_path", "file_format", "why"),
    [
        ("//renders/shot_", "FFMPEG", "renders a movie \\(FFMPEG\\)"),
        ("renders/shot_", "PNG", "relative to Blender's working folder"),
        ("/tmp/", "PNG", "outside the farm's sync root"),  # Blender's default output
    ],
)
def test_outputs_the_farm_cannot_use_are_refused_with_the_reason(
    root: Path, render_path: str, file_format: str, why: str
) -> None:
    scene = facts(root / "project" / "shot.blend", render_path=render_path, file_format=file_format)
    with pytest.raises(SubmitError, match=why):
        submission.output_pattern(scene, FarmSettings(sync_root=str(root)))


def test_an_output_override_is_used_as_given(root: Path) -> None:
    scene = facts(root / "project" / "shot.blend", render_path="/tmp/")
    settings = FarmSettings(sync_root=str(root), output="renders/x/f_####.png")
    assert submission.output_pattern(scene, settings) == "renders/x/f_####.png"


def test_without_a_sync_root_the_user_is_told_where_to_set_it(root: Path) -> None:
    with pytest.raises(SubmitError, match="set the farm's sync root .* add-on preferences"):
        submission.output_pattern(facts(root / "project" / "shot.blend"), FarmSettings())


def test_a_sync_root_given_through_a_symlink_still_contains_the_scene(
    root: Path, tmp_path: Path
) -> None:
    link = tmp_path / "mnt-farm"
    link.symlink_to(root)
    scene = facts(root / "project" / "shot.blend")
    assert submission.output_pattern(scene, FarmSettings(sync_root=str(link))) == (
        "project/renders/shot_####.png"
    )


# --- the copy the farm renders ----------------------------------------------------------


def test_the_copy_goes_next_to_the_original_and_never_overwrites(root: Path) -> None:
    blend = str(root / "project" / "shot.blend")
    first = submission.copy_file_for(blend, "", str(root), "20240101-120000")
    assert first == str(root / "project" / "shot.farm-20240101-120000.blend")
    taken = {first}
    second = submission.copy_file_for(blend, "", str(root), "20240101-120000", taken.__contains__)
    assert second == str(root / "project" / "shot.farm-20240101-120000-2.blend")


@pytest.mark.parametrize(
    ("shared", "folder"),
    [("farm/copies", "farm/copies"), ("//submitted", "project/submitted")],
)
def test_a_shared_folder_for_copies(root: Path, shared: str, folder: str) -> None:
    blend = str(root / "project" / "shot.blend")
    copy = submission.copy_file_for(blend, shared, str(root), "s")
    assert copy == str(root / folder / "shot.farm-s.blend")
    absolute = submission.copy_file_for(blend, str(root / "abs"), str(root), "s")
    assert absolute == str(root / "abs" / "shot.farm-s.blend")


def test_an_unsaved_file_is_refused() -> None:
    with pytest.raises(SubmitError, match="save the .blend first"):
        submission.copy_file_for("", "", "/farm", "s")


# --- the whole spec ----------------------------------------------------------------


def test_the_spec_is_built_from_the_scene_and_is_a_valid_job_spec(root: Path) -> None:
    scene = facts(root / "project" / "shot.blend", frame_start=2, frame_end=6, frame_step=2)
    settings = FarmSettings(sync_root=str(root), chunk=2, priority=30, tags="blender, gpu ,")
    plan = submission.plan(scene, settings, stamp="s")
    assert plan.copy_file == str(root / "project" / "shot.farm-s.blend")
    assert plan.spec == {
        "name": "shot",
        "renderer": "blender",
        "scene": "project/shot.farm-s.blend",
        "output": "project/renders/shot_####.png",
        "frames": "2-6x2",
        "chunk": 2,
        "priority": 30,
        "tags": ["blender", "gpu"],
    }
    # The leader's own decoder takes it as is (unknown fields are refused there) ...
    spec = msgspec.json.decode(json.dumps(plan.spec), type=JobSpec)
    # ... and farmtui's Blender command builder renders exactly those frames into it.
    assert command_for(spec) == [
        "blender", "-b", "project/shot.farm-s.blend",
        "-o", "{outdir}/shot_####.png", "-F", "PNG", "-f", "{frames}",
    ]  # fmt: skip


def test_panel_fields_override_the_scene(root: Path) -> None:
    scene = facts(root / "project" / "shot.blend", scene_name="Layout")
    assert submission.plan(scene, FarmSettings(sync_root=str(root))).spec["name"] == "shot Layout"
    settings = FarmSettings(
        sync_root=str(root), job_name="  hero\tshot ", frames="1,5,10-20", output="r/f_####.exr"
    )
    spec = submission.plan(scene, settings).spec
    assert spec["name"] == "hero shot"
    assert (spec["frames"], spec["output"]) == ("1,5,10-20", "r/f_####.exr")
    assert "tags" not in spec


def test_an_output_without_padding_is_refused(root: Path) -> None:
    settings = FarmSettings(sync_root=str(root), output="renders/still.png")
    with pytest.raises(SubmitError, match="needs '#' padding"):
        submission.plan(facts(root / "project" / "shot.blend"), settings)


# --- where the leader and token come from ---------------------------------------------


def test_connection_preferences_then_environment_then_farm_ups_config(tmp_path: Path) -> None:
    token_file = tmp_path / "admin.token"
    token_file.write_text("from-config\n", encoding="utf-8")
    config = tmp_path / "farmtui" / "config.toml"
    config.parent.mkdir()
    config.write_text(
        f'leader = "http://farm:7000"\ntoken_file = "{token_file}"\n', encoding="utf-8"
    )
    env = {"XDG_CONFIG_HOME": str(tmp_path)}
    assert submission.resolve_connection("", "", env) == ("http://farm:7000", "from-config")
    env |= {"FARM_LEADER": "http://env:1", "FARM_TOKEN": "from-env"}
    assert submission.resolve_connection("", "", env) == ("http://env:1", "from-env")
    assert submission.resolve_connection("http://pref:2", "pref", env) == ("http://pref:2", "pref")
    nothing = {"XDG_CONFIG_HOME": str(tmp_path / "none")}
    assert submission.resolve_connection("", "", nothing) == ("http://127.0.0.1:7878", "")


# --- talking to a leader: every failure is one line, never with the token -----------------

Reply = Callable[[http.server.BaseHTTPRequestHandler], None]


@pytest.fixture
def answering() -> Iterator[Callable[[Reply], str]]:
    """A loopback HTTP server that answers every request with ``reply``; its URL."""
    servers: list[http.server.ThreadingHTTPServer] = []
    release = threading.Event()

    def start(reply: Reply) -> str:
        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802  # the stdlib's name
                self.rfile.read(int(self.headers.get("Content-Length", "0")))
                reply(self)

            def log_message(self, format: str, *args: object) -> None:
                pass

        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        server.release = release  # type: ignore[attr-defined]
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield start
    release.set()
    for server in servers:
        server.shutdown()
        server.server_close()


def send(handler: http.server.BaseHTTPRequestHandler, status: int, body: bytes) -> None:
    handler.send_response(status)
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


def test_a_refused_submit_is_one_line_with_the_leaders_reason(
    answering: Callable[[Reply], str],
) -> None:
    url = answering(lambda h: send(h, 400, b'{"error": "frames: \'1-x\' is not\\na frame list"}'))
    with pytest.raises(SubmitError) as refused:
        submission.post_job(url, "t0ken", {"frames": "1-x"})
    assert str(refused.value) == (
        "the leader refused the job (HTTP 400): frames: '1-x' is not a frame list"
    )
    assert not refused.value.job_may_exist


def test_a_refused_token_never_shows_the_token(answering: Callable[[Reply], str]) -> None:
    def echo(handler: http.server.BaseHTTPRequestHandler) -> None:
        said = json.dumps({"error": f"unknown token {handler.headers['Authorization']}"})
        send(handler, 401, said.encode())

    with pytest.raises(SubmitError) as refused:
        submission.post_job(answering(echo), "s3cret-token", {})
    line = str(refused.value)
    assert "s3cret-token" not in line
    assert line.startswith("the leader refused the token (HTTP 401): unknown token Bearer (token)")


def test_a_proxy_error_page_becomes_one_short_line(answering: Callable[[Reply], str]) -> None:
    page = b"<html>\n<body>\n\x1b[31mBad gateway</body>\n</html>\n" + b"x" * 1000
    with pytest.raises(SubmitError) as refused:
        submission.post_job(answering(lambda h: send(h, 502, page)), "t", {})
    line = str(refused.value)
    assert line.startswith("the leader refused the job (HTTP 502): <html> <body> [31mBad gateway")
    assert "\n" not in line
    assert "\x1b" not in line
    assert len(line) <= submission.MAX_LINE


def test_an_answer_that_is_not_a_job_is_an_error(answering: Callable[[Reply], str]) -> None:
    with pytest.raises(SubmitError, match="is not a farmtui job"):
        submission.post_job(answering(lambda h: send(h, 201, b"hello")), "t", {})


def test_a_leader_that_does_not_answer_in_time_may_have_the_job(
    answering: Callable[[Reply], str],
) -> None:
    def stall(handler: http.server.BaseHTTPRequestHandler) -> None:
        handler.server.release.wait(30)  # type: ignore[attr-defined]

    with pytest.raises(SubmitError, match="did not answer within 0.3 s") as late:
        submission.post_job(answering(stall), "t", {}, timeout=0.3)
    assert late.value.job_may_exist


def test_a_leader_that_trickles_its_answer_cannot_hold_blender_past_the_timeout(
    answering: Callable[[Reply], str],
) -> None:
    def trickle(handler: http.server.BaseHTTPRequestHandler) -> None:
        handler.send_response(201)
        handler.send_header("Content-Length", "100000")
        handler.end_headers()
        # A byte well within each socket timeout, for ever: urllib's timeout never fires.
        while not handler.server.release.wait(0.05):  # type: ignore[attr-defined]
            handler.wfile.write(b" ")
            handler.wfile.flush()

    began = time.monotonic()
    with pytest.raises(SubmitError, match="did not answer within 0.5 s") as late:
        submission.post_job(answering(trickle), "t", {}, timeout=0.5)
    assert time.monotonic() - began < 5
    assert late.value.job_may_exist


def test_a_huge_answer_is_not_read_into_blenders_memory(
    answering: Callable[[Reply], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(submission, "MAX_ANSWER", 1000)
    body = json.dumps({"id": "j1", "name": "x" * 5000}).encode()
    with pytest.raises(SubmitError, match="not a farmtui job") as huge:
        submission.post_job(answering(lambda h: send(h, 201, body)), "t", {})
    assert huge.value.job_may_exist


def test_a_leader_that_is_down_is_one_line() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    line = f"^cannot reach the leader at {url}: Connection refused$"
    with pytest.raises(SubmitError, match=line):
        submission.post_job(url, "t", {})


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("ftp://farm", "must look like http://host:7878"),
        ("http://farm:port", "must look like http://host:7878"),
        ("http://me:pw@farm:7878", "must not carry a user or password"),
    ],
)
def test_a_bad_leader_url_is_refused_before_sending(url: str, why: str) -> None:
    with pytest.raises(SubmitError, match=why) as refused:
        submission.post_job(url, "t", {})
    assert "pw" not in str(refused.value)


def test_no_token_says_how_to_get_one() -> None:
    with pytest.raises(SubmitError, match="no farm token.*farm token create"):
        submission.post_job("http://127.0.0.1:1", "", {})


def test_the_status_line_names_the_job_and_how_to_follow_it() -> None:
    line = submission.status_line({"id": "j-123", "name": "shot\n010"})
    assert line == "submitted shot 010 as job j-123: see `farm show j-123` or open `farm console`"
    assert os.linesep not in line


def test_an_unreadable_ca_file_is_one_line(tmp_path: Path) -> None:
    missing = tmp_path / "ca.pem"
    with pytest.raises(SubmitError, match=f"^cannot read the CA file {missing}: "):
        submission.post_job("https://127.0.0.1:1", "t", {}, cafile=str(missing))
