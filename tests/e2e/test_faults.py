"""Fault injection: the farm keeps its guarantees when its own processes are killed and frozen.

Real processes on loopback: a leader subprocess (restarted on the same data
folder after ``kill -9``), agent subprocesses (restarted with their
``--state``, frozen with SIGSTOP) and a tallying renderer that records every
run of every frame (see ``fault_support.py``). Each test asserts what
README "What farmtui guarantees" promises:

- every frame is rendered to the end exactly once;
- no two runs of one frame are ever alive at the same moment (a run's
  processes include a detached helper that ignores SIGTERM where it matters);
- what was acknowledged (a submit, a change) is still there after a restart;
- a farm fault uses no retry: errors stay 0, attempts end "lost" or "killed",
  never "failed".

Timings that matter (fault to chunk running elsewhere, restart to dispatching
again) are printed; ``bench/faults.py`` measures them properly. Nothing sleeps
to wait for something: every wait polls a condition with a deadline.
"""

from __future__ import annotations

import errno
import re
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from websockets.exceptions import ConnectionClosed, InvalidHandshake
from websockets.sync.client import connect

from farmtui.errors import FarmError
from farmtui.protocol import (
    MAX_BATCH_BYTES,
    MAX_BATCH_MESSAGES,
    AgentHello,
    ChunkOutput,
    Heartbeat,
    agent_tag,
    encode,
)
from tests.e2e.fault_support import (
    FaultFarm,
    Json,
    Run,
    attempt_summary,
    farm_fault_problems,
    fault_toml,
    first_attempt_after,
    first_run_assigned_after,
    render_chunks,
    wait_until,
)
from tests.helpers.farm import needs_agent
from tests.helpers.small_disk import fill, small_disk

pytestmark = [needs_agent, pytest.mark.slow]

# Leader restarts: the agents' lease (0.6 x node_timeout = 4.8 s) outlasts a
# restart on a loaded machine, so renders in flight carry on.
LEADER_TOML = fault_toml(node_timeout=8.0)
# Agent faults: a short node_timeout (lease 1.2 s) so the chunk moves quickly.
NODE_TIMEOUT = 2.0
NODE_TOML = fault_toml(node_timeout=NODE_TIMEOUT)


FarmMaker = Callable[[str], FaultFarm]


@pytest.fixture
def make_farm(tmp_path: Path) -> Iterator[FarmMaker]:
    """``make_farm(toml)``: a FaultFarm under tmp_path, always torn down (agents thawed first)."""
    farms: list[FaultFarm] = []

    def make(toml: str) -> FaultFarm:
        farm = FaultFarm(tmp_path / f"farm{len(farms)}", toml).__enter__()
        farms.append(farm)
        return farm

    try:
        yield make
    finally:
        for farm in farms:
            farm.close()


def assert_kept_promises(farm: FaultFarm, detail: Json, frames: range) -> None:
    """Exactly once, never two alive at once, no retry used by a farm fault."""
    problems = farm.tally.problems(frames) + farm_fault_problems(detail)
    assert not problems, "\n".join(problems) + "\n" + attempt_summary(detail)
    assert detail["job"]["state"] == "done", attempt_summary(detail)
    assert all(c["state"] == "done" for c in render_chunks(detail)), attempt_summary(detail)


def only_run(farm: FaultFarm, frame: int) -> Run:
    (run,) = farm.tally.runs()[frame]
    return run


def seen_dead(run: Run) -> float | None:
    return run.seen_dead


# --- 1. the leader, kill -9 and restarted ----------------------------------------------

LEADER_FRAMES = range(1, 37)


@pytest.mark.parametrize("moment", ["just_after_submit", "mid_render", "as_chunks_finish"])
def test_leader_killed_and_restarted(make_farm: FarmMaker, moment: str) -> None:
    farm = make_farm(LEADER_TOML)
    farm.start_leader()
    farm.start_agents("node1", "node2", "node3", slots=2)
    frames = LEADER_FRAMES
    job = farm.submit(
        farm.tally_argv(0.5),
        "--name", "restart", "--frames", f"{frames[0]}-{frames[-1]}", "--chunk", "1",
        "--retries", "0",
    )  # fmt: skip
    held = None
    if moment == "mid_render":
        # Acknowledged changes before the crash: a new priority, and a job waiting for
        # this one (on nodes tagged "never": it cannot start), held.
        farm.cli("priority", job, "30")
        held = farm.submit(
            farm.tally_argv(0.1), "--name", "held", "--frames", "100", "--after", job,
            "--tags", "never",
        )  # fmt: skip
        farm.cli("hold", held, "--yes")
        wait_until(lambda: sum(farm.tally.ended().values()) >= 10, 30.0, "10 frames rendered")
    elif moment == "as_chunks_finish":
        # The moment a run writes its end, its ChunkFinished is on its way; others still
        # render, to end while the leader is down.
        def seventh_ended_with_others_rendering() -> tuple[set[int], set[int]] | None:
            runs = farm.tally.all_runs()
            ended = {r.frame for r in runs if r.end is not None}
            rendering = {r.frame for r in runs if r.end is None and r.seen_dead is None}
            return (ended, rendering) if len(ended) >= 7 and rendering else None

        ended_before, in_flight = wait_until(
            seventh_ended_with_others_rendering, 30.0, "the 7th frame, others rendering", 0.002
        )
    if moment != "as_chunks_finish":
        ended_before = {f for f, n in farm.tally.ended().items() if n}
    killed = farm.kill_leader()
    if moment == "as_chunks_finish":
        # Keep the leader down until a run then rendering ends (0.5 s renders; the lease
        # is 4.8 s), however late a loaded machine reaps it.
        wait_until(
            lambda: any(farm.tally.ended().get(f) for f in in_flight),
            30.0,
            "a run ending with the leader down",
        )
    healthy = farm.start_leader()
    ended_meanwhile = {f for f, n in farm.tally.ended().items() if n} - ended_before
    print(f"\n{moment}: leader down {healthy - killed:.2f} s; {len(ended_meanwhile)} frames ended")

    # Everything acknowledged is there.
    detail = farm.show(job)
    assert detail["job"]["name"] == "restart"
    assert [c["frames"] for c in render_chunks(detail)] == [[f] for f in frames]
    if held is not None:
        assert detail["job"]["priority"] == 30
        assert farm.show(held)["job"]["state"] == "holding"

    detail = farm.wait_job(job, "done", "failed", timeout=60.0)
    dispatched = first_attempt_after(detail, healthy)
    started = first_run_assigned_after(detail, farm.tally.runs(), healthy)
    if dispatched is not None and started is not None:
        print(
            f"{moment}: healthz -> first assignment {dispatched - healthy:.2f} s, "
            f"-> its run started {started - healthy:.2f} s"
        )
    detail = farm.show_cli(job)
    assert_kept_promises(farm, detail, frames)
    for chunk in render_chunks(detail):
        (frame,) = chunk["frames"]
        if frame in ended_meanwhile:
            # Finished while the leader was down: credited, with its one attempt.
            assert [a["outcome"] for a in chunk["attempts"]] == ["done"], attempt_summary(detail)
        for attempt in chunk["attempts"]:
            reason = attempt["reason"] or ""
            if attempt["outcome"] == "killed" and not reason.startswith("not started:"):
                # Only a leader away longer than the lease may stop a render in flight.
                # A chunk handed out ahead may be taken back before its renderer starts
                # (on a loaded machine the 0.5 s renders measure slow): no render stopped.
                assert "lease" in reason, attempt_summary(detail)
    if moment == "as_chunks_finish":
        assert ended_meanwhile, "no chunk finished while the leader was down"


# --- 2. an agent, kill -9 mid-chunk ----------------------------------------------------


def test_agent_killed_mid_chunk(make_farm: FarmMaker) -> None:
    farm = make_farm(NODE_TOML)
    farm.start_leader()
    farm.start_agents("node1", "node2")
    job = farm.submit(
        farm.tally_argv(3.0, "--stubborn-helper"), "--name", "crash", "--retries", "0"
    )
    wait_until(lambda: farm.tally.with_helper(1), 15.0, "the first run and its helper")
    node = wait_until(lambda: farm.chunk_node(job), 10.0, "the chunk on a node")
    killed = farm.kill_agent(node)
    assert only_run(farm, 1).end is None, "the run ended before its agent was killed"

    # The shim saw its pipe close: the tree (with the helper ignoring SIGTERM) is gone ...
    second = wait_until(lambda: farm.tally.nth_run(1, 1), 15.0, "a second run")
    first = farm.tally.runs()[1][0]
    assert first.seen_dead is not None, f"the dead agent's tree lives on: {first.describe()}"
    # ... and only after node_timeout does the chunk run elsewhere.
    print(
        f"\nagent crash: tree dead within {first.seen_dead - killed:.2f} s, "
        f"chunk running elsewhere after {second.start - killed:.2f} s "
        f"(node_timeout {NODE_TIMEOUT} s)"
    )
    assert first.seen_dead < second.start
    assert second.start - killed >= NODE_TIMEOUT - 0.5  # the lease holds the chunk that long

    detail = farm.wait_job(job, "done", "failed")
    detail = farm.show_cli(job)
    assert_kept_promises(farm, detail, range(1, 2))
    (chunk,) = render_chunks(detail)
    lost, done = chunk["attempts"]
    assert (lost["node"], lost["outcome"]) == (node, "lost")
    assert done["node"] != node
    assert done["outcome"] == "done"


def test_a_stopped_agent_reports_its_chunks_and_they_move_at_once(make_farm: FarmMaker) -> None:
    """SIGTERM: the agent kills its trees, tells the leader, and exits 0; its chunks run
    elsewhere at once. Its reports waited in its outbox for its next start, so the
    chunks waited out ``node_timeout`` (break round 28a)."""
    farm = make_farm(fault_toml(node_timeout=60.0))  # a lease of 36 s: far past this test
    farm.start_leader()
    farm.start_agents("node1", slots=2)
    argv = farm.tally_argv(3.0, "--stubborn-helper")
    job = farm.submit(argv, "--name", "stop", "--frames", "1-2", "--retries", "0")
    wait_until(lambda: farm.tally.with_helper(1) and farm.tally.with_helper(2), 15.0, "helpers")
    farm.start_agents("node2", slots=2)
    stopping = farm.agent("node1").process
    stopped = time.time()
    stopping.send_signal(signal.SIGTERM)
    assert stopping.wait(timeout=20.0) == 0

    again = wait_until(
        lambda: (
            (farm.tally.nth_run(1, 1), farm.tally.nth_run(2, 1))
            if all(farm.tally.nth_run(f, 1) for f in (1, 2))
            else None
        ),
        15.0,
        "both frames again",
    )
    print(f"\nagent stopped: its chunks running elsewhere after "
          f"{max(r.start for r in again if r) - stopped:.2f} s (node_timeout 60 s)")  # fmt: skip
    for frame, second in zip((1, 2), again, strict=True):
        first = farm.tally.runs()[frame][0]
        assert second is not None
        assert first.seen_dead is not None, first.describe()
        assert first.seen_dead < second.start, first.describe()
    assert "the leader has every report" in farm.agent_log("node1")
    # Its log names it by the tag the leader's log uses, never by its id.
    own_id = (farm.local.data / "agents" / "node1" / "agent-id").read_text().strip()
    assert f"agent node1 ({agent_tag(own_id)}) starting" in farm.agent_log("node1")
    assert own_id not in farm.agent_log("node1")
    farm.wait_job(job, "done", "failed")
    detail = farm.show_cli(job)
    assert_kept_promises(farm, detail, range(1, 3))
    for chunk in render_chunks(detail):
        assert [(a["node"], a["outcome"]) for a in chunk["attempts"]] == [
            ("node1", "killed"),
            ("node2", "done"),
        ], attempt_summary(detail)


def test_a_dead_nodes_chunk_moves_though_the_leader_restarts_more_often_than_node_timeout(
    make_farm: FarmMaker,
) -> None:
    """Each restarted leader counted the dead node's silence from nothing: killed more
    often than ``node_timeout``, it kept the chunk on the dead node for good."""
    timeout = 4.0
    farm = make_farm(fault_toml(node_timeout=timeout))
    farm.start_leader()
    farm.start_agents("node1")
    job = farm.submit(farm.tally_argv(1.0), "--name", "stuck", "--retries", "0")
    wait_until(lambda: farm.tally.runs().get(1), 15.0, "the render on node1")
    farm.kill_agent("node1")
    farm.start_agents("node2")
    restarts = 0
    while farm.chunk_node(job) == "node1":
        assert restarts < 8, f"still on the dead node after {restarts} restarts"
        # A leader that lives a little over half a node_timeout, then kill -9. (The
        # schedule of the fault, not a wait for something.)
        time.sleep(timeout * 0.6)
        if farm.chunk_node(job) != "node1":
            break
        farm.kill_leader()
        farm.start_leader()
        restarts += 1
    print(f"\nthe dead node's chunk moved after {restarts} leader restarts")
    assert restarts >= 1, "the chunk moved before any restart: nothing was tested"
    detail = farm.wait_job(job, "done", "failed")
    detail = farm.show_cli(job)
    assert_kept_promises(farm, detail, range(1, 2))
    (chunk,) = render_chunks(detail)
    assert [(a["node"], a["outcome"]) for a in chunk["attempts"]] == [
        ("node1", "lost"),
        ("node2", "done"),
    ]


def test_a_render_that_ended_while_its_agent_was_dead_is_credited_not_rendered_again(
    make_farm: FarmMaker,
) -> None:
    # Node timeout long enough for the frozen agent's lease to outlast the render.
    farm = make_farm(fault_toml(node_timeout=20.0))
    farm.start_leader()
    farm.start_agents("node1")
    job = farm.submit(farm.tally_argv(1.0), "--name", "late", "--retries", "0")
    wait_until(lambda: farm.tally.runs().get(1), 15.0, "the render to start")
    farm.freeze("node1")  # the agent cannot hear its renderer end ...
    wait_until(lambda: only_run(farm, 1).seen_dead, 15.0, "the renderer to exit")
    farm.kill_agent("node1")  # ... and dies before it can report it
    farm.restart_agent("node1")
    detail = farm.wait_job(job, "done", "failed")
    detail = farm.show_cli(job)
    assert_kept_promises(farm, detail, range(1, 2))
    (chunk,) = render_chunks(detail)
    assert [(a["node"], a["outcome"]) for a in chunk["attempts"]] == [("node1", "done")]
    assert "ended while the agent was down" in farm.agent_log("node1")


# --- 3. an agent, frozen past node_timeout ---------------------------------------------


def test_frozen_agent_is_fenced_then_recovers(make_farm: FarmMaker) -> None:
    farm = make_farm(NODE_TOML)
    farm.start_leader()
    farm.start_agents("node1", "node2")
    job = farm.submit(
        farm.tally_argv(3.0, "--stubborn-helper"), "--name", "frozen", "--retries", "0"
    )
    wait_until(lambda: farm.tally.with_helper(1), 15.0, "the first run and its helper")
    node = wait_until(lambda: farm.chunk_node(job), 10.0, "the chunk on a node")
    frozen = farm.freeze(node)
    assert only_run(farm, 1).end is None, "the run ended before its agent was frozen"

    second = wait_until(lambda: farm.tally.nth_run(1, 1), 15.0, "a second run")
    first = farm.tally.runs()[1][0]
    # Fenced by its shim's lease while its agent could do nothing: SIGTERM, then the
    # stubborn helper's SIGKILL, all before the other node started.
    assert first.seen_dead is not None, f"the frozen node's tree lives on: {first.describe()}"
    assert first.seen_dead < second.start
    assert first.term is not None, first.describe()
    print(
        f"\nfrozen node: SIGTERM by its shim {first.term - frozen:.2f} s after SIGSTOP, tree "
        f"dead {first.seen_dead - frozen:.2f} s, chunk running elsewhere "
        f"{second.start - frozen:.2f} s (node_timeout {NODE_TIMEOUT} s)"
    )
    assert second.start - frozen >= NODE_TIMEOUT - 0.5
    # Frozen a few seconds more: until the other node has rendered the frame.
    wait_until(lambda: farm.tally.runs()[1][1].end, 15.0, "the second run to end")
    farm.thaw(node)

    farm.wait_job(job, "done", "failed")
    # The resumed agent reconnects and sends its stale report (attempt 1 killed by
    # the lease); once the leader acknowledged it, it has changed nothing ...
    farm.wait_online([node], timeout=15.0)
    wait_until(lambda: not farm.outbox(node), 15.0, f"{node}'s outbox to be acknowledged")
    log = farm.agent_log(node)
    # Stopped for its lease, or for the leader's word that the node was lost: whichever the
    # thawed agent read first (its shim had killed the tree already, as asserted above).
    stopped = rf"chunk {job}:0:1:\S+ killed: (the lease ran out|node {node} lost)"
    assert re.search(stopped, log), log[-3000:]
    detail = farm.show_cli(job)
    assert_kept_promises(farm, detail, range(1, 2))
    (chunk,) = render_chunks(detail)
    assert [(a["node"], a["outcome"]) for a in chunk["attempts"]] == [
        (node, "lost"),
        (chunk["attempts"][1]["node"], "done"),
    ], attempt_summary(detail)

    # ... and it renders more work.
    more = farm.submit(farm.tally_argv(0.2), "--name", "after", "--frames", "11-16")
    detail = farm.wait_job(more, "done", "failed")
    assert_kept_promises(farm, detail, range(11, 17))
    nodes = {a["node"] for c in render_chunks(detail) for a in c["attempts"]}
    assert node in nodes, attempt_summary(detail)


# --- 4. retry and requeue of running chunks --------------------------------------------


def test_retry_and_requeue_of_running_chunks_wait_for_the_dead_tree(
    make_farm: FarmMaker,
) -> None:
    farm = make_farm(NODE_TOML)
    farm.start_leader()
    # Six slots for four chunks: free slots that a hasty dispatch would use at once.
    farm.start_agents("node1", "node2", slots=3)
    frames = range(1, 5)
    # Slow to die: the renderer cleans up for 0.3 s on SIGTERM, its helper ignores SIGTERM
    # and goes only with the SIGKILL at the end of the grace.
    # Renders long enough (10 s) that frames 3-4 still run when the requeue comes, even on a
    # loaded machine where the retries of frames 1-2 take seconds.
    job = farm.submit(
        farm.tally_argv(10.0, "--stubborn-helper", "--term-delay", "0.3"),
        "--name", "stopping", "--frames", "1-4", "--chunk", "1", "--retries", "0",
    )  # fmt: skip

    def running(count: int) -> bool:
        return len({r.frame for r in farm.tally.running() if len(r.pids) == 2}) >= count

    wait_until(lambda: running(4), 20.0, "four runs with their helpers")
    index = {c["frames"][0]: c["index"] for c in render_chunks(farm.show(job))}
    farm.cli("chunks", job, "retry", f"{index[1]},{index[2]}")
    wait_until(
        lambda: all(len(farm.tally.runs()[f]) == 2 for f in (1, 2)), 15.0, "frames 1-2 again"
    )
    wait_until(lambda: running(4), 15.0, "four runs again")
    assert not any(farm.tally.ended().values()), "a frame ended before the requeue"
    farm.client.action("requeue", [job])

    detail = farm.wait_job(job, "done", "failed", timeout=60.0)
    detail = farm.show_cli(job)
    assert_kept_promises(farm, detail, frames)
    runs = farm.tally.runs()
    assert [len(runs[f]) for f in frames] == [3, 3, 2, 2]
    for frame in frames:
        *stopped, _ = runs[frame]
        for run in stopped:
            assert run.term is not None, run.describe()  # stopped, not finished
            assert run.seen_dead is not None
        gaps = [
            later.start - earlier.alive_until
            for earlier, later in zip(runs[frame], runs[frame][1:], strict=False)
        ]
        print(
            f"\nframe {frame}: gaps from a stopped run's last sign of life to the next run {gaps}"
        )
    for chunk in render_chunks(detail):
        *stopped, final = chunk["attempts"]
        assert {a["outcome"] for a in stopped} == {"killed"}, attempt_summary(detail)
        assert final["outcome"] == "done"


# --- 5. fast churn: no exit status misread ---------------------------------------------


def test_200_quick_chunks_all_end_done(make_farm: FarmMaker) -> None:
    farm = make_farm("")
    farm.start_leader()
    farm.start_agents("node1", slots=2)
    began = time.monotonic()
    job = farm.submit(
        ["/bin/true"], "--name", "churn", "--frames", "1-200", "--chunk", "1", "--retries", "0"
    )

    def finished() -> bool:
        (view,) = [j for j in farm.client.jobs() if j.id == job]
        # A misread exit status fails its chunk (no retries): stop there, the job may stall.
        return view.state in ("done", "failed") or view.stats.chunks_failed > 0

    # Polled gently: the job list is not free for the leader.
    wait_until(finished, 120.0, "200 chunks", every=0.5)
    print(f"\n200 chunks of /bin/true on 1 agent x 2 slots: {time.monotonic() - began:.1f} s")
    detail = farm.show_cli(job)
    chunks = render_chunks(detail)
    assert len(chunks) == 200

    def ends(chunk: Json) -> list[tuple[str, str]]:
        return [(a["outcome"], a["exit_status"]) for a in chunk["attempts"]]

    wrong = [
        f"chunk {c['index']}: {c['state']} {ends(c)}"
        for c in chunks
        if c["state"] != "done" or ends(c) != [("done", "0")]
    ]
    assert not wrong, "\n".join(wrong[:20])
    assert detail["job"]["state"] == "done"
    log = farm.agent_log("node1")
    assert "exit status already read" not in log
    assert "returncode 255" not in log


# --- 6. a chunk that finished while the leader was down --------------------------------


@pytest.mark.parametrize("agent_restarted", [False, True], ids=["agent_stays", "agent_restarted"])
def test_chunk_finished_while_leader_down_is_credited_once(
    make_farm: FarmMaker, agent_restarted: bool
) -> None:
    farm = make_farm(LEADER_TOML)
    farm.start_leader()
    farm.start_agents("node1")
    job = farm.submit(farm.tally_argv(2.0), "--name", "credited", "--retries", "0")
    wait_until(lambda: farm.tally.runs().get(1), 15.0, "the run to start")
    wait_until(lambda: farm.chunk_node(job), 10.0, "the chunk on node1")
    farm.kill_leader()
    assert only_run(farm, 1).end is None, "the run ended before the leader was killed"
    # It finishes while the leader is away: its ChunkFinished waits in the outbox.
    wait_until(lambda: only_run(farm, 1).end, 10.0, "the run to end")
    concluded = re.compile(rf"chunk {job}:0:1:\S+ done")
    wait_until(
        lambda: concluded.search(farm.agent_log("node1")), 10.0, "the agent to conclude the chunk"
    )
    # The agent logs the end, then writes its report: a loaded machine can run this
    # test between the two (a CI run read an empty outbox), so wait for the report too.
    wait_until(
        lambda: "chunk_finished" in [m["type"] for m in farm.outbox("node1")],
        10.0,
        "the ChunkFinished in the agent's outbox",
    )
    if agent_restarted:
        # And the agent dies too, before anyone acknowledged the report.
        farm.kill_agent("node1")
    farm.start_leader()
    if agent_restarted:
        farm.restart_agent("node1")

    detail = farm.wait_job(job, "done", "failed", timeout=30.0)
    detail = farm.show_cli(job)
    assert_kept_promises(farm, detail, range(1, 2))
    (chunk,) = render_chunks(detail)
    assert [(a["number"], a["outcome"]) for a in chunk["attempts"]] == [(1, "done")], (
        attempt_summary(detail)
    )
    assert len(farm.tally.runs()[1]) == 1


def _uploading_farm(make_farm: FarmMaker) -> FaultFarm:
    """A leader whose sync root Linux nodes are told is a folder none has, and node1,
    which therefore uploads every frame to the leader."""
    farm = make_farm(LEADER_TOML)
    root = farm.local.root
    (farm.local.data / "leader.toml").write_text(
        LEADER_TOML + f'[[path_map]]\nfrom = "{root}"\nto.linux = "/nonexistent/farm-root"\n'
    )
    farm.start_leader()
    farm.start_agents("node1")
    uploads = "the sync root is not visible here: uploading"
    wait_until(lambda: uploads in farm.agent_log("node1"), 10.0, "node1 to upload")
    return farm


def _submit_told_render(farm: FaultFarm) -> tuple[str, Path]:
    """A one-frame job whose render writes its frame once told (a ``go`` file), counting
    its runs in ``runs``; its id and the ``go`` file."""
    go = farm.folder / "go"
    write_when_told = (
        "import os, pathlib, sys, time\n"
        "with open(sys.argv[3], 'a') as runs: runs.write('run\\n')\n"
        "while not os.path.exists(sys.argv[2]): time.sleep(0.02)\n"
        "pathlib.Path(sys.argv[1].replace('####', '0001')).write_text('rendered')\n"
    )
    argv = [sys.executable, "-c", write_when_told, "{output}", str(go), str(farm.folder / "runs")]
    options = ("--name", "uploaded", "--output", "renders/up/f_####.png", "--retries", "0")
    job = farm.submit(argv, *options)
    wait_until(lambda: farm.chunk_node(job), 10.0, "the chunk on node1")
    return job, go


def _assert_uploaded_once(farm: FaultFarm, job: str) -> None:
    farm.wait_job(job, "done", "failed", timeout=30.0)
    detail = farm.show_cli(job)
    (chunk,) = render_chunks(detail)
    assert [(a["number"], a["outcome"]) for a in chunk["attempts"]] == [(1, "done")], (
        attempt_summary(detail)
    )
    assert chunk["errors"] == 0
    assert (farm.local.root / "renders/up/f_0001.png").read_text() == "rendered"
    assert (farm.folder / "runs").read_text() == "run\n", "rendered again"


@pytest.mark.parametrize("signal_name", ["KILL", "TERM"])
def test_an_upload_the_leader_was_away_for_goes_once_it_is_back_no_retry_used(
    make_farm: FarmMaker, signal_name: str
) -> None:
    """A node that does not see the sync root uploads each frame to the leader. One
    that finished while the leader restarted (a crash, or a routine restart) failed its
    chunk ("copy to the sync root failed: All connection attempts failed"), a retry used
    and with `--retries 0` the job failed. The output waits on the node instead, and goes
    once the leader is back."""
    farm = _uploading_farm(make_farm)
    job, go = _submit_told_render(farm)
    farm.kill_leader(getattr(signal, f"SIG{signal_name}"))
    go.touch()
    waiting = "its output waits here until a leader takes it"
    wait_until(lambda: waiting in farm.agent_log("node1"), 15.0, "the upload to wait")
    farm.start_leader()
    _assert_uploaded_once(farm, job)


def test_an_agent_stopped_while_its_upload_waits_delivers_it_at_its_next_start(
    make_farm: FarmMaker,
) -> None:
    """SIGTERM of an agent whose finished render waited for the leader: it did not exit
    (a second signal neither), and the third threw the frames away while its journal
    said the render ended well, so its next start failed the chunk for missing frames
    (break round 29d). It exits at once now, its output kept, and its next start
    uploads it: no render again, no retry used."""
    farm = _uploading_farm(make_farm)
    job, go = _submit_told_render(farm)
    farm.kill_leader()
    go.touch()
    waiting = "its output waits here until a leader takes it"
    wait_until(lambda: waiting in farm.agent_log("node1"), 15.0, "the upload to wait")
    agent = farm.agent("node1").process
    agent.send_signal(signal.SIGTERM)
    assert agent.wait(timeout=15.0) == 0
    assert "its output stays here for its next start" in farm.agent_log("node1")
    farm.start_leader()
    farm.restart_agent("node1")
    _assert_uploaded_once(farm, job)


# --- 7. a node's disk fills up -----------------------------------------------------------


def test_a_node_whose_disk_is_full_still_reports_each_frame_once(make_farm: FarmMaker) -> None:
    """node1's ``--state`` (its outbox, log, id) fills up while it renders: what it
    renders is still reported, once, and the job completes."""
    farm = make_farm(LEADER_TOML)
    with small_disk(farm.local.data / "agents" / "node1") as state:
        try:
            farm.start_leader()
            farm.start_agents("node1", slots=2)
            assert fill(state / "filler") == errno.ENOSPC
            frames = range(1, 21)
            job = farm.submit(
                farm.tally_argv(0.1), "--name", "full", "--frames", "1-20", "--chunk", "1"
            )
            detail = farm.wait_job(job, "done", "failed", timeout=60.0)
            assert_kept_promises(farm, farm.show_cli(job), frames)
            assert detail["job"]["state"] == "done"
        finally:
            farm.close()  # before the unmount: the agent holds files there


def test_the_leaders_disk_fills_while_nodes_render(make_farm: FarmMaker, tmp_path: Path) -> None:
    """The leader's database disk is full for longer than the agents' lease: renders go
    on (their heartbeats are still answered), their reports wait in the agents' outboxes,
    and once there is room each frame is reported once, no chunk rendered again."""
    with small_disk(tmp_path / "store", "3m") as disk:
        store = f'store = "sqlite:{disk / "farm.db"}"\ndisk_reserve_mb = 1\n'
        farm = make_farm(NODE_TOML + store)
        try:
            farm.start_leader()
            farm.start_agents("node1", slots=2)
            frames = range(1, 13)
            job = farm.submit(
                farm.tally_argv(0.4), "--name", "short", "--frames", "1-12", "--chunk", "1"
            )
            wait_until(lambda: farm.tally.ended(), 30.0, "a first frame rendered")
            filler = disk / "filler"
            assert fill(filler) == errno.ENOSPC
            short_since = time.time()
            with pytest.raises(FarmError, match="disk is full"):
                farm.client.request(
                    "POST", "/api/jobs/actions", body={"action": "pause", "ids": [job]}
                )
            # Short for three of the agents' leases (0.6 x node_timeout), and renders
            # ended meanwhile: their reports are held, their leases renewed all along.
            lease = 0.6 * NODE_TIMEOUT
            wait_until(
                lambda: (
                    time.time() > short_since + 3 * lease
                    and sum(1 for run in farm.tally.all_runs() if (run.end or 0) > short_since) >= 2
                ),
                30.0,
                "renders ending while the leader's disk is full",
            )
            assert farm.show(job)["job"]["state"] != "done"
            filler.unlink()
            detail = farm.wait_job(job, "done", "failed", timeout=60.0)
            assert_kept_promises(farm, farm.show_cli(job), frames)
            rendered_again = [c for c in render_chunks(detail) if len(c["attempts"]) != 1]
            assert not rendered_again, attempt_summary(detail)
            assert "lease ran out" not in farm.agent_log("node1")
        finally:
            farm.close()  # before the unmount: the leader holds farm.db there


# --- settings that cannot keep the promises are refused ----------------------------------


def leader_refuses(farm: FaultFarm) -> bool:
    """Start the leader; True when it refuses its leader.toml (one way to fix a bad config)."""
    try:
        farm.start_leader()
    except AssertionError as exc:
        if "the leader exited" in str(exc):
            return True
        raise
    return False


def test_a_node_timeout_too_short_to_fence_a_frozen_node_is_refused(
    make_farm: FarmMaker,
) -> None:
    # lease 0.24 s + up to 0.5 s of grace against a node_timeout of 0.4 s: a frozen node's
    # tree could outlive the move of its chunk, so the leader will not start with it.
    farm = make_farm(fault_toml(node_timeout=0.4, heartbeat=0.1, tick=0.05))
    assert leader_refuses(farm)
    assert "node_timeout must be at least 1.5 s" in farm.leader_log()


def test_quiet_link_stays_up_with_the_slowest_heartbeat_allowed(
    make_farm: FarmMaker,
) -> None:
    # The most widely spaced heartbeats the leader accepts for this node_timeout.
    farm = make_farm("node_timeout = 3.0\nheartbeat_interval = 0.6\n")
    farm.start_leader()
    farm.start_agents("node1")
    # One line of output, then 3.5 s of silence.
    job = farm.submit(farm.tally_argv(3.5), "--name", "quiet", "--retries", "0")
    detail = farm.wait_job(job, "done", "failed")
    assert_kept_promises(farm, detail, range(1, 2))
    reconnects = [line for line in farm.agent_log("node1").splitlines() if "reconnecting" in line]
    assert not reconnects, "\n".join(reconnects)
    assert "node node1 disconnected" not in farm.leader_log()


# --- 9. chunks held ahead of a free slot (--prefetch) -----------------------------------


def most_at_once(farm: FaultFarm) -> int:
    """The most renders the tally saw alive at once."""
    runs = farm.tally.all_runs()
    edges = sorted([(run.start, 1) for run in runs] + [(run.alive_until, -1) for run in runs])
    alive = most = 0
    for _, step in edges:
        alive += step
        most = max(most, alive)
    return most


def test_short_chunks_wait_ahead_of_the_slots_and_each_frame_still_runs_once(
    make_farm: FarmMaker,
) -> None:
    """An agent holds chunks of a short-chunk job ahead of its slots (by default as many
    as its slots): never more renderers at once than slots, every frame once."""
    farm = make_farm("")
    farm.start_leader()
    farm.start_agents("node1", slots=2)
    frames = range(1, 41)
    job = farm.submit(farm.tally_argv(0.05), "--name", "short", "--frames", "1-40", "--chunk", "1")
    detail = farm.wait_job(job, "done", timeout=120.0)
    assert_kept_promises(farm, detail, frames)
    most = most_at_once(farm)
    assert most <= 2, f"{most} renderers at once on a node of 2 slots"
    assert "waits for a slot" in farm.agent_log("node1"), "no chunk was handed over ahead"


def waits_for_a_slot(farm: FaultFarm, node: str) -> bool:
    return "waits for a slot" in farm.agent_log(node)


def test_a_paused_job_starts_none_of_its_chunks_that_waited_for_a_slot(
    make_farm: FarmMaker,
) -> None:
    """Pausing takes back what waits ahead of the slots: the render running at the pause
    finishes and nothing else starts (before, the waiting chunk started as it ended)."""
    farm = make_farm("")
    farm.start_leader()
    farm.start_agents("node1", slots=1)
    frames = range(1, 7)
    job = farm.submit(farm.tally_argv(1.5), "--name", "paused", "--frames", "1-6", "--chunk", "1")
    wait_until(lambda: waits_for_a_slot(farm, "node1"), 60.0, "a chunk waiting for the slot")
    farm.cli("pause", job)
    paused = time.time()

    def settled() -> bool:
        detail = farm.show(job)
        return detail["job"]["stats"]["chunks_running"] == 0 and not farm.tally.running()

    wait_until(settled, 30.0, "the paused job to run nothing")
    late = [run.describe() for run in farm.tally.all_runs() if run.start > paused + 0.2]
    assert late == [], f"renders started after the pause: {late}"
    farm.cli("resume", job)
    detail = farm.wait_job(job, "done", timeout=60.0)
    assert_kept_promises(farm, detail, frames)


def test_an_agent_killed_with_a_chunk_waiting_for_its_slot_renders_each_frame_once(
    make_farm: FarmMaker,
) -> None:
    farm = make_farm(NODE_TOML)
    farm.start_leader()
    farm.start_agents("node1", slots=1)
    frames = range(1, 13)
    job = farm.submit(farm.tally_argv(0.3), "--name", "held", "--frames", "1-12", "--chunk", "1")
    wait_until(lambda: waits_for_a_slot(farm, "node1"), 30.0, "a chunk waiting for the slot")
    farm.kill_agent("node1")
    farm.restart_agent("node1", slots=1)
    detail = farm.wait_job(job, "done", "failed", timeout=60.0)
    assert_kept_promises(farm, farm.show_cli(job), frames)
    assert detail["job"]["state"] == "done"


def test_an_agent_killed_with_many_brief_chunks_waiting_renders_each_frame_once(
    make_farm: FarmMaker,
) -> None:
    """With ``--prefetch 8`` a node holds more than a chunk a slot of a job of brief chunks
    (``server.prefetch.depth``); killed with them waiting, none is rendered twice, and no
    more renderers than slots ever run at once."""
    farm = make_farm(NODE_TOML)
    farm.start_leader()
    deep = ("--prefetch", "8")
    farm.start_agents("node1", slots=2, extra=deep)
    frames = range(1, 61)
    job = farm.submit(farm.tally_argv(0.25), "--name", "brief", "--frames", "1-60", "--chunk", "1")

    def deep_queue() -> bool:
        return farm.show(job)["job"]["stats"]["chunks_running"] > 2 + 2

    def renders_just_begun() -> bool:
        # Not in their last moments: a render killed after it saved its frame but before
        # it exited is rendered again, which no farm can tell from a kill mid-frame.
        running, now = farm.tally.running(), time.time()
        return len(running) == 2 and all(now - run.start < 0.12 for run in running)

    wait_until(deep_queue, 60.0, "more than a chunk a slot held on node1")
    wait_until(renders_just_begun, 60.0, "both renders just begun", every=0.005)
    farm.kill_agent("node1")
    farm.restart_agent("node1", slots=2, extra=deep)
    detail = farm.wait_job(job, "done", "failed", timeout=120.0)
    assert_kept_promises(farm, farm.show_cli(job), frames)
    assert detail["job"]["state"] == "done"
    most = most_at_once(farm)
    assert most <= 2, f"{most} renderers at once on a node of 2 slots"


def test_a_chunk_waiting_on_a_frozen_node_never_starts_after_it_moved(
    make_farm: FarmMaker,
) -> None:
    """node1 is frozen with a chunk waiting for its slot: past node_timeout both its
    chunks move to node2; thawed, node1 must not start the waiting one (its lease ran
    out). Renders of 3 s outlast the lease (1.2 s), so the one running is fenced too."""
    farm = make_farm(NODE_TOML)
    farm.start_leader()
    farm.start_agents("node1", slots=1)
    frames = range(1, 5)
    job = farm.submit(farm.tally_argv(3.0), "--name", "held", "--frames", "1-4", "--chunk", "1")
    # Alone, node1 is handed its first chunk ahead with the one that starts as its first
    # ends: frozen now, that render has most of its 3 s to go when the lease runs out.
    wait_until(lambda: waits_for_a_slot(farm, "node1"), 30.0, "a chunk waiting on node1")
    frozen = farm.freeze("node1")
    farm.start_agents("node2", slots=2)
    wait_until(lambda: farm.node_states().get("node1") == "offline", 30.0, "node1 declared lost")
    assert time.time() - frozen >= NODE_TIMEOUT - 0.5
    farm.thaw("node1")
    detail = farm.wait_job(job, "done", "failed", timeout=90.0)
    assert_kept_promises(farm, farm.show_cli(job), frames)
    assert detail["job"]["state"] == "done"
    log = farm.agent_log("node1")
    held = re.search(rf"chunk ({job}:\d+:1:\S+) waits for a slot", log)
    assert held is not None, log[-3000:]
    waiting = re.escape(held.group(1))
    assert not re.search(rf"chunk {waiting} started", log), log[-3000:]
    # Stopped by its own lease running out, or by the leader's word that node1 was lost,
    # whichever the thawed agent read first; or, queued on the running chunk's shim, refused
    # by that shim when its turn came after the lease.
    stopped = (
        rf"chunk {waiting} killed: "
        r"(the lease ran out|node node1 lost|not started: the node's lease ran out)"
    )
    assert re.search(stopped, log), log[-3000:]


def test_a_job_of_a_higher_priority_takes_back_what_waits_ahead_each_frame_once(
    make_farm: FarmMaker,
) -> None:
    """A job submitted ahead of a short-chunk job starts as the render running at its
    submit ends: the chunk that waited for the slot is taken back (no retry used) and
    renders later, once. Before, it rendered first and the urgent job waited for it."""
    farm = make_farm("")
    farm.start_leader()
    farm.start_agents("node1", slots=1)
    short = farm.submit(farm.tally_argv(3.0), "--name", "short", "--frames", "1-4", "--chunk", "1")
    wait_until(lambda: waits_for_a_slot(farm, "node1"), 60.0, "a chunk waiting for the slot")
    # Right after a render starts: its 3 s leave the leader's tick (1 s) time to ask.
    started = len(farm.tally.all_runs())
    wait_until(lambda: len(farm.tally.all_runs()) > started, 30.0, "the next render to start")
    urgent = farm.submit(
        farm.tally_argv(3.0), "--name", "urgent", "--frames", "101", "--priority", "1"
    )
    submitted = time.time()
    detail = farm.wait_job(urgent, "done", timeout=60.0)
    assert_kept_promises(farm, farm.show_cli(urgent), range(101, 102))
    after = [run.frame for run in farm.tally.all_runs() if run.start > submitted]
    assert after[0] == 101, f"renders started after the urgent submit: {after}"
    detail = farm.wait_job(short, "done", timeout=90.0)
    detail = farm.show_cli(short)
    assert_kept_promises(farm, detail, range(1, 5))
    outcomes = [a["outcome"] for c in render_chunks(detail) for a in c["attempts"]]
    assert "killed" in outcomes, attempt_summary(detail)  # the one taken back


def junk_batch() -> bytes:
    """A batch of 3.8 MB: far over any batch a peer builds, refused unread."""
    beat = encode(Heartbeat(beat=1))
    return b"[" + b",".join([beat] * (3_800_000 // (len(beat) + 1))) + b"]"


def junk_output() -> bytes:
    """One message of 3.8 MB: half a million lines for a chunk that is not the sender's,
    decoded (tens of ms of the leader's loop) before it is ignored."""
    return encode(ChunkOutput(job_id="j-nosuch", chunk=0, attempt=1, lines=["x"] * 950_000))


def junk_output_under_a_batch() -> bytes:
    """One message just under a batch's limit: 87,000 empty lines, the costliest to
    decode of what fits (~2.4 ms of the leader's loop), for a chunk not the sender's."""
    empty = encode(ChunkOutput(job_id="j-nosuch", chunk=0, attempt=1, lines=[]))
    lines = (MAX_BATCH_BYTES - len(empty)) // 3
    return encode(ChunkOutput(job_id="j-nosuch", chunk=0, attempt=1, lines=[""] * lines))


def junk_outputs_batched() -> bytes:
    """A batch of as many outputs as a batch may hold, each of empty lines: a thousand
    reports a frame for the group commit, each ignored when it is applied."""
    empty = encode(ChunkOutput(job_id="j-nosuch", chunk=0, attempt=1, lines=[]))
    lines = ((MAX_BATCH_BYTES - 2) // MAX_BATCH_MESSAGES - 1 - len(empty)) // 3
    output = encode(ChunkOutput(job_id="j-nosuch", chunk=0, attempt=1, lines=[""] * lines))
    return b"[" + b",".join([output] * MAX_BATCH_MESSAGES) + b"]"


def junk_heartbeats() -> bytes:
    """A batch of as many heartbeats as a batch may hold, each applied and answered."""
    beat = encode(Heartbeat(beat=1, cpu_percent=1.0))
    return b"[" + b",".join([beat] * MAX_BATCH_MESSAGES) + b"]"


@pytest.mark.parametrize(
    "junk",
    [junk_batch, junk_output, junk_output_under_a_batch, junk_outputs_batched, junk_heartbeats],
    ids=["batches", "outputs", "outputs under a batch", "outputs batched", "heartbeats"],
)
def test_links_flooding_large_frames_never_make_a_healthy_node_lost(
    make_farm: FarmMaker, junk: Callable[[], bytes]
) -> None:
    """Thirty links send frames of 3.8 MB while a real node renders, each closed for its
    frames and coming straight back. Break rounds had that node's reads wait 40 s behind
    three such links, and, with every frame in one line, 250-460 ms a frame behind
    thirty; decoding one such frame of outputs, or reading it only to refuse it, held
    the loop up to a second: lost, its renders killed."""
    farm = make_farm(NODE_TOML)
    farm.start_leader()
    farm.start_agents("node1", slots=2, extra=["--tags", "render"])
    frames = range(1, 13)
    job = farm.submit(
        farm.tally_argv(0.2),
        "--name", "flooded", "--frames", f"{frames[0]}-{frames[-1]}", "--chunk", "1",
        "--retries", "0", "--tags", "render",
    )  # fmt: skip
    frame = junk()
    flooding = threading.Event()
    flooding.set()
    links = 30
    sent = [0] * links
    connections = [0] * links
    url = farm.local.url.replace("http", "ws", 1) + "/ws/agent"
    token = farm.local.agent_token_file.read_text().strip()

    def flood(number: int) -> None:
        while flooding.is_set():  # closed for its frames, it comes back at once
            connections[number] += 1
            try:
                with connect(url, additional_headers={"Authorization": f"Bearer {token}"}) as link:
                    link.send(encode(AgentHello(name=f"flood{number}", slots=1)).decode())
                    while flooding.is_set():
                        link.send(frame)
                        sent[number] += 1
            except (ConnectionClosed, InvalidHandshake, OSError):
                continue

    floods = [threading.Thread(target=flood, args=(n,), daemon=True) for n in range(links)]
    for thread in floods:
        thread.start()
    began = time.monotonic()
    try:
        farm.wait_job(job, "done", "failed", timeout=60.0)
    finally:
        took = time.monotonic() - began
        flooding.clear()
        for thread in floods:
            thread.join(timeout=30.0)
    print(
        f"\nflooded: {sum(sent)} frames of {len(frame) / 1e6:.1f} MB sent meanwhile "
        f"over {sum(connections)} connections; the job took {took:.1f} s"
    )
    assert sum(sent) >= links, sent  # the flood was one
    detail = farm.show_cli(job)
    assert_kept_promises(farm, detail, frames)
    # Not even a farm fault: node1 was never lost, nothing was taken from it.
    for chunk in render_chunks(detail):
        assert [a["outcome"] for a in chunk["attempts"]] == ["done"], attempt_summary(detail)
