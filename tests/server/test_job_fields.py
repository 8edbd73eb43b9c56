"""One set of rules for a job's fields, whichever way the job arrives.

The same bad inputs go through every entry point against a real leader:
``farm submit`` flags, a TOML job file, ``POST /api/jobs``, ``PATCH
/api/jobs/{id}`` (checked on the job as it is, with the patch applied) and
``farm set``. Each is refused with the same words, and nothing changes: no job
is made, no spec is touched. (The console's settings dialog runs the same
check: ``tests/console/test_edit_settings.py``.)
"""

from __future__ import annotations

import asyncio
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest

from farmtui import cli
from farmtui.protocol import JobSpec
from server.store import Store
from tests.helpers.leader import InProcessLeader

GOOD: dict[str, Any] = {"name": "shot", "frames": "1-4", "argv": ["true"]}


@dataclass(frozen=True)
class Bad:
    """One bad input, written the way each entry point takes it, and the refusal."""

    flags: list[str]  # farm submit flags
    toml: str  # job file lines
    body: dict[str, Any]  # JSON fields of POST /api/jobs
    message: str  # the same words from every entry point
    key: str = ""  # the flag (without --) and job file key the refusal names


SUBMITTED: dict[str, Bad] = {
    "subframe": Bad(
        ["--frames", "1.5"],
        'frames = "1.5"',
        {"frames": "1.5"},
        "frame list '1.5' has a frame or step that is not a whole number (whole frames only)",
        "frames",
    ),
    "substep": Bad(
        ["--frames", "1-10x0.5"],
        'frames = "1-10x0.5"',
        {"frames": "1-10x0.5"},
        "frame list '1-10x0.5' has a frame or step that is not a whole number (whole frames only)",
        "frames",
    ),
    "max_render_zero": Bad(
        ["--timeout-max", "0"],
        "timeout-max = 0",
        {"timeouts": {"max_render": 0}},
        "the maximum render time must be more than 0 (leave it unset for no limit)",
        "timeout-max",
    ),
    "min_over_max": Bad(
        ["--timeout-min", "2m", "--timeout-max", "1m"],
        'timeout-min = "2m"\ntimeout-max = "1m"',
        {"timeouts": {"min_render": 120, "max_render": 60}},
        "the minimum render time (120s) is longer than the maximum render time (60s)",
        "timeout-min",
    ),
    "retry_delay_over_cap": Bad(
        ["--retry-delay", "10m", "--retry-cap", "1m"],
        'retry-delay = "10m"\nretry-cap = "1m"',
        {"retry_delay": 600, "retry_cap": 60},
        "the retry delay (600s) is longer than the retry cap (60s)",
        "retry-delay",
    ),
    "scout_outside": Bad(
        ["--scout", "9"],
        'scout = "9"',
        {"scout": "9"},
        "scout frame 9 is not in the frame list '1-4'",
        "scout",
    ),
    "scene_escapes": Bad(
        ["--scene", "../../etc/passwd"],
        'scene = "../../etc/passwd"',
        {"scene": "../../etc/passwd"},
        "scene '../../etc/passwd' escapes the sync root",
        "scene",
    ),
}


def farm(leader: InProcessLeader, command: str, *args: str) -> int:
    """``farm`` in this process, against the in-process leader, with its admin token."""
    # --token=T: a token may start with '-', which argparse would take for an option.
    return cli.main([command, "--leader", leader.url, f"--token={leader.admin_token}", *args])


async def run_farm(leader: InProcessLeader, *argv: str) -> int:
    # The CLI is synchronous; the leader serves on this event loop meanwhile.
    return await asyncio.to_thread(farm, leader, *argv)


@pytest.fixture(autouse=True)
def _no_user_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    for name in ("FARM_LEADER", "FARM_TOKEN", "FARM_TOKEN_FILE"):
        monkeypatch.delenv(name, raising=False)


def job_count(leader: InProcessLeader) -> int:
    return len(leader.leader.scheduler.jobs)


def stderr_line(capsys: pytest.CaptureFixture[str]) -> str:
    out, err = capsys.readouterr()
    assert out == ""
    assert err.count("\n") == 1, err
    return err.rstrip("\n")


async def post(leader: InProcessLeader, body: dict[str, Any]) -> httpx.Response:
    async with leader.http() as http:
        return await http.post("/api/jobs", json=body)


async def patch(leader: InProcessLeader, job_id: str, body: dict[str, Any]) -> httpx.Response:
    async with leader.http() as http:
        return await http.patch(f"/api/jobs/{job_id}", json=body)


def error_of(response: httpx.Response) -> str:
    assert 400 <= response.status_code < 500, response.text
    body = response.json()
    assert set(body) == {"error"}
    message: str = body["error"]
    assert "\n" not in message
    return message


# --- submission: flags, job file, POST --------------------------------------------------


@pytest.mark.parametrize("case", SUBMITTED.values(), ids=SUBMITTED.keys())
async def test_a_bad_submission_is_refused_the_same_way_everywhere(
    leader: InProcessLeader, case: Bad, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # farm submit flags: refused before anything is sent (exit 2).
    assert await run_farm(leader, "submit", "--frames", "1-4", *case.flags, "--", "true") == 2
    assert stderr_line(capsys) == f"farm submit: --{case.key}: {case.message}"
    # A job file: the same, naming the key.
    path = tmp_path / "job.toml"
    frames = "" if case.key == "frames" else 'frames = "1-4"\n'
    path.write_text(f'{frames}argv = ["true"]\n{case.toml}\n', encoding="utf-8")
    assert await run_farm(leader, "submit", str(path)) == 2
    assert stderr_line(capsys) == f"farm submit: job file {path}: {case.key}: {case.message}"
    # POST /api/jobs: the same words from the leader.
    response = await post(leader, {**GOOD, **case.body})
    assert response.status_code == 400
    assert error_of(response) == case.message
    assert job_count(leader) == 0


async def test_a_scene_outside_the_sync_root_is_refused_by_the_leader(
    leader: InProcessLeader, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    outside = tmp_path / "elsewhere" / "shot.blend"
    outside.parent.mkdir()
    outside.write_bytes(b"BLENDER")
    message = f"scene {str(outside)!r} is outside the sync root"
    # The CLI cannot know the leader's sync root: the leader refuses it (exit 1).
    assert await run_farm(leader, "submit", "--scene", str(outside), "--", "true") == 1
    assert stderr_line(capsys) == f"farm submit: {message}"
    job = tmp_path / "job.toml"
    job.write_text(f'scene = "{outside}"\nargv = ["true"]\n', encoding="utf-8")
    assert await run_farm(leader, "submit", str(job)) == 1
    assert stderr_line(capsys) == f"farm submit: {message}"
    assert error_of(await post(leader, {**GOOD, "scene": str(outside)})) == message
    # A symlink inside the root that leads out of it is outside too.
    leader.root.mkdir(parents=True, exist_ok=True)
    (leader.root / "link").symlink_to(outside.parent)
    refused = await post(leader, {**GOOD, "scene": "link/shot.blend"})
    assert error_of(refused) == "scene 'link/shot.blend' is outside the sync root"
    assert job_count(leader) == 0


async def test_scenes_inside_the_sync_root_are_accepted(leader: InProcessLeader) -> None:
    inside = leader.root / "projects" / "shot.blend"
    for scene in ("projects/shot.blend", str(inside)):
        response = await post(leader, {**GOOD, "scene": scene})
        assert response.status_code == 201, response.text
        assert response.json()["spec"]["scene"] == scene


async def test_an_unknown_key_is_refused_by_name(
    leader: InProcessLeader, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    response = await post(leader, {**GOOD, "prority": 10})
    assert response.status_code in (400, 422)
    assert error_of(response) == "prority: unknown field (did you mean 'priority'?)"
    nested = await post(leader, {**GOOD, "timeouts": {"max_rendr": 10}})
    assert error_of(nested) == "timeouts.max_rendr: unknown field (did you mean 'max_render'?)"
    path = tmp_path / "job.toml"
    path.write_text('prority = 10\nargv = ["true"]\n', encoding="utf-8")
    assert await run_farm(leader, "submit", str(path)) == 2
    assert stderr_line(capsys) == (
        f"farm submit: job file {path}: prority: unknown key (did you mean 'priority'?)"
    )
    with pytest.raises(SystemExit) as usage:
        await run_farm(leader, "submit", "--prority", "10", "--", "true")
    assert usage.value.code == 2
    assert "unrecognized arguments: --prority" in stderr_line(capsys)
    assert job_count(leader) == 0


@pytest.mark.parametrize("name", ["shot\x1b[2J", "two\nlines", "tab\there", "del\x7f", "c1\x9b"])
async def test_a_name_with_control_characters_is_refused(
    leader: InProcessLeader, name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rule = "must be printable text (no tab, newline or escape), at most 200 characters"
    assert await run_farm(leader, "submit", "--name", name, "--", "true") == 2
    assert stderr_line(capsys) == f"farm submit: --name: {rule}"
    path = tmp_path / "job.toml"
    escaped = "".join(c if c.isprintable() else f"\\u{ord(c):04x}" for c in name)
    path.write_text(f'name = "{escaped}"\nargv = ["true"]\n', "utf-8")
    assert await run_farm(leader, "submit", str(path)) == 2
    assert stderr_line(capsys) == f"farm submit: job file {path}: name: {rule}"
    refused = error_of(await post(leader, {**GOOD, "name": name}))
    assert refused == f"name: {rule}"  # the same words as the CLI and the job file
    assert job_count(leader) == 0


async def test_a_name_of_printable_text_up_to_the_limit_is_accepted(
    leader: InProcessLeader,
) -> None:
    for name in ("shot 010 — é ☃", "n" * 200):
        response = await post(leader, {**GOOD, "name": name})
        assert response.status_code == 201, response.text
    too_long = error_of(await post(leader, {**GOOD, "name": "n" * 201}))
    assert too_long == "name: must have at most 200 characters"


# --- changes to a submitted job: PATCH and `farm set` --------------------------------------


async def submitted(leader: InProcessLeader) -> tuple[str, JobSpec]:
    """A job with a maximum render time of 60 s and a retry cap of 60 s."""
    response = await post(
        leader, {**GOOD, "timeouts": {"max_render": 60, "on_timeout": "requeue"}, "retry_cap": 60}
    )
    assert response.status_code == 201, response.text
    job_id: str = response.json()["id"]
    return job_id, leader.leader.scheduler.jobs[job_id].spec


@dataclass(frozen=True)
class BadChange:
    flags: list[str]  # farm set flags
    body: dict[str, Any]  # PATCH body, laid over the job's current settings
    message: str
    key: str


CHANGED: dict[str, BadChange] = {
    # The patch gives only the minimum: it is checked against the job's maximum.
    "min_over_existing_max": BadChange(
        ["--timeout-min", "2m"],
        {"timeouts": {"min_render": 120}},
        "the minimum render time (120s) is longer than the maximum render time (60s)",
        "timeout-min",
    ),
    "max_render_zero": BadChange(
        ["--timeout-max", "0"],
        {"timeouts": {"max_render": 0}},
        "the maximum render time must be more than 0 (leave it unset for no limit)",
        "timeout-max",
    ),
    "max_start_zero": BadChange(
        ["--timeout-start", "0"],
        {"timeouts": {"max_start": 0}},
        "the maximum start time must be more than 0 (leave it unset for no limit)",
        "timeout-start",
    ),
    # Only the delay: checked against the job's existing cap.
    "retry_delay_over_existing_cap": BadChange(
        ["--retry-delay", "2m"],
        {"retry_delay": 120},
        "the retry delay (120s) is longer than the retry cap (60s)",
        "retry-delay",
    ),
}


def patch_body(spec: JobSpec, change: dict[str, Any]) -> dict[str, Any]:
    """A PATCH body as a client sends it: a patch replaces the timeouts whole, so a client
    sends the job's current ones with its changes (as `farm set` and the console do)."""
    body = dict(change)
    if "timeouts" in change:
        body["timeouts"] = {**msgspec.to_builtins(spec.timeouts), **change["timeouts"]}
    return body


@pytest.mark.parametrize("case", CHANGED.values(), ids=CHANGED.keys())
async def test_a_bad_change_is_refused_the_same_way_everywhere(
    leader: InProcessLeader, case: BadChange, capsys: pytest.CaptureFixture[str]
) -> None:
    job_id, before = await submitted(leader)
    response = await patch(leader, job_id, patch_body(before, case.body))
    assert response.status_code == 400
    assert error_of(response) == case.message
    assert await run_farm(leader, "set", job_id, *case.flags) == 2
    assert stderr_line(capsys) == f"farm set: --{case.key}: {case.message}"
    assert leader.leader.scheduler.jobs[job_id].spec == before


async def test_a_list_over_its_limit_is_refused_in_the_same_words_however_long(
    leader: InProcessLeader,
) -> None:
    """A megabyte of one-letter tags is counted before any of them is checked (checked
    one by one, they held the leader's loop 80 ms), and refused as 65 of them are."""
    job_id, before = await submitted(leader)
    for many in (65, 250_000):
        for field in ("tags", "limits"):
            response = await post(leader, {**GOOD, field: ["t"] * many})
            assert (
                error_of(response)
                == f"{field}: must have at most {64 if field == 'tags' else 32} items"
            )
        response = await patch(leader, job_id, {"tags": ["t"] * many})
        assert error_of(response) == "tags: must have at most 64 items"
        # The key twice, the long list first: counted too, as the typed decode reads both.
        twice = msgspec.json.encode({**GOOD, "tags": ["t"] * many})[:-1] + b',"tags":[]}'
        async with leader.http() as http:
            response = await http.post(
                "/api/jobs", content=twice, headers={"Content-Type": "application/json"}
            )
        assert error_of(response) == "tags: must have at most 64 items"
    assert job_count(leader) == 1
    assert leader.leader.scheduler.jobs[job_id].spec == before


async def test_patch_refuses_bad_names_and_unknown_keys(leader: InProcessLeader) -> None:
    job_id, before = await submitted(leader)
    for body, words in (
        ({"name": "a\x1bb"}, "name: must be printable text"),
        ({"retires": 3}, "retires: unknown field (did you mean 'retries'?)"),
        ({"timeouts": {"max_render": 60, "min_rendr": 1}}, "timeouts.min_rendr: unknown field"),
        ({"max_running": -1}, "max_running: -1 is out of range"),
    ):
        assert words in error_of(await patch(leader, job_id, body))
    assert leader.leader.scheduler.jobs[job_id].spec == before


async def test_good_changes_still_go_through(
    leader: InProcessLeader, capsys: pytest.CaptureFixture[str]
) -> None:
    job_id, _ = await submitted(leader)
    assert await run_farm(leader, "set", job_id, "--timeout-min", "30s", "--retry-delay", "5") == 0
    spec = leader.leader.scheduler.jobs[job_id].spec
    assert (spec.timeouts.min_render, spec.timeouts.max_render) == (30.0, 60.0)
    assert spec.timeouts.on_timeout == "requeue"  # kept: `farm set` merges into the timeouts
    assert spec.retry_delay == 5.0
    assert await run_farm(leader, "set", job_id, "--timeout-max", "none") == 0
    assert leader.leader.scheduler.jobs[job_id].spec.timeouts.max_render is None
    capsys.readouterr()


# --- what an older leader stored ------------------------------------------------------------


async def test_jobs_stored_before_these_limits_still_load(leader: InProcessLeader) -> None:
    job_id, _ = await submitted(leader)
    store = leader.leader.store
    row = msgspec.json.decode(
        store.db.execute("SELECT data FROM jobs WHERE id = ?", (job_id,)).fetchone()[0]
    )
    # What an older leader let through: a name with an escape, a field since removed.
    row["spec"]["name"] = "old\x1bname"
    row["spec"]["colour"] = "blue"
    row["spec"]["timeouts"]["auto_min_percent"] = 0
    path = store.path
    db = sqlite3.connect(path)
    with db:
        db.execute(
            "UPDATE jobs SET data = ? WHERE id = ?", (msgspec.json.encode(row).decode(), job_id)
        )
    db.close()
    jobs, _ = Store(path).load()
    (job,) = [j for j in jobs if j.id == job_id]
    assert job.spec.name == "oldname"
    assert job.spec.timeouts.auto_min_percent is None
    assert job.spec.timeouts.max_render == 60.0  # the rest is kept
    assert len(job.chunks) == 4
