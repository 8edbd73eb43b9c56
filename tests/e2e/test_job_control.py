"""Issue B end to end: job control with a real leader, real agents and real renderers.

Cancel kills whole process trees (detached helpers too) on every node, pause is
gentle, dispatch follows priority then queue order, roles are enforced, and
every job and chunk action has the effect a wrangler would look for.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import psutil

from tests.e2e.e2e_support import (
    demo,
    farm,
    farm_json,
    farm_ok,
    is_png,
    one_line_error,
    pid_gone,
    render_chunks,
    submit,
    wait_job,
    wait_until,
)
from tests.helpers.farm import AgentFactory, LiveLeader

# A renderer that builds a process tree and renders nothing until it is killed:
# itself, 2 children with 2 grandchildren each, and a helper that double-forks
# and calls setsid (like After Effects' AfterFX) with a child of its own: 9
# processes, each writing its pid to a file. Every process ends in `sleep`
# (exec keeps the pid), so the tree costs no Python interpreters.
# With the quick-run flag file present it exits 0 at once.
TREE_RENDERER = r"""
import os
import sys

pids, quick = sys.argv[1], sys.argv[2]
if os.path.exists(quick):
    print("quick run", flush=True)
    sys.exit(0)
os.makedirs(pids, exist_ok=True)


def record(role):
    path = os.path.join(pids, role)
    with open(path + ".tmp", "w") as handle:
        handle.write(str(os.getpid()))
    os.replace(path + ".tmp", path)


def park():
    os.execvp("sleep", ["sleep", "300"])


def spawn(body):
    pid = os.fork()
    if pid == 0:
        try:
            body()
        finally:
            os._exit(0)
    return pid


def leaf(role):
    record(role)
    park()


def child(role):
    record(role)
    for i in range(2):
        spawn(lambda i=i: leaf(f"{role}.grandchild{i}"))
    park()


def detached_helper():
    os.setsid()
    if os.fork() != 0:
        os._exit(0)
    record("helper")
    spawn(lambda: leaf("helper.child"))
    park()


record("renderer")
for i in range(2):
    spawn(lambda i=i: child(f"child{i}"))
spawn(detached_helper)
print("tree started", flush=True)
park()
"""
TREE_SIZE = 9

# Waits for a gate file, then renders like the demo renderer (real PNGs).
GATED_RENDERER = r"""
import os
import sys
import time

gate = sys.argv[1]
print(f"waiting for {gate}", flush=True)
while not os.path.exists(gate):
    time.sleep(0.01)
from farmtui.demo_render import main

sys.exit(main(sys.argv[2:]))
"""


def gated(tmp_path: Path, gate: Path) -> tuple[str, ...]:
    script = tmp_path / "gated.py"
    script.write_text(GATED_RENDERER, encoding="utf-8")
    return (
        "--renderer", "demo", "--", sys.executable, str(script), str(gate),
        "--frames", "{frames}", "--output", "{output}", "--seconds-per-frame", "0",
    )  # fmt: skip


def test_cancel_kills_every_process_tree_on_every_node_and_requeue_renders_again(
    farm_leader: LiveLeader, farm_agents: AgentFactory, tmp_path: Path
) -> None:
    farm_agents(2, slots=1)
    script = tmp_path / "tree.py"
    script.write_text(TREE_RENDERER, encoding="utf-8")
    pids, quick = tmp_path / "pids", tmp_path / "quick-run"
    job_id = submit(
        farm_leader, "--name", "trees", "--frames", "1-2", "--chunk", "1",
        "--", sys.executable, str(script), f"{pids}/{{start}}", str(quick),
    )  # fmt: skip

    def all_recorded() -> bool:
        return all(
            len([p for p in (pids / str(f)).glob("*") if p.suffix != ".tmp"]) == TREE_SIZE
            for f in (1, 2)
        )

    wait_until(all_recorded, what="both chunks' process trees to start")
    trees = {
        frame: {p.name: int(p.read_text()) for p in (pids / str(frame)).iterdir()}
        for frame in (1, 2)
    }
    everyone = [pid for tree in trees.values() for pid in tree.values()]
    assert len(set(everyone)) == 2 * TREE_SIZE
    assert not any(pid_gone(pid) for pid in everyone)
    for tree in trees.values():  # the helper really left the renderer's session
        assert os.getsid(tree["helper"]) != os.getsid(tree["renderer"])
        descendants = psutil.Process(tree["renderer"]).children(recursive=True)
        assert tree["helper"] not in [p.pid for p in descendants]
    with farm_leader.client() as client:
        nodes = {chunk.node for chunk in client.show(job_id).chunks}
    assert len(nodes) == 2  # one tree on each node

    done = farm(farm_leader, "cancel", job_id, "--yes", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["jobs"][0]["state"] == "cancelled"
    wait_until(
        lambda: all(pid_gone(pid) for pid in everyone),
        timeout=10,
        what="every process of both trees to die",
    )

    detail = farm_json(farm_leader, "show", job_id)
    assert detail["job"]["state"] == "cancelled"
    assert [chunk["state"] for chunk in detail["chunks"]] == ["cancelled", "cancelled"]
    assert [chunk["attempts"][-1]["outcome"] for chunk in detail["chunks"]] == ["killed"] * 2

    quick.touch()
    farm_ok(farm_leader, "requeue", job_id)
    with farm_leader.client() as client:
        detail_after = wait_job(client, job_id, ("done", "failed"))
    assert detail_after.job.state == "done"
    for chunk in detail_after.chunks:
        assert [a.number for a in chunk.attempts] == [1, 2]
        assert [a.outcome for a in chunk.attempts] == ["killed", "done"]


def test_pause_lets_the_running_chunk_finish_and_starts_nothing_new(
    farm_leader: LiveLeader, farm_agents: AgentFactory, tmp_path: Path
) -> None:
    (agent,) = farm_agents(1, slots=1)
    gate = tmp_path / "gate"
    job_id = submit(
        farm_leader, "--frames", "1-4", "--chunk", "2", "--output", "renders/p/f_####.png",
        *gated(tmp_path, gate),
    )  # fmt: skip
    with farm_leader.client() as client:
        wait_until(lambda: client.show(job_id).chunks[0].state == "assigned", what="chunk 0")

        paused = farm_json(farm_leader, "pause", job_id)
        assert paused["jobs"][0]["state"] == "paused"
        gate.touch()  # let the running chunk finish

        def first_done() -> bool:
            return client.show(job_id).chunks[0].state == "done"

        wait_until(first_done, what="the running chunk to finish")
        # Dispatch runs in the same step that records the finished chunk: nothing started.
        detail = client.show(job_id)
        assert detail.job.state == "paused"
        assert [c.state for c in detail.chunks] == ["done", "queued"]
        assert detail.chunks[1].attempts == []
        assert [n.running for n in client.nodes() if n.name == agent.name] == [[]]
        assert (farm_leader.root / "renders/p/f_0002.png").is_file()
        assert not (farm_leader.root / "renders/p/f_0003.png").exists()

        farm_ok(farm_leader, "resume", job_id)
        detail = wait_job(client, job_id, ("done", "failed"))
    assert detail.job.state == "done"
    assert set(detail.frame_states.values()) == {"done"}
    assert [len(c.attempts) for c in detail.chunks] == [1, 1]
    assert all(is_png(farm_leader.root / f"renders/p/f_{n:04d}.png") for n in range(1, 5))


def test_dispatch_order_priority_then_queue_with_moves_and_live_priority(
    farm_leader: LiveLeader, farm_agents: AgentFactory, tmp_path: Path
) -> None:
    farm_agents(1, slots=1)
    gate = tmp_path / "gate"
    blocker = submit(
        farm_leader, "--name", "blocker", "--output", "renders/b/f_####.png",
        *gated(tmp_path, gate),
    )  # fmt: skip
    with farm_leader.client() as client:
        wait_until(lambda: client.show(blocker).chunks[0].state == "assigned", what="blocker")

    # One command for all four: the same kind of work, so once one is done short the
    # others wait ahead of the slot (``server.prefetch``), and still start in order.
    ran = tmp_path / "ran"
    record = f'echo "$FARMTUI_CHUNK" >> {ran}'

    def quick(name: str, priority: int) -> str:
        return submit(
            farm_leader, "--name", name, "--priority", str(priority), "--", "sh", "-c", record
        )

    a60, b10, c10, d50 = quick("a60", 60), quick("b10", 10), quick("c10", 10), quick("d50", 50)

    group = farm_json(farm_leader, "move", c10, "top")
    assert [job["id"] for job in group] == [c10, b10]

    refused = farm(farm_leader, "move", d50, "--before", b10)
    assert refused.returncode == 1
    assert "priority always wins" in one_line_error(refused)

    changed = farm_json(farm_leader, "priority", a60, "10")
    assert changed["priority"] == 10

    listed = [job["id"] for job in farm_json(farm_leader, "jobs")]
    # Priority 10 first (a60 joined the end of its new group), then 50 in queue order.
    assert listed == [c10, b10, a60, blocker, d50]

    with farm_leader.client() as client:
        detail = client.show(blocker)  # never pre-empted by the priority-10 jobs
        assert detail.chunks[0].state == "assigned"
        assert [c.chunks[0].state for c in map(client.show, (a60, b10, c10, d50))] == ["queued"] * 4
        gate.touch()
        for job_id in (a60, b10, c10, d50, blocker):
            assert wait_job(client, job_id, ("done", "failed")).job.state == "done"
        (attempt,) = client.show(blocker).chunks[0].attempts
        assert attempt.outcome == "done"
        blocker_finished = attempt.finished
    assert blocker_finished is not None

    # In the order their renderers started on the node (its one slot runs one at a time).
    order = [line.split(":")[0] for line in ran.read_text().splitlines()]
    assert order == [c10, b10, a60, d50]
    with farm_leader.client() as client:
        first = client.show(c10).chunks[0].attempts[0].started
    assert first >= blocker_finished


def test_roles_are_enforced_through_the_cli(farm_leader: LiveLeader) -> None:
    made = farm_json(farm_leader, "token", "create", "--role", "user", "--name", "alice")
    assert made["role"] == "user"
    alice = made["token"]
    with farm_leader.client() as admin:
        bob = admin.create_token("user", "bob").token
        viewer = admin.create_token("viewer", "eve").token
    job_id = submit(farm_leader, "--name", "alices", "--tags", "nowhere", "--", "true", token=alice)

    def state() -> tuple[str, int, str]:
        with farm_leader.client(viewer) as client:
            job = client.show(job_id).job
        return job.state, job.priority, job.owner

    assert state() == ("queued", 50, "alice")

    refused = farm(farm_leader, "priority", job_id, "10", token=alice)
    assert refused.returncode == 1
    assert "only admins may change priority" in one_line_error(refused)

    for action in (("pause", job_id), ("cancel", job_id, "--yes"), ("priority", job_id, "5")):
        refused = farm(farm_leader, *action, token=viewer)
        assert refused.returncode == 1
        assert "not allowed" in one_line_error(refused)
    refused = farm(farm_leader, "submit", "--", "true", token=viewer)
    assert "not allowed" in one_line_error(refused)

    refused = farm(farm_leader, "cancel", job_id, "--yes", token=bob)
    assert refused.returncode == 1
    assert "belongs to alice" in one_line_error(refused)
    assert state() == ("queued", 50, "alice")

    # The owner may control her own job; an admin may do anything.
    assert farm_json(farm_leader, "pause", job_id, token=alice)["jobs"][0]["state"] == "paused"
    assert farm_json(farm_leader, "priority", job_id, "10")["priority"] == 10
    cancelled = farm_json(farm_leader, "cancel", job_id, "--yes")
    assert cancelled["jobs"][0]["state"] == "cancelled"
    assert state() == ("cancelled", 10, "alice")


def test_scout_frames_render_first_then_the_job_holds_until_unheld(
    farm_leader: LiveLeader, farm_agents: AgentFactory
) -> None:
    farm_agents(1, slots=2)
    job_id = submit(
        farm_leader, "--frames", "1-6", "--chunk", "2", "--scout", "1,5",
        "--output", "renders/s/f_####.png", *demo(0.01),
    )  # fmt: skip
    out = farm_leader.root / "renders/s"
    with farm_leader.client() as client:
        detail = wait_job(client, job_id, "holding")
        assert detail.frame_states == {
            "1": "done", "2": "unassigned", "3": "unassigned",
            "4": "unassigned", "5": "done", "6": "unassigned",
        }  # fmt: skip
        assert sorted(p.name for p in out.iterdir()) == ["f_0001.png", "f_0005.png"]

        farm_ok(farm_leader, "unhold", job_id)
        detail = wait_job(client, job_id, ("done", "failed"))
    assert detail.job.state == "done"
    assert sorted(p.name for p in out.iterdir()) == [f"f_{n:04d}.png" for n in range(1, 7)]
    scout, *rest = render_chunks(detail)
    assert scout.frames == [1, 5]
    assert all(scout.finished is not None and scout.finished <= c.started for c in rest)


def test_after_waits_for_the_other_job(farm_leader: LiveLeader, farm_agents: AgentFactory) -> None:
    farm_agents(1, slots=1)
    first = submit(
        farm_leader, "--name", "first", "--frames", "1-3", "--chunk", "1",
        "--output", "renders/first/f_####.png", *demo(0.05),
    )  # fmt: skip
    # Priority 10 would render before `first`'s later chunks, were it not waiting.
    second = submit(
        farm_leader, "--name", "second", "--priority", "10", "--after", "first",
        "--output", "renders/second/f_####.png", *demo(0.01),
    )  # fmt: skip
    with farm_leader.client() as client:
        assert client.show(second).job.spec.after == [first]
        done_second = wait_job(client, second, ("done", "failed"))
        done_first = client.show(first)
    assert (done_first.job.state, done_second.job.state) == ("done", "done")
    last_of_first = max(c.finished or 0.0 for c in done_first.chunks)
    assert done_second.chunks[0].started is not None
    assert done_second.chunks[0].started >= last_of_first


def test_retry_failed_reruns_only_the_failed_chunks_even_on_a_blocked_node(
    farm_leader: LiveLeader, farm_agents: AgentFactory, tmp_path: Path
) -> None:
    (agent,) = farm_agents(1, slots=2)
    flag = tmp_path / "fixed"
    # Frame 1 renders; frames 2-4 fail until the flag file exists (say, a missing texture).
    job_id = submit(
        farm_leader, "--frames", "1-4", "--chunk", "1", "--retries", "0", "--",
        sys.executable, "-c",
        f"import os, sys; sys.exit(0 if {{start}} == 1 or os.path.exists({str(flag)!r}) else 3)",
    )  # fmt: skip
    with farm_leader.client() as client:
        detail = wait_job(client, job_id, ("done", "failed"))
        assert detail.job.state == "failed"
        assert [c.state for c in detail.chunks] == ["done", "failed", "failed", "failed"]
        # Three errors of this job on the only node: it is blocked for the job.
        assert list(detail.blocked_nodes) == [agent.name]

        flag.touch()  # the wrangler fixes the cause and asks for a retry
        farm_ok(farm_leader, "retry-failed", job_id)
        detail = wait_job(client, job_id, ("done", "failed"))
    assert detail.job.state == "done"
    assert [[a.number for a in c.attempts] for c in detail.chunks] == [[1], [1, 2], [1, 2], [1, 2]]


def test_job_and_chunk_actions_have_visible_effects(
    farm_leader: LiveLeader, farm_agents: AgentFactory
) -> None:
    shot = submit(
        farm_leader, "--name", "shot", "--frames", "1-3", "--chunk", "1",
        "--output", "renders/shot/f_####.png", *demo(0.01),
    )  # fmt: skip
    sim = submit(farm_leader, "--name", "sim", "--tags", "nowhere", "--", "true")
    out = farm_leader.root / "renders/shot"

    assert farm_json(farm_leader, "hold", shot)["jobs"][0]["state"] == "holding"
    farm_ok(farm_leader, "chunks", shot, "exclude", "0")
    farm_ok(farm_leader, "chunks", shot, "set-done", "1")
    with farm_leader.client() as client:
        frames = client.show(shot).frame_states
    assert frames == {"1": "excluded", "2": "done", "3": "unassigned"}

    assert farm_json(farm_leader, "complete", sim)["jobs"][0]["state"] == "done"
    assert farm_json(farm_leader, "review", sim)["jobs"][0]["reviewed"] is True

    # A held job dispatches nothing, even to a node that has just come online.
    farm_agents(1, slots=2)
    with farm_leader.client() as client:
        detail = client.show(shot)
        assert detail.job.state == "holding"
        assert [len(c.attempts) for c in detail.chunks] == [0, 0, 0]

        farm_ok(farm_leader, "unhold", shot)
        detail = wait_job(client, shot, ("done", "failed"))
        assert detail.job.state == "done"
        # Excluded and set-done chunks were not rendered; the last one was.
        assert sorted(p.name for p in out.iterdir()) == ["f_0003.png"]

        farm_ok(farm_leader, "requeue", shot)
        detail = wait_job(client, shot, ("done", "failed"))
    assert detail.job.state == "done"
    assert [[a.number for a in c.attempts] for c in detail.chunks] == [[], [1], [1, 2]]
    assert detail.chunks[0].state == "excluded"
    assert sorted(p.name for p in out.iterdir()) == ["f_0002.png", "f_0003.png"]

    farm_ok(farm_leader, "archive", sim)
    assert [job["id"] for job in farm_json(farm_leader, "jobs")] == [shot]
    archived = {job["id"]: job["archived"] for job in farm_json(farm_leader, "jobs", "--all")}
    assert archived == {shot: False, sim: True}

    logs = farm_leader.root / "jobs" / shot
    assert (logs / "events.log").is_file()
    deleted = farm_json(farm_leader, "delete", shot, "--yes")
    assert deleted["removed"] == [shot]
    wait_until(lambda: not logs.exists(), timeout=10, what=f"{logs} to be removed")
    with farm_leader.client() as client:
        assert [job.id for job in client.jobs(include_archived=True)] == [sim]
