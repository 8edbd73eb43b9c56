"""The REST API on a real uvicorn server, over real HTTP."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest

from farmtui.protocol import AgentHello
from server import api_uploads
from server.config import LeaderConfig
from tests.helpers.leader import InProcessLeader, leader_in_process, wait_for

SPEC: dict[str, Any] = {
    "name": "shot",
    "frames": "1-4",
    "chunk": 2,
    "renderer": "generic",
    "argv": ["sleep", "0"],
    "output": "renders/shot/f_####.png",
}


async def submit(http: httpx.AsyncClient, **changes: Any) -> dict[str, Any]:
    response = await http.post("/api/jobs", json={**SPEC, **changes})
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def one_line_error(response: httpx.Response) -> str:
    body = response.json()
    assert set(body) == {"error"}
    assert "\n" not in body["error"]
    assert body["error"]
    message: str = body["error"]
    return message


async def test_extra_args_are_built_into_the_command_or_refused(leader: InProcessLeader) -> None:
    blender = {"renderer": "blender", "scene": "s.blend", "argv": []}
    blender["extra_args"] = ["-E", "CYCLES"]
    async with leader.http() as http:
        job = await submit(http, **blender)
        argv = job["spec"]["argv"]
        assert argv[argv.index("-f") - 2 :] == ["-E", "CYCLES", "-f", "{frames}"]
        # As the CLI sends it: the command built with them, and them.
        assert (await submit(http, **{**blender, "argv": argv}))["spec"]["argv"] == argv
        for wrong in ({"extra_args": ["-x"]}, {**blender, "argv": ["blender", "{frames}"]}):
            response = await http.post("/api/jobs", json={**SPEC, **wrong})
            assert response.status_code == 400
            assert "extra-args go into a renderer's built command" in one_line_error(response)
        # The CLI and a job file split a string; the API does not, and says so (its words
        # were the job file's: "a string of options or a list of strings").
        response = await http.post("/api/jobs", json={**blender, "extra_args": "-E CYCLES"})
        assert response.status_code == 422
        assert one_line_error(response) == "extra_args: must be a list, not a string"
        # A word no system passes on to a program (over 128 KiB): refused at submit, not
        # failed on every node ("Argument list too long").
        response = await http.post("/api/jobs", json={**blender, "extra_args": ["x" * 40_000]})
        assert response.status_code == 422
        assert one_line_error(response) == "extra_args: must have at most 32767 characters"
        listed = (await http.get("/api/jobs")).json()
    assert len(listed) == 2, "nothing else made"


async def test_a_scene_not_in_the_sync_root_is_taken_with_a_warning(
    leader: InProcessLeader,
) -> None:
    """A pre-job script or a job it waits for may make it: not refused, but said, where
    before its chunks failed on every node without a word at submit."""
    (leader.root / "shots").mkdir()
    (leader.root / "shots/a.blend").write_bytes(b"BLENDER")
    (leader.root / "plates").mkdir()
    (leader.root / "plates/p_0001.png").write_bytes(b"png")
    (leader.root / "plates/q_notes.txt").write_bytes(b"not a frame of q_%04d.png")
    blender = {"renderer": "blender", "argv": [], "output": "r/f_####.png"}
    ffmpeg = {"renderer": "ffmpeg", "argv": []}
    async with leader.http() as http:
        jobs = {
            scene: (await submit(http, **kind, scene=scene))["id"]
            for kind, scene in (
                (blender, "shots/a.blend"),
                (blender, "shots/b.blend"),
                (ffmpeg, "plates/p_####.png"),
                (ffmpeg, "plates/q_%04d.png"),
                (ffmpeg, "gone/p_####.png"),
                (blender, "shots"),  # a folder is no scene
            )
        }
        events = (await http.get("/api/events")).json()
    warned = {
        scene: [e["text"] for e in events if e["job_id"] == job_id and e["level"] == "warn"]
        for scene, job_id in jobs.items()
    }
    assert warned["shots/a.blend"] == warned["plates/p_####.png"] == []
    assert warned["shots/b.blend"] == [
        "scene shots/b.blend is not in the sync root: its chunks fail on every node unless "
        "something makes it first (a pre-job script, a job this one waits for)"
    ]
    assert len(warned["plates/q_%04d.png"]) == len(warned["gone/p_####.png"]) == 1
    assert len(warned["shots"]) == 1


async def test_healthz_needs_no_token(leader: InProcessLeader) -> None:
    async with leader.http(None) as http:
        response = await http.get("/healthz")
    assert response.status_code == 200
    # A SQLite leader is always the active one (issue 14: roles on PostgreSQL).
    assert response.json() == {"ok": True, "role": "active", "active": leader.url}


async def test_submit_list_show(leader: InProcessLeader) -> None:
    async with leader.http() as http:
        job = await submit(http)
        assert job["name"] == "shot"
        assert job["owner"] == "admin"
        assert job["state"] == "queued"
        listed = (await http.get("/api/jobs")).json()
        assert [j["id"] for j in listed] == [job["id"]]
        detail = (await http.get(f"/api/jobs/{job['id']}")).json()
    assert detail["job"]["id"] == job["id"]
    assert [c["frames"] for c in detail["chunks"]] == [[1, 2], [3, 4]]
    assert set(detail["frame_states"]) == {"1", "2", "3", "4"}
    # Persisted before the answer: the store has it.
    jobs, _ = leader.leader.store.load()
    assert [j.id for j in jobs] == [job["id"]]


async def test_whoami_and_owner_is_token_name(leader: InProcessLeader) -> None:
    alice = leader.token("user", "alice")
    async with leader.http(alice) as http:
        assert (await http.get("/api/whoami")).json() == {"name": "alice", "role": "user"}
        job = await submit(http)
        assert job["owner"] == "alice"
        assert (await submit(http, owner="alice"))["owner"] == "alice"
        refused = await http.post("/api/jobs", json={**SPEC, "owner": "mallory"})
        assert refused.status_code == 403
        assert "users submit only as themselves" in one_line_error(refused)
    async with leader.http() as http:
        assert (await submit(http, owner="mallory"))["owner"] == "mallory"


async def test_job_actions_and_events_log(leader: InProcessLeader) -> None:
    async with leader.http() as http:
        job = await submit(http)
        response = await http.post(
            "/api/jobs/actions", json={"action": "pause", "ids": [job["id"]]}
        )
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["removed"] == []
        assert body["jobs"][0]["state"] == "paused"
        events = await http.get(f"/api/jobs/{job['id']}/events")
        assert events.headers["content-type"].startswith("text/plain")
        assert "submitted" in events.text
        assert "admin" in events.text
        response = await http.post(
            "/api/jobs/actions", json={"action": "delete", "ids": [job["id"]]}
        )
        assert response.json() == {"jobs": [], "removed": [job["id"]]}
        assert (await http.get(f"/api/jobs/{job['id']}")).status_code == 404
    jobs, _ = leader.leader.store.load()
    assert jobs == []
    folder = leader.root / "jobs" / job["id"]
    await wait_for(lambda: not folder.exists(), 5.0, "the job's log folder to go")


async def test_missing_and_wrong_token_are_401(leader: InProcessLeader) -> None:
    async with leader.http(None) as http:
        response = await http.get("/api/jobs")
        assert response.status_code == 401
        one_line_error(response)
    async with leader.http("not-a-token") as http:
        response = await http.get("/api/jobs")
        assert response.status_code == 401
        response = await http.post("/api/jobs", json=SPEC)
        assert response.status_code == 401
    assert leader.leader.scheduler.jobs == {}


async def test_viewer_reads_but_cannot_act(leader: InProcessLeader) -> None:
    async with leader.http() as admin:
        job = await submit(admin)
    viewer = leader.token("viewer", "val")
    async with leader.http(viewer) as http:
        assert (await http.get("/api/jobs")).status_code == 200
        assert (await http.post("/api/jobs", json=SPEC)).status_code == 403
        response = await http.post(
            "/api/jobs/actions", json={"action": "cancel", "ids": [job["id"]]}
        )
        assert response.status_code == 403
        one_line_error(response)
    assert leader.leader.scheduler.jobs[job["id"]].state == "queued"


async def test_user_controls_only_own_jobs_and_not_priority(leader: InProcessLeader) -> None:
    async with leader.http() as admin:
        theirs = await submit(admin)
    alice = leader.token("user", "alice")
    async with leader.http(alice) as http:
        mine = await submit(http)
        response = await http.post(
            "/api/jobs/actions", json={"action": "pause", "ids": [theirs["id"]]}
        )
        assert response.status_code == 403
        response = await http.post(f"/api/jobs/{mine['id']}/priority", json={"priority": 10})
        assert response.status_code == 403
        assert "admin" in one_line_error(response)
        response = await http.post(
            "/api/jobs/actions", json={"action": "pause", "ids": [mine["id"]]}
        )
        assert response.status_code == 200
    assert leader.leader.scheduler.jobs[mine["id"]].priority == 50
    assert leader.leader.scheduler.jobs[theirs["id"]].state == "queued"


async def test_admin_priority_and_move(leader: InProcessLeader) -> None:
    async with leader.http() as http:
        first = await submit(http, name="first")
        second = await submit(http, name="second")
        response = await http.post(f"/api/jobs/{second['id']}/move", json={"where": "top"})
        assert response.status_code == 200, response.text
        assert [j["id"] for j in response.json()] == [second["id"], first["id"]]
        response = await http.post(f"/api/jobs/{first['id']}/priority", json={"priority": 10})
        assert response.status_code == 200
        assert response.json()["priority"] == 10
        # Moving across priority groups is refused and changes nothing.
        response = await http.post(f"/api/jobs/{second['id']}/move", json={"before": first["id"]})
        assert response.status_code == 409
        one_line_error(response)
        listed = (await http.get("/api/jobs")).json()
    assert [j["id"] for j in listed] == [first["id"], second["id"]]


async def test_malformed_json_is_400(leader: InProcessLeader) -> None:
    async with leader.http() as http:
        response = await http.post(
            "/api/jobs", content=b"{not json", headers={"content-type": "application/json"}
        )
        assert response.status_code == 400
        assert "malformed JSON" in one_line_error(response)
        response = await http.post("/api/jobs", json={"frames": 12})
        assert response.status_code == 422
        one_line_error(response)
    assert leader.leader.scheduler.jobs == {}


@pytest.mark.parametrize(
    "content_type",
    ["application/xml", "application/x-www-form-urlencoded", "text/plain", "multipart/form-data"],
)
async def test_a_body_that_is_not_json_by_its_type_is_415(
    leader: InProcessLeader, content_type: str
) -> None:
    """curl's ``-d`` without ``-H`` says "form": told the header to add, nothing made."""
    body = b'{"frames": "1-4", "argv": ["render"]}'
    async with leader.http() as http:
        response = await http.post(
            "/api/jobs", content=body, headers={"content-type": content_type}
        )
        assert response.status_code == 415
        assert one_line_error(response) == (
            f"body is '{content_type}', not JSON: send it with Content-Type: application/json"
        )
        for accepted in ("application/json; charset=utf-8", "application/vnd.farm+json", None):
            headers = {} if accepted is None else {"content-type": accepted}
            made = await http.post("/api/jobs", content=body, headers=headers)
            assert made.status_code == 201, made.text
    assert len(leader.leader.scheduler.jobs) == 3


@pytest.mark.parametrize(
    ("headers", "error"),
    [
        (
            [("content-type", "application/json"), ("content-type", "text/plain")],
            "body has two Content-Type headers; send one",
        ),
        (
            [("content-type", "")],
            "body has an empty Content-Type, not JSON: send it with Content-Type: application/json",
        ),
        (
            [("content-type", "application/+json")],
            "body is 'application/+json', not JSON: send it with Content-Type: application/json",
        ),
        (
            [("content-type", "application/json; charset=utf-16")],
            "JSON is UTF-8; charset='utf-16' refused",
        ),
    ],
)
async def test_a_content_type_that_cannot_be_read_as_json_is_415(
    leader: InProcessLeader, headers: list[tuple[str, str]], error: str
) -> None:
    body = b'{"frames": "1-4", "argv": ["render"]}'
    async with leader.http() as http:
        response = await http.post("/api/jobs", content=body, headers=headers)
    assert response.status_code == 415
    assert one_line_error(response) == error
    assert leader.leader.scheduler.jobs == {}


@pytest.mark.parametrize(
    ("field", "value"),
    [("argv", ["echo", "a\x00b"]), ("env", {"K": "a\x00b"}), ("pre_job", ["true\x00"])],
)
async def test_a_nul_byte_in_a_command_is_refused_at_submit(
    leader: InProcessLeader, field: str, value: object
) -> None:
    """No program can be given one: the job was taken, then every attempt failed on
    every node ("embedded null byte") until its retries ran out."""
    async with leader.http() as http:
        response = await http.post("/api/jobs", json={**SPEC, field: value})
    assert response.status_code == 422
    assert one_line_error(response) == f"{field}: must not hold a NUL byte"
    assert leader.leader.scheduler.jobs == {}


async def test_json_nested_past_the_decoders_depth_is_400(leader: InProcessLeader) -> None:
    """Not a 500 "leader error: RecursionError": the decoder walks what it skips too."""
    deep = '{"job_ids": [], "action": "pause", "x": ' + '{"a": ' * 50_000 + "1" + "}" * 50_001
    async with leader.http() as http:
        response = await http.post(
            "/api/jobs/actions", content=deep, headers={"content-type": "application/json"}
        )
    assert response.status_code == 400
    assert "nested too deeply" in one_line_error(response)


async def test_oversized_body_is_413(leader: InProcessLeader) -> None:
    limit = leader.leader.config.max_request_bytes
    async with leader.http() as http:
        response = await http.post("/api/jobs", json={**SPEC, "name": "x" * (limit + 1)})
        assert response.status_code == 413
        one_line_error(response)
    assert leader.leader.scheduler.jobs == {}


async def test_unknown_job_is_404(leader: InProcessLeader) -> None:
    async with leader.http() as http:
        assert (await http.get("/api/jobs/nope")).status_code == 404
        response = await http.post("/api/jobs/actions", json={"action": "pause", "ids": ["nope"]})
        assert response.status_code == 404
        assert "nope" in one_line_error(response)
        assert (await http.get("/api/jobs/nope/events")).status_code == 404
        assert (await http.post("/api/nodes/nope/disable")).status_code == 404
        assert (await http.get("/api/no/such/route")).status_code == 404
        # A path no route takes is an error in one line, not Starlette's redirect to
        # the same path without its last slash (a client would follow it elsewhere).
        for method, path in (("PUT", "/api/limits/..%2f"), ("GET", "/api/jobs/")):
            response = await http.request(method, path, json={"units": 2})
            assert response.status_code == 404
            one_line_error(response)
        # A long id is not echoed whole (10,000 characters were: break round 33b).
        for response in (
            await http.get("/api/jobs/" + "x" * 10_000),
            await http.post("/api/jobs/actions", json={"action": "pause", "ids": ["x" * 10_000]}),
        ):
            assert response.status_code == 404
            assert len(one_line_error(response)) < 120


async def test_actions_with_one_unknown_id_change_nothing(leader: InProcessLeader) -> None:
    async with leader.http() as http:
        job = await submit(http)
        response = await http.post(
            "/api/jobs/actions", json={"action": "pause", "ids": [job["id"], "nope"]}
        )
    assert response.status_code == 404
    assert leader.leader.scheduler.jobs[job["id"]].state == "queued"


@pytest.mark.parametrize("frames", ["1-", "banana", "1-100000000"])
async def test_bad_frame_list_is_400_and_nothing_changes(
    leader: InProcessLeader, frames: str
) -> None:
    commits = leader.leader.store.commits
    async with leader.http() as http:
        response = await http.post("/api/jobs", json={**SPEC, "frames": frames})
        assert response.status_code == 400
        one_line_error(response)
        assert (await http.get("/api/jobs")).json() == []
    assert leader.leader.store.commits == commits


@pytest.mark.parametrize(
    "output", ["../escape/f_####.png", "/etc/f_####.png", "a/../../f_####.png"]
)
async def test_output_pattern_escaping_the_root_is_refused(
    leader: InProcessLeader, output: str
) -> None:
    async with leader.http() as http:
        response = await http.post("/api/jobs", json={**SPEC, "output": output})
    assert response.status_code == 400
    one_line_error(response)
    assert leader.leader.scheduler.jobs == {}


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("output", "renders/e\x1b[2J/f_####.png"),
        ("output", "renders/nl\nINFO forged/f_####.png"),
        ("output", "renders/a\u202eb/f_####.png"),
        ("scene", "shots/a\x1b]0;pwned\x07.blend"),
    ],
)
async def test_a_path_with_a_control_character_is_refused(
    leader: InProcessLeader, field: str, value: str
) -> None:
    """Break round 33b: a user's job made folders named with an ESC, a newline or a bidi
    override in the shared root, which every listing of it then showed."""
    async with leader.http() as http:
        response = await http.post("/api/jobs", json={**SPEC, field: value})
    assert response.status_code == 400
    assert "has a control character" in one_line_error(response)
    assert leader.leader.scheduler.jobs == {}


async def test_chunk_actions_and_patch(leader: InProcessLeader) -> None:
    async with leader.http() as http:
        job = await submit(http)
        response = await http.post(
            f"/api/jobs/{job['id']}/chunks/actions", json={"action": "hold", "chunks": [1]}
        )
        assert response.status_code == 200, response.text
        assert response.json()["chunks"][1]["state"] == "held"
        response = await http.post(
            f"/api/jobs/{job['id']}/chunks/actions", json={"action": "hold", "chunks": [7]}
        )
        assert response.status_code == 404
        response = await http.patch(f"/api/jobs/{job['id']}", json={"name": "renamed"})
        assert response.status_code == 200, response.text
        assert response.json()["name"] == "renamed"


async def test_tokens_admin_only(leader: InProcessLeader) -> None:
    async with leader.http() as http:
        response = await http.post("/api/tokens", json={"role": "user", "name": "bob"})
        assert response.status_code == 201
        token = response.json()["token"]
        assert response.json()["name"] == "bob"
        response = await http.post("/api/tokens", json={"role": "wizard", "name": "x"})
        assert response.status_code == 422
    async with leader.http(token) as http:
        assert (await http.get("/api/whoami")).json() == {"name": "bob", "role": "user"}
        response = await http.post("/api/tokens", json={"role": "admin", "name": "bob2"})
        assert response.status_code == 403
    # Only the hash is stored.
    rows = leader.leader.store.tokens()
    assert all(token not in row for row in rows)


async def test_agent_token_cannot_use_the_api(leader: InProcessLeader) -> None:
    async with leader.http(leader.agent_token) as http:
        assert (await http.get("/api/jobs")).status_code == 403
        assert (await http.post("/api/jobs", json=SPEC)).status_code == 403


async def test_upload_writes_into_the_root(leader: InProcessLeader) -> None:
    async with leader.http() as http:
        response = await http.put("/api/files/renders/shot/f_0001.png", content=b"PNG data")
    assert response.status_code == 204, response.text
    assert (leader.root / "renders/shot/f_0001.png").read_bytes() == b"PNG data"
    assert not [p for p in (leader.root / "renders/shot").iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize("stuck", ["its path", "a write"])
async def test_an_upload_on_a_disk_that_stopped_answering_holds_up_no_other_request(
    leader: InProcessLeader, monkeypatch: pytest.MonkeyPatch, stuck: str
) -> None:
    """A filer that stops answering mid-upload (resolving the path, or writing): /healthz
    (and every node's lease renewal) is still answered meanwhile, and the file lands
    whole once the disk answers."""
    waiting, answered = threading.Event(), threading.Event()
    returned: list[float] = []

    def stuck_on_the_disk(step: Callable[..., Any]) -> Callable[..., Any]:
        def stuck_step(*args: Any) -> Any:
            if not returned:  # the first time only
                waiting.set()
                answered.wait(timeout=15)  # the disk answers once /healthz did, or later
                returned.append(time.monotonic())
            return step(*args)

        return stuck_step

    if stuck == "its path":
        monkeypatch.setattr(api_uploads, "confine", stuck_on_the_disk(api_uploads.confine))
    else:
        write = stuck_on_the_disk(api_uploads.Upload.write)
        monkeypatch.setattr(api_uploads.Upload, "write", write)
    async with leader.http() as http:
        upload = asyncio.create_task(http.put("/api/files/renders/big.exr", content=b"EXR" * 10))
        assert await asyncio.to_thread(waiting.wait, 15), "the upload never reached the disk"
        health = await http.get("/healthz")
        healthy_at = time.monotonic()
        answered.set()
        response = await upload
    assert health.status_code == 200
    assert returned
    assert healthy_at < returned[0], "/healthz waited for the upload's disk"
    assert response.status_code == 204, response.text
    assert (leader.root / "renders/big.exr").read_bytes() == b"EXR" * 10


async def test_an_upload_whose_folder_became_a_symlink_after_its_check_lands_nowhere(
    leader: InProcessLeader, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Break round 26d (U4): a folder on an upload's path, checked while a folder, was a
    symlink a moment later; its folders were made and opened by path, through it."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (leader.root / "shots").mkdir()
    (leader.root / "shots/d").symlink_to(elsewhere)
    # What the check saw a moment before the swap: a folder inside the sync root.
    monkeypatch.setattr(api_uploads, "confine", lambda root, relative: root.resolve() / relative)
    async with leader.http() as http:
        response = await http.put("/api/files/shots/d/sub/x.png", content=b"x")
    assert response.status_code == 400, response.text
    assert one_line_error(response) == (
        "cannot write 'shots/d/sub/x.png': d on its way is a symlink or not a folder; refused"
    )
    assert not list(elsewhere.iterdir())


async def test_an_upload_whose_folder_is_moved_meanwhile_lands_nowhere_and_leaves_nothing(
    leader: InProcessLeader, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The folder renamed while the body streams: the temporary file was left in it."""
    writing, moved = threading.Event(), threading.Event()
    write = api_uploads.Upload.write

    def write_then_wait(self: api_uploads.Upload, data: bytes) -> None:
        write(self, data)
        writing.set()
        moved.wait(timeout=15)

    monkeypatch.setattr(api_uploads.Upload, "write", write_then_wait)
    async with leader.http() as http:
        upload = asyncio.create_task(http.put("/api/files/out/d/f.bin", content=b"x" * 1000))
        assert await asyncio.to_thread(writing.wait, 15)
        (leader.root / "out/d").rename(leader.root / "out/elsewhere")
        moved.set()
        response = await upload
    assert response.status_code == 409, response.text
    assert "changed during the upload" in one_line_error(response)
    assert [p.name for p in (leader.root / "out").rglob("*")] == ["elsewhere"]


@pytest.mark.parametrize(
    "path", ["%2E%2E/outside.png", "renders/%2E%2E/%2E%2E/outside.png", "/etc/outside.png"]
)
async def test_upload_path_traversal_is_refused(leader: InProcessLeader, path: str) -> None:
    async with leader.http(leader.agent_token) as http:
        response = await http.put(f"{leader.url}/api/files/{path}", content=b"x")
    assert response.status_code == 400, response.text
    one_line_error(response)
    assert not (leader.root.parent / "outside.png").exists()


@pytest.mark.parametrize(
    ("path", "says"),
    [
        ("d/" * 2000 + "f.png", "more than 128 folders deep"),
        ("x" * 5000, "longer than 4096"),
        ("d/" + "y" * 240 + ".png", "has a name longer than 232 bytes"),
    ],
)
async def test_an_upload_too_deep_or_too_long_is_a_400_and_no_traceback(
    leader: InProcessLeader, caplog: pytest.LogCaptureFixture, path: str, says: str
) -> None:
    """2,000 folders deep was a RecursionError: a 500 and 7,000 lines of traceback in the
    leader's log for each request."""
    async with leader.http() as http:
        response = await http.put(f"{leader.url}/api/files/{path}", content=b"x")
    assert response.status_code == 400, response.text[:300]
    assert says in one_line_error(response)
    assert "Traceback" not in caplog.text
    assert not (leader.root / "d").exists()


@pytest.mark.parametrize(
    ("path", "says"),
    [
        ("renders/ctl/e%1b%5b2J.txt", "has a control character"),
        ("renders/ctl/a%09b.txt", "has a control character"),
        ("renders/ctl/a%E2%80%AEb.txt", "has a control character"),  # a bidi override
        ("renders/ctl/a%ff%fe.txt", "the path is not valid UTF-8"),
    ],
)
async def test_an_upload_to_a_name_no_listing_shows_plainly_is_refused(
    leader: InProcessLeader, path: str, says: str
) -> None:
    """Break round 33b: an ESC made it into a file name in the shared root, and bytes that
    are not UTF-8 were stored under another name (U+FFFD)."""
    async with leader.http() as http:
        response = await http.put(f"{leader.url}/api/files/{path}", content=b"x")
    assert response.status_code == 400, response.text
    assert says in one_line_error(response)
    assert not (leader.root / "renders/ctl").exists()


async def test_upload_needs_agent_or_admin(leader: InProcessLeader) -> None:
    viewer = leader.token("viewer", "val")
    async with leader.http(viewer) as http:
        response = await http.put("/api/files/renders/x.png", content=b"x")
    assert response.status_code == 403
    assert not (leader.root / "renders/x.png").exists()


async def test_nodes_and_logs_of_unknown(leader: InProcessLeader) -> None:
    async with leader.http() as http:
        assert (await http.get("/api/nodes")).json() == []
        assert (await http.get("/api/nodes/ghost/log")).status_code == 404
        job = await submit(http)
        response = await http.get(f"/api/jobs/{job['id']}/logs", params={"chunk": 0})
        assert response.status_code == 404
        response = await http.get(f"/api/jobs/{job['id']}/logs", params={"chunk": "x"})
        assert response.status_code == 400


async def test_an_upload_that_landed_as_its_attempt_was_stopped_is_taken_back(
    leader: InProcessLeader, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Break round 26 (F2): a rename the filer held while the operator retried the chunk
    left the stopped attempt's frame in the sync root."""
    farm = leader.leader
    async with leader.http() as http:
        job = (await http.post("/api/jobs", json=SPEC)).json()["id"]
    farm.run(lambda now: farm.scheduler.node_connected(AgentHello(name="n1", slots=1), now)[0])
    loop = asyncio.get_running_loop()
    commit = api_uploads.Upload.commit

    def retried_as_it_lands(upload: api_uploads.Upload) -> None:
        commit(upload)
        retried = threading.Event()

        def retry() -> None:
            farm.run(lambda now: farm.scheduler.chunk_action(job, [0], "retry", "admin", now))
            retried.set()

        loop.call_soon_threadsafe(retry)
        assert retried.wait(10.0)

    monkeypatch.setattr(api_uploads.Upload, "commit", retried_as_it_lands)
    path = "/api/files/renders/shot/f_0001.png"
    async with leader.http(leader.agent_token) as http:
        late = await http.put(path, params={"job": job, "chunk": 0, "attempt": 1}, content=b"1")
    assert late.status_code == 409, late.text
    assert not (leader.root / "renders/shot/f_0001.png").exists()
    assert not list((leader.root / "renders/shot").iterdir()), "no temporary file either"


async def test_a_nodes_log_tail_out_of_range_is_refused(leader: InProcessLeader) -> None:
    farm = leader.leader
    farm.run(lambda now: farm.scheduler.node_connected(AgentHello(name="n1", slots=1), now)[0])
    async with leader.http() as http:
        for bad in ("-5", "2001"):
            response = await http.get("/api/nodes/n1/log", params={"tail": bad})
            assert response.status_code == 400
            assert one_line_error(response) == f"tail={bad} is not between 0 and 2000"
        assert (await http.get("/api/nodes/n1/log", params={"tail": "10"})).status_code == 200


class TestUploadLimit:
    @pytest.fixture
    def leader_config(self) -> LeaderConfig:
        return LeaderConfig(max_upload_bytes=1000)

    async def test_upload_over_the_limit_is_413(self, leader: InProcessLeader) -> None:
        async with leader.http() as http:
            response = await http.put("/api/files/renders/big.png", content=b"x" * 1001)
            assert response.status_code == 413
            one_line_error(response)

            async def chunks() -> AsyncIterator[bytes]:
                for _ in range(3):
                    yield b"x" * 600  # no Content-Length: the limit holds while streaming

            response = await http.put("/api/files/renders/big.png", content=chunks())
            assert response.status_code == 413
            response = await http.put("/api/files/renders/ok.png", content=b"x" * 1000)
            assert response.status_code == 204
        assert not (leader.root / "renders/big.png").exists()
        assert [p.name for p in (leader.root / "renders").iterdir()] == ["ok.png"]


async def test_only_the_current_attempt_may_upload_a_chunks_output(
    leader: InProcessLeader,
) -> None:
    farm = leader.leader
    async with leader.http() as http:
        job = (await http.post("/api/jobs", json=SPEC)).json()["id"]
    farm.run(lambda now: farm.scheduler.node_connected(AgentHello(name="n1", slots=1), now)[0])
    chunk = farm.chunk(job, 0)
    assert chunk is not None
    assert chunk.state == "assigned"
    path = "/api/files/renders/shot/f_0001.png"
    async with leader.http(leader.agent_token) as http:
        stale = await http.put(path, params={"job": job, "chunk": 0, "attempt": 2}, content=b"x")
        assert stale.status_code == 409, stale.text
        assert "not current" in one_line_error(stale)
        assert not (leader.root / "renders/shot/f_0001.png").exists()
        current = await http.put(path, params={"job": job, "chunk": 0, "attempt": 1}, content=b"1")
        assert current.status_code == 204, current.text
        farm.run(lambda now: farm.scheduler.chunk_action(job, [0], "retry", "admin", now))
        late = await http.put(path, params={"job": job, "chunk": 0, "attempt": 1}, content=b"2")
        assert late.status_code == 409
    assert (leader.root / "renders/shot/f_0001.png").read_bytes() == b"1"


async def test_a_user_submits_only_within_the_priority_range_admins_allow(
    leader: InProcessLeader,
) -> None:
    alice = leader.token("user", "alice")
    async with leader.http(alice) as http:
        jumped = await http.post("/api/jobs", json={**SPEC, "priority": 0})
        assert jumped.status_code == 403
        assert "priority 0 needs an admin" in one_line_error(jumped)
        assert (await http.post("/api/jobs", json={**SPEC, "priority": 50})).status_code == 201
    async with leader.http() as http:
        assert (await http.post("/api/jobs", json={**SPEC, "priority": 0})).status_code == 201
        assert len((await http.get("/api/jobs")).json()) == 2


async def test_a_job_whose_submitter_names_no_priority_gets_the_lowest_they_may_ask_for(
    tmp_path: Path,
) -> None:
    """With ``user_priority_min`` raised, a plain user's submit was refused: the default, 50,
    was below it (break round 33c). A priority the user names is still checked."""
    config = LeaderConfig(tick_interval=0.05, user_priority_min=60)
    async with leader_in_process(tmp_path, config) as leader:
        async with leader.http(leader.token("user", "alice")) as http:
            plain = await submit(http)
            assert plain["priority"] == 60
            named = await http.post("/api/jobs", json={**SPEC, "priority": 50})
            assert named.status_code == 403
            assert "priority 50 needs an admin: users submit with priority 60-100" in (
                one_line_error(named)
            )
            assert (await submit(http, priority=80))["priority"] == 80
        async with leader.http() as http:
            assert (await submit(http))["priority"] == 50  # an admin's default
            assert len((await http.get("/api/jobs")).json()) == 3


async def test_a_user_reorders_only_among_their_own_jobs(leader: InProcessLeader) -> None:
    alice, bob = leader.token("user", "alice"), leader.token("user", "bob")
    async with leader.http(bob) as http:
        bobs = (await http.post("/api/jobs", json=SPEC)).json()["id"]
    async with leader.http(alice) as http:
        first = (await http.post("/api/jobs", json=SPEC)).json()["id"]
        second = (await http.post("/api/jobs", json=SPEC)).json()["id"]
        for body in ({"where": "top"}, {"before": bobs}):
            refused = await http.post(f"/api/jobs/{first}/move", json=body)
            assert refused.status_code == 403, body
            assert f"would pass job {bobs} of bob" in one_line_error(refused)
        moved = await http.post(f"/api/jobs/{second}/move", json={"where": "up"})
        assert moved.status_code == 200, moved.text
        assert [v["id"] for v in moved.json()] == [bobs, second, first]
    async with leader.http() as http:  # admins move anything
        moved = await http.post(f"/api/jobs/{first}/move", json={"where": "top"})
        assert [v["id"] for v in moved.json()] == [first, bobs, second]


async def test_the_job_list_shows_every_change_at_once(leader: InProcessLeader) -> None:
    """The leader reuses the encoded list while nothing changed, never after a change."""
    async with leader.http() as http:
        first = await submit(http, name="one")
        listed = (await http.get("/api/jobs")).json()
        assert [job["name"] for job in listed] == ["one"]
        assert (await http.get("/api/jobs")).json() == listed  # unchanged: the same list
        second = await submit(http, name="two")
        assert [job["id"] for job in (await http.get("/api/jobs")).json()] == [
            first["id"],
            second["id"],
        ]
        paused = await http.post(
            "/api/jobs/actions", json={"action": "pause", "ids": [first["id"]]}
        )
        assert paused.status_code == 200
        states = {job["name"]: job["state"] for job in (await http.get("/api/jobs")).json()}
        assert states == {"one": "paused", "two": "queued"}
        moved = await http.post(f"/api/jobs/{second['id']}/move", json={"where": "top"})
        assert moved.status_code == 200
        assert [job["name"] for job in (await http.get("/api/jobs")).json()] == ["two", "one"]
        # The list kept for all readers: the list built from scratch.
        scheduler = leader.leader.scheduler
        assert leader.leader.job_list_json(False) == msgspec.json.encode(scheduler.job_views(False))


async def test_a_bug_in_a_request_is_one_500_and_one_traceback_in_the_log(
    leader: InProcessLeader, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Starlette raised the exception again after the 500 went out, and uvicorn logged
    its traceback a second time: each bad request, two (break round 27b)."""

    def bug(*args: object) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr("server.operations.list_tokens", bug)
    caplog.set_level("INFO")
    async with leader.http() as http:
        answer = await http.get("/api/tokens")
        assert answer.status_code == 500
        assert answer.json()["error"] == "leader error: RuntimeError (see the leader's log)"
        assert (await http.get("/healthz")).status_code == 200  # the next request is served
    tracebacks = [r for r in caplog.records if r.exc_info is not None]
    assert len(tracebacks) == 1, [r.getMessage() for r in tracebacks]
    assert tracebacks[0].getMessage() == "GET /api/tokens failed"
