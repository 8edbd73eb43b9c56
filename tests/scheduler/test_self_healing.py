"""Retries with backoff, blocks, farm-caused losses and stale reports."""

from __future__ import annotations

import pytest

from farmtui.protocol import AgentHello, ChunkRef
from server.model import Chunk
from server.scheduler import Scheduler, SchedulerConfig
from tests.scheduler.paper_farm import Farm, held


def chunk0(farm: Farm, job: str) -> Chunk:
    return farm.scheduler.jobs[job].chunks[0]


def test_fails_twice_then_succeeds_with_growing_gaps(farm: Farm) -> None:
    job = farm.submit("j", retry_delay=10.0)
    farm.node("n1")
    farm.dispatch()
    gaps = []
    for _ in range(2):
        farm.finish(job, 0, "failed")
        assert farm.chunk_states(job) == ["waiting-retry"]
        retry_at = chunk0(farm, job).retry_at
        assert retry_at is not None
        gaps.append(retry_at - farm.now)
        assert farm.dispatch().assignments == []  # still backing off
        farm.advance(retry_at - farm.now)
        assert len(farm.dispatch().assignments) == 1
    assert gaps == [10.0, 20.0]
    farm.finish(job, 0)
    assert farm.state(job) == "done"
    view = farm.scheduler.chunk_view(job, 0)
    assert (view.attempt, view.errors) == (3, 2)
    assert [a.outcome for a in view.attempts] == ["failed", "failed", "done"]


def test_backoff_is_capped() -> None:
    farm = Farm(SchedulerConfig(retries=10, retry_delay=10.0, retry_cap=25.0, block_after=0))
    job = farm.submit("j")
    farm.node("n1")
    gaps = []
    for _ in range(4):
        farm.advance(1000)
        farm.dispatch()
        farm.finish(job, 0, "failed")
        gaps.append((chunk0(farm, job).retry_at or 0) - farm.now)
    assert gaps == [10.0, 20.0, 25.0, 25.0]


def test_out_of_retries_fails_the_job_once_nothing_else_can_run(farm: Farm) -> None:
    job = farm.submit("j", frames="1-2", retries=1, retry_delay=1.0)
    farm.node("n1", slots=2)
    farm.dispatch()
    farm.finish(job, 0, "failed")
    farm.advance(1)
    farm.dispatch()
    farm.finish(job, 0, "failed")
    assert farm.chunk_states(job) == ["failed", "assigned"]
    assert farm.state(job) == "rendering"  # chunk 1 still runs
    assert farm.frame_states(job)[1] == "failed"
    changes = farm.finish(job, 1)
    assert farm.state(job) == "failed"
    assert [n.kind for n in changes.notifications] == ["failed"]


def test_a_lost_node_requeues_its_chunks_without_using_a_retry(farm: Farm) -> None:
    job = farm.submit("j", retries=0)
    farm.node("n1")
    farm.dispatch()
    changes = farm.scheduler.node_lost("n1", farm.now)
    assert farm.chunk_states(job) == ["preempted"]
    assert "n1" in changes.nodes
    farm.node("n2")
    assert [a.node for a in farm.dispatch().assignments] == ["n2"]
    farm.finish(job, 0)
    view = farm.scheduler.chunk_view(job, 0)
    assert (view.errors, view.attempt, farm.state(job)) == (0, 2, "done")
    assert view.attempts[0].outcome == "lost"


def test_silent_nodes_are_declared_lost_by_tick(farm: Farm) -> None:
    job = farm.submit("j")
    farm.node("n1")
    farm.dispatch()
    farm.advance(10)
    farm.advance(10, silent=("n1",))
    assert farm.chunk_states(job) == ["assigned"]
    changes = farm.advance(10, silent=("n1",))
    assert farm.chunk_states(job) == ["preempted"]
    assert [k.node for k in changes.kills] == ["n1"]  # in case it is half alive
    assert farm.scheduler.node_views()[0].state == "offline"


def test_a_chunk_killed_on_the_node_without_the_leader_asking_uses_no_retry(farm: Farm) -> None:
    job = farm.submit("j", retries=0)
    farm.node("n1")
    farm.dispatch()
    farm.finish(job, 0, "killed")
    assert farm.chunk_states(job) == ["preempted"]
    assert chunk0(farm, job).errors == 0


def test_stale_reports_are_ignored(farm: Farm) -> None:
    job = farm.submit("j")
    farm.node("n1")
    farm.node("n2")
    farm.dispatch()
    farm.scheduler.node_lost("n1", farm.now)
    farm.dispatch()  # attempt 2 on n2
    s = farm.scheduler
    assert not s.chunk_started("n1", job, 0, 1, farm.now)
    assert not s.chunk_alive("n1", job, 0, 1, farm.now)
    assert not s.frames_written("n1", job, 0, 1, [1], True, farm.now)
    assert not s.chunk_timed_out("n1", job, 0, 1, "max_render", 9.0, farm.now)
    assert not farm.finish(job, 0, "failed", node="n1", attempt=1)
    assert not farm.finish(job, 0, "done", node="n1", attempt=2)  # right attempt, wrong node
    assert not farm.finish(job, 7, "done", node="n2", attempt=2)  # no such chunk
    assert farm.chunk_states(job) == ["assigned"]
    assert farm.finish(job, 0, "done", node="n2", attempt=2)
    assert not farm.finish(job, 0, "done", node="n2", attempt=2)  # once is enough
    assert farm.state(job) == "done"


def test_node_reconnect_keeps_its_chunks_and_kills_the_ones_it_should_not_run(
    farm: Farm,
) -> None:
    job = farm.submit("j", frames="1-3")
    farm.node("n1", slots=3)
    farm.dispatch()
    keep = farm.ref(job, 0)
    wrong = ChunkRef(job_id=job, chunk=2, attempt=99)
    unknown = ChunkRef(job_id="gone", chunk=0, attempt=1)
    changes, kill = farm.scheduler.node_connected(
        AgentHello(name="n1", slots=3, running=[held(r) for r in (keep, wrong, unknown)]), farm.now
    )
    assert kill == [wrong, unknown]
    # Chunk 1 it forgot, chunk 2 it runs under another attempt: both lost, no error.
    assert farm.chunk_states(job) == ["assigned", "preempted", "preempted"]
    assert [c.errors for c in farm.scheduler.job_detail(job).chunks] == [0, 0, 0]
    assert {(job, 1), (job, 2)} <= changes.chunks


def test_a_node_failing_a_job_is_blocked_while_another_node_finishes_it() -> None:
    farm = Farm(SchedulerConfig(retries=5, retry_delay=0.0, block_after=2, block_for=100.0))
    job = farm.submit("j", frames="1-4")
    farm.node("bad")
    farm.dispatch()
    farm.finish(job, 0, "failed")
    farm.dispatch()
    changes = farm.finish(job, 0, "failed")
    assert any("blocked" in e.text for e in changes.events)
    assert farm.scheduler.job_detail(job).blocked_nodes == {"bad": farm.now + 100.0}
    assert farm.dispatch().assignments == []
    # Blocked everywhere is not failed: the job waits for the block to expire.
    assert farm.state(job) == "rendering"
    farm.node("good")
    for _ in range(4):
        [a] = farm.dispatch().assignments
        assert a.node == "good"
        farm.finish(job, a.message.chunk)
    assert farm.state(job) == "done"


def test_blocks_expire(farm: Farm) -> None:
    farm = Farm(SchedulerConfig(retry_delay=0.0, block_after=1, block_for=60.0))
    job = farm.submit("j")
    farm.node("n1")
    farm.dispatch()
    farm.finish(job, 0, "failed")
    assert farm.dispatch().assignments == []
    farm.advance(61)
    assert len(farm.dispatch().assignments) == 1


@pytest.mark.parametrize("action", ["retry-failed", "requeue", "resume"])
def test_an_operator_rerun_lifts_the_jobs_node_blocks(action: str) -> None:
    farm = Farm(SchedulerConfig(retries=0, retry_delay=0.0, block_after=1, block_for=600.0))
    job = farm.submit("j")
    farm.node("n1")
    farm.dispatch()
    farm.finish(job, 0, "failed")
    assert farm.state(job) == "failed"
    assert set(farm.scheduler.job_detail(job).blocked_nodes) == {"n1"}
    farm.scheduler.job_action([job], action, "admin", farm.now)  # type: ignore[arg-type]
    assert farm.scheduler.job_detail(job).blocked_nodes == {}
    [assignment] = farm.dispatch().assignments
    assert assignment.node == "n1"


def test_leader_restart_keeps_chunks_whose_node_comes_back() -> None:
    before = Farm()
    job = before.submit("j", frames="1-2")
    before.node("n1")
    before.node("n2")
    before.dispatch()
    jobs = list(before.scheduler.jobs.values())
    nodes = list(before.scheduler.nodes.values())
    after = Scheduler(SchedulerConfig(node_timeout=15.0))
    after.load(jobs, nodes, 2000.0)
    assert all(v.state == "offline" for v in after.node_views())
    ref = before.ref(job, 0)
    _, kill = after.node_connected(AgentHello(name="n1", slots=1, running=[held(ref)]), 2001.0)
    assert kill == []
    after.node_heartbeat("n1", 1.0, 1.0, 2014.0)
    after.tick(2016.0)  # n2 never came back
    assert [c.state for c in after.job_detail(job).chunks] == ["assigned", "preempted"]
    assert after.job_detail(job).chunks[1].errors == 0


def test_after_a_restart_chunks_of_unknown_nodes_requeue_at_once() -> None:
    before = Farm()
    job = before.submit("j")
    before.node("n1")
    before.dispatch()
    after = Scheduler(SchedulerConfig())
    changes = after.load(list(before.scheduler.jobs.values()), [], 2000.0)
    assert [c.state for c in after.job_detail(job).chunks] == ["preempted"]
    assert (job, 0) in changes.chunks


def test_a_disconnected_node_gets_no_new_work_but_keeps_its_chunk_for_the_lease(
    farm: Farm,
) -> None:
    job = farm.submit("j", frames="1-2", retries=0)
    farm.node("n1")
    farm.dispatch()
    farm.scheduler.node_disconnected("n1", farm.now)
    farm.node("n2")
    # Chunk 0 stays with n1 (it may reconnect reporting it); chunk 1 goes to n2 only.
    assert [(a.node, a.message.chunk) for a in farm.dispatch().assignments] == [("n2", 1)]
    assert farm.chunk_states(job) == ["assigned", "assigned"]
    assert farm.scheduler.node_views()[0].state == "offline"
    farm.advance(30, silent=("n1",))
    assert farm.chunk_states(job)[0] == "preempted"


def test_a_stopping_node_is_given_nothing_until_its_next_hello(farm: Farm) -> None:
    """Its agent is going: what it ran it reports killed, and those chunks go elsewhere."""
    job = farm.submit("j", frames="1-4", chunk=1)
    farm.node("n1", slots=2)
    assert len(farm.dispatch().assignments) == 2
    farm.scheduler.node_heartbeat("n1", 1.0, 1.0, farm.now, stopping=True)
    farm.finish(job, 0, "killed")
    farm.finish(job, 1, "killed")
    assert farm.dispatch().assignments == []
    farm.node("n2", slots=2)
    assert {a.node for a in farm.dispatch().assignments} == {"n2"}
    assert farm.scheduler.job_detail(job).chunks[0].errors == 0  # no retry used
    farm.node("n1", slots=2)  # started again: its hello
    assert {a.node for a in farm.dispatch().assignments} == {"n1"}
