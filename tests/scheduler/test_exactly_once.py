"""Exactly once, never on two nodes: the scheduler's half of the guarantees.

Reports that outlive a lost link are credited, a chunk told to stop keeps its
slot until its node confirms the tree is dead, and the leader's own stalls are
not held against its nodes.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

from farmtui.protocol import AgentHello, ChunkFinished, ChunkRef, JobSpec
from server.model import Changes
from server.scheduler import NodeHeld, Scheduler, SchedulerConfig
from server.store import Store
from tests.scheduler.paper_farm import Farm, held


def _hello(
    name: str, *, running: Sequence[ChunkRef] = (), finished: Sequence[ChunkRef] = ()
) -> AgentHello:
    return AgentHello(
        name=name, slots=1, running=[held(ref) for ref in running], finished=list(finished)
    )


def _attempts(farm: Farm, job: str, chunk: int) -> list[tuple[int, str]]:
    return [(a.number, a.outcome) for a in farm.scheduler.job_detail(job).chunks[chunk].attempts]


def test_a_chunk_that_finished_while_the_link_was_down_is_credited_not_rerun(farm: Farm) -> None:
    job = farm.submit("j", frames="1")
    farm.node("n1")
    farm.dispatch()
    ref = farm.ref(job, 0)
    farm.scheduler.node_disconnected("n1", farm.now)
    # It reconnects: the chunk is over, its report still in the agent's outbox.
    changes, stale = farm.scheduler.node_connected(_hello("n1", finished=[ref]), farm.now)
    assert stale == []
    assert farm.chunk_states(job) == ["assigned"], "kept for the report that follows"
    assert farm.dispatch().assignments == []
    farm.finish(job, 0, node="n1", attempt=1)
    assert farm.chunk_states(job) == ["done"]
    assert _attempts(farm, job, 0) == [(1, "done")]


def test_a_leader_restart_credits_reports_from_the_outbox(tmp_path: Path) -> None:
    before = Farm()
    job = before.submit("j", frames="1-2")
    before.node("n1", slots=2)
    changes = before.dispatch()
    store = Store(tmp_path / "farm.db")
    everything = Changes(jobs={job}, nodes={"n1"})
    everything.chunks = changes.chunks
    store.save(everything, before.scheduler)
    refs = [before.ref(job, 0), before.ref(job, 1)]
    store.close()
    # The leader died; on the node chunk 0 finished, chunk 1 still runs.
    store = Store(tmp_path / "farm.db")
    jobs, nodes = store.load()
    after = Scheduler(SchedulerConfig())
    after.load(jobs, nodes, 2000.0)
    hello = AgentHello(name="n1", slots=2, running=[held(refs[1])], finished=[refs[0]])
    _, stale = after.node_connected(hello, 2001.0)
    assert stale == []
    report = ChunkFinished(job_id=job, chunk=0, attempt=1, outcome="done", exit_status="0")
    after.chunk_finished("n1", report, 2002.0)
    states = [c.state for c in after.job_detail(job).chunks]
    assert states == ["done", "assigned"]
    assert after.dispatch(2003.0).assignments == []


def test_a_node_back_without_its_chunk_loses_it_without_using_a_retry(farm: Farm) -> None:
    job = farm.submit("j", frames="1", retries=0)
    farm.node("n1")
    farm.dispatch()
    farm.scheduler.node_connected(_hello("n1"), farm.now)
    assert farm.chunk_states(job) == ["preempted"]
    assert farm.scheduler.job_detail(job).chunks[0].errors == 0
    assert farm.dispatch().assignments[0].message.attempt == 2


def test_a_stopping_attempt_is_killed_again_after_a_reconnect_and_fences_its_chunk(
    farm: Farm,
) -> None:
    job = farm.submit("j", frames="1")
    farm.node("n1")
    farm.node("n2")
    farm.dispatch()
    old = farm.ref(job, 0)
    node = farm.scheduler.job_detail(job).chunks[0].node
    farm.scheduler.chunk_action(job, [0], "retry", "bob", farm.now)
    # The kill was lost with the link; the agent comes back still running it.
    farm.scheduler.node_disconnected(node, farm.now)
    _, stale = farm.scheduler.node_connected(
        AgentHello(name=node, slots=1, running=[held(old)]), farm.now
    )
    assert stale == [old]
    assert farm.dispatch().assignments == [], "no second attempt while the first may live"
    farm.finish(job, 0, "killed", node=node, attempt=1)
    [again] = farm.dispatch().assignments
    assert again.message.attempt == 2


def test_a_stopping_attempt_the_node_no_longer_has_is_over(farm: Farm) -> None:
    job = farm.submit("j", frames="1")
    farm.node("n1")
    farm.dispatch()
    farm.scheduler.chunk_action(job, [0], "retry", "bob", farm.now)
    farm.scheduler.node_connected(_hello("n1"), farm.now)
    assert farm.scheduler.chunk_view(job, 0).stopping_on is None
    assert farm.dispatch().assignments[0].message.attempt == 2


def test_an_unknown_attempt_a_node_runs_holds_a_slot_until_it_is_dead(farm: Farm) -> None:
    job = farm.submit("j", frames="1-2")
    farm.node("n1")
    ghost = ChunkRef(job_id="gone", chunk=0, attempt=3)
    _, stale = farm.scheduler.node_connected(_hello("n1", running=[ghost]), farm.now)
    assert stale == [ghost]
    assert farm.dispatch().assignments == [], "its one slot is still busy"
    report = ChunkFinished(job_id="gone", chunk=0, attempt=3, outcome="killed")
    farm.scheduler.chunk_finished("n1", report, farm.now)
    assert len(farm.dispatch().assignments) == 1
    assert farm.chunk_states(job)[0] == "assigned"


def test_deleting_a_running_job_keeps_the_slot_until_the_node_confirms(farm: Farm) -> None:
    job = farm.submit("j", frames="1")
    other = farm.submit("k", frames="1")
    farm.node("n1")
    farm.dispatch()
    farm.scheduler.job_action([job], "delete", "bob", farm.now)
    assert farm.dispatch().assignments == []
    report = ChunkFinished(job_id=job, chunk=0, attempt=1, outcome="killed")
    farm.scheduler.chunk_finished("n1", report, farm.now)
    assert [a.message.job_id for a in farm.dispatch().assignments] == [other]


def test_a_lost_node_frees_its_slots_only_after_node_timeout() -> None:
    farm = Farm(SchedulerConfig(node_timeout=10.0))
    job = farm.submit("j", frames="1-2")
    farm.node("n1", slots=2)
    farm.node("n2")
    farm.dispatch()
    farm.scheduler.chunk_action(job, [0], "retry", "bob", farm.now)
    farm.advance(5, silent=("n1",))
    assert farm.dispatch().assignments == []
    farm.advance(6, silent=("n1",))
    assert farm.scheduler.config.agent_lease < 10.0
    assert farm.running()["n1"] == []
    assigned = farm.dispatch().assignments
    assert sorted((a.node, a.message.chunk) for a in assigned) == [("n2", 0)]


def test_the_leaders_own_stall_is_not_held_against_its_nodes() -> None:
    farm = Farm(SchedulerConfig(node_timeout=10.0))
    job = farm.submit("j", frames="1")
    farm.node("n1")
    farm.dispatch()
    # The loop was blocked for 14 s: the heartbeats wait unread in the socket.
    farm.now += 14
    farm.scheduler.tick(farm.now, stalled=14)
    assert farm.chunk_states(job) == ["assigned"]
    assert farm.scheduler.node_views()[0].state == "online"
    # A node that is really silent is still lost, node_timeout after the stall.
    farm.advance(11, silent=("n1",))
    assert farm.chunk_states(job) == ["preempted"]


@pytest.mark.parametrize(("agent_id", "lost"), [("", False), ("another-machine", True)])
def test_a_node_whose_hello_waits_in_the_queue_is_not_lost_and_its_finished_chunk_is_credited(
    agent_id: str, lost: bool
) -> None:
    farm = Farm(SchedulerConfig(node_timeout=10.0))
    job = farm.submit("j", frames="1")
    farm.node("n1")
    farm.dispatch()
    ref = farm.ref(job, 0)
    farm.scheduler.node_disconnected("n1", farm.now)
    # The leader restarted; n1's hello, listing the chunk as finished, is read but
    # waits behind a farm's resent reports for longer than node_timeout.
    farm.now += 11
    farm.scheduler.tick(farm.now, heard=[("n1", agent_id)])
    if lost:  # another machine with its name keeps nothing from moving
        assert farm.chunk_states(job) == ["preempted"]
        return
    assert farm.chunk_states(job) == ["assigned"]
    farm.scheduler.node_connected(_hello("n1", finished=[ref]), farm.now)
    farm.finish(job, 0, node="n1", attempt=1)
    assert _attempts(farm, job, 0) == [(1, "done")], "credited, not rendered again"


def test_a_node_the_busy_leader_could_not_hear_yet_is_given_the_time_it_was_busy() -> None:
    """After a restart a leader busy with a farm's reconnections has not even accepted
    some nodes' connections: that silence is the leader's, not theirs."""
    farm = Farm(SchedulerConfig(node_timeout=10.0))
    job = farm.submit("j", frames="1-2")
    farm.node("n1")
    farm.node("n2")
    farm.dispatch()
    for name in ("n1", "n2"):
        farm.scheduler.node_disconnected(name, farm.now)
    # 11 s, of which the leader's ticks came 3 s late in all: n1 not heard since start-up.
    farm.now += 11
    farm.scheduler.tick(farm.now, unreached=["n1"], busy=3.0)
    nodes = farm.scheduler.nodes
    assert nodes["n1"].running, "n1 kept its chunk"
    assert not nodes["n2"].running, "n2, heard since and silent, was lost"
    assert sorted(farm.chunk_states(job)) == ["assigned", "preempted"]


def test_reload_goes_back_to_the_store_and_keeps_the_live_links(tmp_path: Path) -> None:
    farm = Farm()
    farm.node("n1")
    store = Store(tmp_path / "farm.db")
    store.save(Changes(nodes={"n1"}), farm.scheduler)
    farm.submit("ghost")  # never committed
    jobs, nodes = store.load()
    farm.scheduler.reload(jobs, nodes, farm.now)
    assert farm.scheduler.jobs == {}
    assert farm.scheduler.node_views()[0].state == "online"


def test_an_idempotency_key_finds_the_job_it_made(farm: Farm) -> None:
    farm.scheduler.submit("j1", JobSpec(frames="1", argv=["render"]), "alice", farm.now, key="k1")
    assert farm.scheduler.job_for_key("alice", "k1") == "j1"
    assert farm.scheduler.job_for_key("bob", "k1") is None
    farm.scheduler.job_action(["j1"], "delete", "alice", farm.now)
    assert farm.scheduler.job_for_key("alice", "k1") is None


def _failed_copy(farm: Farm, job: str) -> str:
    farm.dispatch()
    node = farm.scheduler.job_detail(job).chunks[0].node
    assert node is not None
    report = ChunkFinished(
        job_id=job,
        chunk=0,
        attempt=1,
        outcome="failed",
        exit_status="0",
        reason="copy to the sync root failed: disk full",
        kept_staged=True,
    )
    farm.scheduler.chunk_finished(node, report, farm.now)
    return node


def test_retry_sync_copies_the_kept_output_on_its_node_without_a_render(farm: Farm) -> None:
    job = farm.submit("j", frames="1", retries=0)
    farm.node("n1")
    farm.node("n2")
    node = _failed_copy(farm, job)
    assert farm.chunk_states(job) == ["failed"]
    farm.scheduler.job_action([job], "retry-sync", "bob", farm.now)
    [again] = farm.dispatch().assignments
    assert (again.node, again.message.sync_from, again.message.attempt) == (node, 1, 2)


def test_kept_output_on_a_node_that_is_gone_is_rendered_again_and_discarded() -> None:
    farm = Farm(SchedulerConfig(node_timeout=10.0))
    job = farm.submit("j", frames="1", retries=0)
    farm.node("n1")
    node = _failed_copy(farm, job)
    farm.scheduler.node_disconnected(node, farm.now)
    farm.node("n2")
    said = farm.scheduler.job_action([job], "retry-sync", "bob", farm.now).events[-1].text
    assert said.endswith("(0 copy their staged output, 1 wait for their offline node)")
    assert farm.dispatch().assignments == [], "a dropped link may come back"
    farm.advance(11)
    changes = farm.dispatch()
    [again] = changes.assignments
    assert (again.node, again.message.sync_from) == ("n2", 0)
    assert [(d.node, d.attempt) for d in changes.discards] == [(node, 1)]


def test_kept_output_waits_for_its_node_after_a_leader_restart(tmp_path: Path) -> None:
    """Every node is offline after a restart until its hello: the first dispatch pass
    rendered such a chunk again on a node back first, and had the holder delete it."""
    farm = Farm(SchedulerConfig(node_timeout=10.0))
    job = farm.submit("j", frames="1", retries=1)
    farm.node("n1")
    _failed_copy(farm, job)  # a retry is due: it copies the kept output on n1
    farm.node("n2")
    store = Store(tmp_path / "farm.db")
    store.save(Changes(jobs={job}, chunks={(job, 0)}, nodes={"n1", "n2"}), farm.scheduler)
    jobs, nodes = store.load()
    restarted = Farm(SchedulerConfig(node_timeout=10.0))
    restarted.now = farm.now + 60.0  # past the retry's back-off
    restarted.scheduler.load(jobs, nodes, restarted.now)
    restarted.node("n2")
    assert restarted.dispatch().assignments == []
    restarted.advance(5.0)
    restarted.node("n1")
    changes = restarted.dispatch()
    [again] = changes.assignments
    assert (again.node, again.message.sync_from, again.message.attempt) == ("n1", 1, 2)
    assert changes.discards == []


def test_kept_output_of_a_node_that_never_comes_back_is_rendered_after_node_timeout(
    tmp_path: Path,
) -> None:
    farm = Farm(SchedulerConfig(node_timeout=10.0))
    job = farm.submit("j", frames="1", retries=1)
    farm.node("n1")
    _failed_copy(farm, job)
    store = Store(tmp_path / "farm.db")
    store.save(Changes(jobs={job}, chunks={(job, 0)}, nodes={"n1"}), farm.scheduler)
    jobs, nodes = store.load()
    restarted = Farm(SchedulerConfig(node_timeout=10.0))
    restarted.now = farm.now + 60.0
    restarted.scheduler.load(jobs, nodes, restarted.now)
    restarted.node("n2")
    assert restarted.dispatch().assignments == []
    restarted.advance(11.0)
    [again] = restarted.dispatch().assignments
    assert (again.node, again.message.sync_from) == ("n2", 0)


def test_kept_output_nobody_waits_for_is_discarded_when_its_node_says_hello() -> None:
    """The discard sent while the node was away was lost with its link: the output
    stayed on the node's disk (likely the full one) for good."""
    farm = Farm(SchedulerConfig(node_timeout=10.0))
    gone = farm.submit("gone", frames="1", retries=1)
    waiting = farm.submit("waiting", frames="1", retries=1)
    farm.node("n1")
    _failed_copy(farm, gone)
    _failed_copy(farm, waiting)
    farm.scheduler.node_disconnected("n1", farm.now)
    farm.scheduler.job_action([gone], "delete", "bob", farm.now)
    kept = [ChunkRef(job_id=job, chunk=0, attempt=1) for job in (gone, waiting)]
    later = ChunkRef(job_id="reported", chunk=0, attempt=1)  # its report is still to come
    hello = AgentHello(name="n1", slots=1, kept=[*kept, later], finished=[later])
    changes, _ = farm.scheduler.node_connected(hello, farm.now)
    assert [(d.node, d.job_id, d.attempt) for d in changes.discards] == [("n1", gone, 1)]


def test_a_copy_of_kept_output_taken_away_leaves_the_output_kept() -> None:
    """The copy's AssignChunk was lost with the link: the hello preempted the copy and,
    the chunk no longer naming the holder, had the holder delete the output."""
    farm, job = _retry_syncing()
    farm.scheduler.node_disconnected("n1", farm.now)
    kept = [ChunkRef(job_id=job, chunk=0, attempt=1)]
    changes, _ = farm.scheduler.node_connected(AgentHello(name="n1", slots=1, kept=kept), farm.now)
    assert changes.discards == []
    [again] = farm.dispatch().assignments
    assert (again.node, again.message.sync_from, again.message.attempt) == ("n1", 1, 3)
    # This copy began (it took the output into its own folder, kept) and its agent was
    # killed: the hello lists the output under the copy's attempt, copied from there.
    farm.scheduler.node_disconnected("n1", farm.now)
    moved = [ChunkRef(job_id=job, chunk=0, attempt=3)]
    changes, _ = farm.scheduler.node_connected(AgentHello(name="n1", slots=1, kept=moved), farm.now)
    assert changes.discards == []
    [resumed] = farm.dispatch().assignments
    assert (resumed.node, resumed.message.sync_from, resumed.message.attempt) == ("n1", 3, 4)
    # Its node came back without it at all (the staging folder lost): rendered again.
    farm.scheduler.node_disconnected("n1", farm.now)
    farm.scheduler.node_connected(AgentHello(name="n1", slots=1), farm.now)
    [render] = farm.dispatch().assignments
    assert (render.node, render.message.sync_from, render.message.attempt) == ("n1", 0, 5)


def _retry_syncing(frames: str = "1") -> tuple[Farm, str]:
    """A farm whose node n1 was given a retry sync's copy: attempt 2 of chunk 0, copying
    what attempt 1 kept when its copy into the sync root failed."""
    farm = Farm(SchedulerConfig(node_timeout=10.0))
    job = farm.submit("j", frames=frames, retries=0)
    farm.node("n1")
    _failed_copy(farm, job)
    farm.scheduler.job_action([job], "retry-sync", "bob", farm.now)
    [copy] = farm.dispatch().assignments
    assert (copy.node, copy.message.sync_from, copy.message.attempt) == ("n1", 1, 2)
    return farm, job


def _lost_while_copying(frames: str = "1") -> tuple[Farm, str]:
    """A farm whose node n1 was lost (past node_timeout) during a retry sync's copy
    (``_retry_syncing``): the chunk is preempted."""
    farm, job = _retry_syncing(frames)
    farm.scheduler.node_disconnected("n1", farm.now)
    farm.scheduler.node_lost("n1", farm.now + 11.0)
    assert farm.chunk_states(job)[0] == "preempted"
    return farm, job


def test_a_node_lost_during_a_retry_sync_copies_its_output_if_back_before_the_chunk_moves() -> None:
    """Lost (past node_timeout) in the middle of a retry sync's copy, the node came back
    with the output still kept while its chunk waited for a slot: the leader had it
    deleted and rendered the chunk again, on that very node (break round 30b)."""
    farm, job = _lost_while_copying()
    kept = [ChunkRef(job_id=job, chunk=0, attempt=2)]
    changes, _ = farm.scheduler.node_connected(AgentHello(name="n1", slots=1, kept=kept), farm.now)
    assert changes.discards == []
    [again] = farm.dispatch().assignments
    assert (again.node, again.message.sync_from, again.message.attempt) == ("n1", 2, 3)
    # Disabled meanwhile, it copies nothing (30e: said so, then rendered elsewhere).
    farm, job = _lost_while_copying()
    farm.scheduler.set_node_enabled("n1", False, "bob", farm.now)
    changes, _ = farm.scheduler.node_connected(AgentHello(name="n1", slots=1, kept=kept), farm.now)
    assert [(d.node, d.attempt) for d in changes.discards] == [("n1", 2)]
    assert not any("is back with the output" in event.text for event in changes.events)


def test_a_hello_cannot_claim_output_it_was_not_copying_when_it_was_lost() -> None:
    """Break round 30c: the first version adopted any kept output a hello named for a
    pending chunk's attempt number, so output kept from before an operator's requeue
    was copied in place of the render asked for, a node claimed output another node
    rendered, and one claimed chunks never rendered, past the job's tags."""
    farm, job = _lost_while_copying()
    farm.scheduler.job_action([job], "requeue", "bob", farm.now)  # render it all again
    kept = [ChunkRef(job_id=job, chunk=0, attempt=2)]
    changes, _ = farm.scheduler.node_connected(AgentHello(name="n1", slots=1, kept=kept), farm.now)
    assert [(d.node, d.attempt) for d in changes.discards] == [("n1", 2)]
    [render] = farm.dispatch().assignments
    assert (render.node, render.message.sync_from) == ("n1", 0)

    other, job = _lost_while_copying(frames="1-3")
    # Another node names n1's copy, and chunks never rendered (attempt 0).
    lies = [ChunkRef(job_id=job, chunk=0, attempt=2), ChunkRef(job_id=job, chunk=1, attempt=0)]
    changes, _ = other.scheduler.node_connected(AgentHello(name="liar", slots=1, kept=lies), 0)
    assert sorted((d.node, d.chunk) for d in changes.discards) == [("liar", 0), ("liar", 1)]
    assert not any(
        e.text.startswith("chunk") and "is back with the output" in e.text for e in changes.events
    )


def test_a_lost_nodes_kept_output_is_deleted_once_its_chunk_started_elsewhere() -> None:
    farm, job = _lost_while_copying()
    farm.node("n2")
    [render] = farm.dispatch().assignments
    assert (render.node, render.message.sync_from, render.message.attempt) == ("n2", 0, 3)
    kept = [ChunkRef(job_id=job, chunk=0, attempt=2)]
    changes, _ = farm.scheduler.node_connected(AgentHello(name="n1", slots=1, kept=kept), farm.now)
    assert [(d.node, d.attempt) for d in changes.discards] == [("n1", 2)]


def test_a_deleted_jobs_id_stays_taken_while_its_attempt_holds_a_slot(farm: Farm) -> None:
    job = farm.submit("j", frames="1")
    farm.node("n1")
    farm.dispatch()
    farm.scheduler.job_action([job], "delete", "bob", farm.now)
    assert farm.scheduler.id_in_use(job)
    report = ChunkFinished(job_id=job, chunk=0, attempt=1, outcome="killed")
    farm.scheduler.chunk_finished("n1", report, farm.now)
    assert not farm.scheduler.id_in_use(job)


def test_a_node_name_held_by_another_agent_is_refused_until_that_node_is_lost() -> None:
    farm = Farm(SchedulerConfig(node_timeout=10.0))
    job = farm.submit("j", frames="1")
    first = AgentHello(name="n1", slots=1, agent_id="aaa")
    farm.scheduler.node_connected(first, farm.now)
    farm.dispatch()
    # The agent died (its link closed); a new one, with other state, takes the name.
    farm.scheduler.node_disconnected("n1", farm.now)
    other = AgentHello(name="n1", slots=1, agent_id="bbb")
    with pytest.raises(NodeHeld, match="held by another agent"):
        farm.scheduler.node_connected(other, farm.now)
    assert farm.chunk_states(job) == ["assigned"], "its tree may still be dying"
    # The same agent, restarted with its state (it killed its leftovers first), is welcome.
    farm.scheduler.node_connected(first, farm.now)
    farm.scheduler.node_disconnected("n1", farm.now)
    farm.advance(11, silent=("n1",))
    assert farm.chunk_states(job) == ["preempted"]
    farm.scheduler.node_connected(other, farm.now)
    assert farm.dispatch().assignments[0].node == "n1"


def _node_with_a_chunk(tmp_path: Path, node_timeout: float = 10.0) -> tuple[Farm, Store, str]:
    """A farm whose node n1 runs a job's one chunk, as committed to a store."""
    store = Store(tmp_path / "farm.db")
    farm = Farm(SchedulerConfig(node_timeout=node_timeout))
    job = farm.submit("j", frames="1", retries=0)
    farm.node("n1")
    farm.dispatch()
    store.save(Changes(jobs={job}, chunks={(job, 0)}, nodes={"n1"}), farm.scheduler)
    return farm, store, job


def _restart(farm: Farm, store: Store, down: float, config: SchedulerConfig | None = None) -> Farm:
    """The leader dies and starts again ``down`` seconds later from what ``store`` holds
    (with ``config``, another leader.toml)."""
    jobs, nodes = store.load()
    restarted = Farm(config or farm.scheduler.config)
    restarted.now = farm.now + down
    restarted.scheduler.load(jobs, nodes, restarted.now)
    return restarted


def test_a_dead_node_is_judged_lost_however_often_the_leader_restarts(tmp_path: Path) -> None:
    """A restarted leader counted a node's silence from nothing: restarting more often
    than ``node_timeout``, it never moved a dead node's chunk. The silence is stored in
    steps as it grows, and a restart goes on counting it; the time with no leader at all
    (when no node could reach one) is never held against a node."""
    farm, store, job = _node_with_a_chunk(tmp_path)
    farm.scheduler.node_disconnected("n1", farm.now)  # it died
    uptime = 0.0
    while farm.chunk_states(job) == ["assigned"]:
        assert uptime < 30.0, "the chunk never moved"
        for _ in range(6):  # six seconds of this leader's life, then kill -9
            store.save(farm.advance(1.0), farm.scheduler)
            uptime += 1.0
        farm = _restart(farm, store, down=120.0)
    assert 10.0 <= uptime <= 12.0 + 6.0, uptime
    farm.node("n2")
    [moved] = farm.dispatch().assignments
    assert (moved.node, moved.message.attempt) == ("n2", 2)


def test_a_healthy_nodes_silence_is_never_written(tmp_path: Path) -> None:
    """Heartbeats commit nothing (issue 10): a node heard every few seconds is not
    written for its silence, nor one that holds no chunk; one gone for good with a
    chunk is written a bounded number of times."""
    farm = Farm(SchedulerConfig(node_timeout=60.0))
    farm.node("gone", slots=1)
    job = farm.submit("j", frames="1", retries=0)
    farm.dispatch()
    farm.node("n1")
    farm.node("idle-gone")
    farm.scheduler.node_disconnected("gone", farm.now)
    farm.scheduler.node_disconnected("idle-gone", farm.now)
    written = []
    for _ in range(600):
        changes = farm.advance(1.0, silent=("gone",))
        assert "n1" not in changes.nodes
        assert "idle-gone" not in changes.nodes
        written += [name for name in changes.nodes if name == "gone"]
    assert farm.chunk_states(job) != ["assigned"], "the dead node's chunk never moved"
    assert 10 <= len(written) <= 25, len(written)


def test_a_node_back_after_a_long_silence_keeps_its_chunk_through_a_restart(
    tmp_path: Path,
) -> None:
    """Its hello stores that it is heard again, before its Welcome grants it a lease: a
    leader killed right after must not credit the silence before it, or the chunk moved
    within seconds while the node's lease still ran (two nodes at once)."""
    farm, store, job = _node_with_a_chunk(tmp_path)
    farm.scheduler.node_disconnected("n1", farm.now)
    for _ in range(8):
        store.save(farm.advance(1.0), farm.scheduler)
    hello = AgentHello(name="n1", slots=1, running=[farm.held(job, 0)])
    changes, _ = farm.scheduler.node_connected(hello, farm.now)
    store.save(changes, farm.scheduler)  # committed: then its Welcome, and a lease
    farm = _restart(farm, store, down=1.0)
    for _ in range(6):
        farm.advance(1.0)
    assert farm.chunk_states(job) == ["assigned"]


def test_a_node_silent_with_its_link_open_is_not_credited_its_silence(tmp_path: Path) -> None:
    """Only a node whose link closed gets no lease: one silent with its link open (a
    heartbeat late, a frozen agent) is judged by the restarted leader from scratch."""
    farm, _, job = _node_with_a_chunk(tmp_path)
    written = [farm.advance(1.0, silent=("n1",)).nodes for _ in range(8)]
    assert not any(written)
    assert farm.scheduler.nodes["n1"].unheard == 0.0
    assert farm.chunk_states(job) == ["assigned"]


@pytest.mark.parametrize("planted", [-5.0, 1e308, 11.5])
def test_a_stored_silence_that_was_never_written_gives_no_credit(
    tmp_path: Path, planted: float
) -> None:
    """Only what ``_note_silence`` writes (0 to a step past node_timeout) is credited: anything
    else (a store edited by hand, a node_timeout lowered since) counts as no silence."""
    farm, store, job = _node_with_a_chunk(tmp_path)
    farm.scheduler.nodes["n1"].unheard = planted
    store.save(Changes(nodes={"n1"}), farm.scheduler)
    farm = _restart(farm, store, down=1.0)
    assert farm.scheduler.nodes["n1"].unheard == 0.0
    farm.advance(9.0)
    assert farm.chunk_states(job) == ["assigned"]


@pytest.mark.parametrize("silent", [0.2, 4.5])
def test_a_leader_with_a_shorter_node_timeout_waits_out_the_lease_an_earlier_one_granted(
    tmp_path: Path, silent: float
) -> None:
    """Restarted with node_timeout 3 where it was 10 (or a standby configured so), the
    leader judged a node silent since before the restart by the new timeout, while the
    lease the old one granted (6 s) still ran: its chunk on two nodes at once."""
    farm, store, job = _node_with_a_chunk(tmp_path)
    farm.scheduler.node_disconnected("n1", farm.now)  # its link cut: the lease runs on
    cut = farm.now
    steps = round(silent / 0.1)
    for _ in range(steps):
        store.save(farm.advance(0.1), farm.scheduler)
    farm = _restart(farm, store, down=0.5, config=SchedulerConfig(node_timeout=3.0))
    while farm.chunk_states(job) == ["assigned"]:
        farm.advance(0.1)
    # Lost only once 10 s of its silence passed: the old lease long over.
    assert farm.now - cut >= 10.0
