"""Jobs cannot touch each other (issue 9, item 2), with a real leader, agent and renderers.

A user's renderer plants a symlink where another job's chunk log will go;
the other job still renders to the end, its log is written, and the file the
symlink pointed at is untouched. And a renderer's working folder is its
attempt's own, on the node, not the sync root.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from tests.e2e.e2e_support import submit, wait_job, wait_until
from tests.helpers.farm import AgentFactory, LiveLeader

PRECIOUS = "another user's file\n"

# Waits for the victim's id (the test learns it only after submitting the
# victim, which waits for this job), then plants the symlink from inside the
# sync root it reaches through FARMTUI_SYNC_ROOT.
PLANT = """
import os, sys, time
root = os.environ["FARMTUI_SYNC_ROOT"]
told = os.path.join(root, "victim-id.txt")
deadline = time.monotonic() + 30
while not os.path.exists(told):
    if time.monotonic() > deadline:
        sys.exit("never told the victim's id")
    time.sleep(0.05)
victim = open(told).read().strip()
folder = os.path.join(root, "jobs", victim)
os.makedirs(folder, exist_ok=True)
os.symlink(sys.argv[1], os.path.join(folder, "chunk-0000.attempt-1.log"))
print("planted in", folder)
"""

PROBE = (
    "import json, os; open('junk.txt', 'w').write('x'); "
    "print('PROBE ' + json.dumps({'cwd': os.getcwd()}))"
)


def complete_log(log: Path) -> str:
    """An attempt's log once the leader's writer thread wrote its end (it lags the job's state)."""
    return wait_until(
        lambda: text if "\n# finished: " in (text := log.read_text()) else "",
        what=f"{log.name} to be written to its end",
    )


def test_a_symlink_planted_by_another_job_does_not_wedge_its_victim(
    farm_leader: LiveLeader, farm_agents: AgentFactory, tmp_path: Path
) -> None:
    farm_agents(1, slots=1)
    precious = tmp_path / "precious.txt"
    precious.write_text(PRECIOUS)
    attacker = submit(
        farm_leader, "--name", "attacker", "--frames", "1", "--retries", "0",
        "--", sys.executable, "-c", PLANT, str(precious),
    )  # fmt: skip
    victim = submit(
        farm_leader, "--name", "victim", "--frames", "1", "--after", attacker,
        "--output", "renders/victim/f_####.png",
        "--", sys.executable, "-c",
        "import sys; open(sys.argv[1].replace('####', '0001'), 'wb').write(b'frame')",
        "{output}",
    )  # fmt: skip
    (farm_leader.root / "victim-id.txt").write_text(victim)

    with farm_leader.client() as client:
        assert wait_job(client, attacker, ("done", "failed")).job.state == "done"
        detail = wait_job(client, victim, ("done", "failed"))
    assert detail.job.state == "done", [c.attempts for c in detail.chunks]
    attack_log = farm_leader.root / "jobs" / attacker / "chunk-0000.attempt-1.log"
    assert "planted in" in attack_log.read_text(), "the symlink was there before the victim ran"
    assert precious.read_text() == PRECIOUS
    log = farm_leader.root / "jobs" / victim / "chunk-0000.attempt-1.log"
    assert not log.is_symlink()
    assert "# outcome: done" in complete_log(log)
    assert (farm_leader.root / "renders/victim/f_0001.png").read_bytes() == b"frame"


def test_a_renderer_runs_in_its_attempts_folder_on_the_node(
    farm_leader: LiveLeader, farm_agents: AgentFactory
) -> None:
    farm_agents(1, slots=1)
    job_id = submit(farm_leader, "--frames", "1", "--", sys.executable, "-c", PROBE)
    with farm_leader.client() as client:
        assert wait_job(client, job_id, ("done", "failed")).job.state == "done"
    log = farm_leader.root / "jobs" / job_id / "chunk-0000.attempt-1.log"
    text = complete_log(log)
    lines = [s for s in text.splitlines() if s.startswith("PROBE ")]
    assert len(lines) == 1, text
    (line,) = lines
    cwd = Path(json.loads(line.removeprefix("PROBE "))["cwd"])
    staging = farm_leader.data / "staging" / "agent1"
    assert cwd == staging / job_id / "0.1"
    # The agent removes it once the attempt's report is sent.
    wait_until(lambda: not cwd.exists(), what="the attempt's folder to go when the attempt ends")
    assert not list(farm_leader.root.rglob("junk.txt")), "nothing lands in the sync root"
