"""``farm agent --render-user``: who renderers run as, and what is handed to them."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import msgspec
import pytest

from agent import chunk_delivery
from agent.errors import AgentError
from agent.render_user import RenderUser
from agent.staging import CopyToSyncRoot
from agent.supervisor import Storage, Supervisor
from farmtui.protocol import ChunkStarted
from tests.agent.conftest import Recorder, demo_assign, make_sync_root, poll_until

needs_root = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("setpriv") is None, reason="needs root and setpriv"
)
NOBODY = "nobody"


@needs_root
def test_a_renderer_runs_with_the_render_users_ids_and_groups_only() -> None:
    user = RenderUser.named(NOBODY)
    done = subprocess.run(
        user.command(["sh", "-c", "id -u; id -g; id -G"]), capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    uid, gid, groups = done.stdout.split("\n")[:3]
    entry = pwd.getpwnam(NOBODY)
    assert (int(uid), int(gid)) == (entry.pw_uid, entry.pw_gid)
    assert {int(g) for g in groups.split()} == set(os.getgrouplist(NOBODY, entry.pw_gid))
    env = {"HOME": "/root", "USER": "root"}
    user.environment(env)
    assert env == {"HOME": entry.pw_dir, "USER": NOBODY, "LOGNAME": NOBODY}


@needs_root
def test_a_user_that_is_not_there_or_is_root_is_refused_in_one_line() -> None:
    with pytest.raises(AgentError, match="no such user on this machine"):
        RenderUser.named("no-such-user-here")
    with pytest.raises(AgentError, match="is root: renderers would run as root"):
        RenderUser.named("0")
    assert RenderUser.named(str(pwd.getpwnam(NOBODY).pw_uid)).name == NOBODY


def test_an_agent_not_run_as_root_is_told_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(AgentError, match="needs the agent to run as root"):
        RenderUser.named(NOBODY)


@needs_root
def test_a_staging_folder_the_user_cannot_enter_is_named_at_start() -> None:
    user = RenderUser.named(NOBODY)
    # Not under pytest's tmp_path: its base folder is closed to others (0700).
    base = Path(tempfile.mkdtemp(prefix="farmtui-reach-"))
    try:
        shut = base / "shut"
        staging = shut / "staging"
        staging.mkdir(parents=True)
        os.chmod(base, 0o711)
        os.chmod(shut, 0o700)
        with pytest.raises(AgentError, match=f"cannot enter {shut}, on the way to --staging"):
            user.check_reaches(staging, "--staging")
        os.chmod(shut, 0o711)
        user.check_reaches(staging, "--staging")
    finally:
        shutil.rmtree(base)


@needs_root
def test_the_folders_handed_over_are_the_users_and_no_symlink_is_followed(
    tmp_path: Path,
) -> None:
    user = RenderUser.named(NOBODY)
    attempt = tmp_path / "0.1"
    outdir = attempt / "renders" / "shot"
    outdir.mkdir(parents=True)
    target = tmp_path / "roots-own"
    target.write_text("root's\n")
    (attempt / "link").symlink_to(target)
    user.hand_over(attempt, outdir, attempt / "link")
    for folder in (attempt, attempt / "renders", outdir):
        assert os.stat(folder).st_uid == user.uid, folder
    assert os.lstat(attempt / "link").st_uid == user.uid
    assert os.stat(target).st_uid == 0, "what the symlink points to stays root's"
    assert os.stat(tmp_path).st_uid == 0, "nothing above the attempt's folder is handed over"


@needs_root
async def test_with_one_slot_the_next_renderer_starts_once_the_last_ones_output_is_taken_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Break round 26e (N6): the slot went to the next chunk, of another job maybe, as
    soon as the tree was gone; its renderer (the same user) ran while the last one's
    frames were being taken back, and could change them."""
    base = Path(tempfile.mkdtemp(prefix="farmtui-slot-"))
    os.chmod(base, 0o711)
    taken_back: list[float] = []
    take_back_attempt = chunk_delivery.take_back_attempt

    def slow_take_back(*args: object) -> None:
        time.sleep(0.3)  # a big frame's copy: what the next renderer must not overlap
        take_back_attempt(*args)  # type: ignore[arg-type]
        taken_back.append(time.time())

    monkeypatch.setattr(chunk_delivery, "take_back_attempt", slow_take_back)
    root = make_sync_root(base / "sync")
    recorder = Recorder()
    supervisor = Supervisor(
        recorder,
        agent_id="slot-test",
        staging_root=base / "staging",
        storage=Storage(sync_root=root, delivery=CopyToSyncRoot(root)),
        slots=1,
        render_user=RenderUser.named(NOBODY),
    )
    write = 'echo frame > "$(echo "$1" | sed s/####/0001/)"'
    try:
        for job in ("first", "second"):
            assign = demo_assign([1], argv=["sh", "-c", write, "sh", "{output}"])
            supervisor.assign(msgspec.structs.replace(assign, job_id=job))
        await poll_until(lambda: len(taken_back) == 2, within=30.0, what="both taken back")
    finally:
        await supervisor.kill_all("the test is over")
        shutil.rmtree(base, ignore_errors=True)
    started = {m.job_id: m.started for m in recorder.of(ChunkStarted) if m.pid}
    assert started["second"] is not None
    assert started["second"] >= taken_back[0], "the second began before the first was taken back"
