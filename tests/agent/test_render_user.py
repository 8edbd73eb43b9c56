"""``farm agent --render-user``: who renderers run as, and what is handed to them."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from agent.errors import AgentError
from agent.render_user import RenderUser

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
