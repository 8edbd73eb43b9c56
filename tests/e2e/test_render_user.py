"""A job's renderer cannot take the agent's token (break round 26, finding F1).

A plain user's job read the agent's token file (named in the agent's command
line, readable by the renderer running as the agent's user) and with it
replaced another user's frame through the agent's upload endpoint. With
``farm agent --render-user``, the agent (root) runs every renderer as an
unprivileged user: the token file is out of its reach, and what it leaves as
output is delivered only if it is a regular file of that user's.
"""

from __future__ import annotations

import os
import pwd
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from farmtui.localfarm import LocalFarm, free_port
from tests.e2e.e2e_support import submit, wait_job
from tests.helpers.farm import LiveLeader

RENDER_USER = "nobody"

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("setpriv") is None,
    reason="--render-user needs root and setpriv",
)

# Plain sh: the renderer runs as nobody, who may not reach this Python (under /root).
FRAME = '"$(echo "$1" | sed s/####/0001/)"'
SPY = f'out={FRAME}; id -u > "$out"; cat "$2" >> "$out" 2>&1; true'
LINK = f'ln -s "$2" {FRAME}'


@pytest.fixture
def passable_staging() -> Iterator[Path]:
    """A staging folder the render user can pass through (pytest's tmp_path is 0700)."""
    folder = Path(tempfile.mkdtemp(prefix="farmtui-render-user-"))
    folder.chmod(0o711)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def test_a_renderer_run_as_the_render_user_cannot_read_the_agents_token(
    farm_leader: LiveLeader, passable_staging: Path, tmp_path: Path
) -> None:
    farm = farm_leader.farm
    extra = ["--staging", str(passable_staging), "--render-user", RENDER_USER]
    child = farm.start_agent(1, 1, name="isolated", extra=extra)
    farm.wait_nodes_online([child.name])
    token = farm.agent_token_file.read_text().strip()
    spy = submit(
        farm_leader, "--name", "spy", "--frames", "1", "--retries", "0",
        "--output", "renders/spy/f_####.txt",
        "--", "sh", "-c", SPY, "sh", "{output}", str(farm.agent_token_file),
    )  # fmt: skip
    secret = tmp_path / "secret.txt"
    secret.write_text("only root reads this\n")
    secret.chmod(0o600)
    leak = submit(
        farm_leader, "--name", "leak", "--frames", "1", "--retries", "0",
        "--output", "renders/leak/f_####.txt",
        "--", "sh", "-c", LINK, "sh", "{output}", str(secret),
    )  # fmt: skip
    hidden = tmp_path / "root-only"
    hidden.mkdir(mode=0o700)
    (hidden / "f_0001.txt").write_text("only root reads this\n")
    swap = submit(
        farm_leader, "--name", "swap", "--frames", "1", "--retries", "0",
        "--output", "renders/swap/f_####.txt",
        "--", "sh", "-c", 'rm -rf "$1" && ln -s "$2" "$1"', "sh", "{outdir}", str(hidden),
    )  # fmt: skip
    with farm_leader.client() as client:
        spied = wait_job(client, spy, ("done", "failed"))
        leaked = wait_job(client, leak, ("done", "failed"))
        swapped = wait_job(client, swap, ("done", "failed"))

    assert spied.job.state == "done", [c.attempts for c in spied.chunks]
    written = (farm_leader.root / "renders/spy/f_0001.txt").read_text()
    assert written.splitlines()[0] == str(pwd.getpwnam(RENDER_USER).pw_uid), written
    assert "Permission denied" in written, written
    assert token not in written

    # Its output a symlink to a file only root reads: never copied by the agent (root).
    assert leaked.job.state == "failed"
    (attempt,) = leaked.chunks[0].attempts
    assert "symlink; refused" in attempt.reason, attempt
    assert not (farm_leader.root / "renders/leak/f_0001.txt").exists()
    # Its output folder a symlink to a root-only folder (break round 26c, N1): not read.
    assert swapped.job.state == "failed"
    (attempt,) = swapped.chunks[0].attempts
    assert "swap on its way is a symlink" in attempt.reason, attempt
    assert not (farm_leader.root / "renders/swap").exists()
    assert not any(
        "only root reads this" in path.read_text(errors="replace")
        for path in farm_leader.root.rglob("*")
        if path.is_file() and not path.is_symlink()
    )


def test_with_staging_off_the_render_users_frames_land_through_its_own_folder(
    passable_staging: Path, tmp_path: Path
) -> None:
    """The attempt's folder in the output folder is the render user's while it renders,
    the agent's again before its frames are renamed into place."""
    # A sync root the render user can reach (pytest's tmp_path is closed to others).
    farm = LocalFarm(tmp_path / "data", passable_staging / "root", port=free_port())
    try:
        farm.start_leader()
        leader = LiveLeader(farm, tmp_path / "config")
        extra = ["--staging", str(passable_staging / "staging"), "--render-user", RENDER_USER]
        child = farm.start_agent(1, 1, name="isolated", extra=extra)
        farm.wait_nodes_online([child.name])
        job = submit(
            leader, "--name", "off", "--frames", "1-2", "--chunk", "1", "--no-staging",
            "--retries", "0", "--output", "renders/off/f_####.txt",
            "--", "sh", "-c", 'id -u > "$(echo "$1" | sed "s/####/$(printf %04d "$2")/")"',
            "sh", "{output}", "{start}",
        )  # fmt: skip
        with leader.client() as client:
            detail = wait_job(client, job, ("done", "failed"))
        assert detail.job.state == "done", [c.attempts for c in detail.chunks]
        uid = str(pwd.getpwnam(RENDER_USER).pw_uid)
        for frame in ("0001", "0002"):
            landed = farm.root / f"renders/off/f_{frame}.txt"
            assert landed.read_text().strip() == uid
            assert landed.stat().st_uid == 0, "taken back before it was renamed into place"
        assert sorted(p.name for p in (farm.root / "renders/off").iterdir()) == [
            "f_0001.txt",
            "f_0002.txt",
        ]
    finally:
        farm.stop(grace=5.0)
