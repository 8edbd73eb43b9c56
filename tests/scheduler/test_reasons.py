"""Why isn't it rendering? Each cause gives its own reason, read at the scheduler's clock."""

from __future__ import annotations

from farmtui.protocol import AgentHello, WaitReason
from farmtui.reasons import reason_line
from server.scheduler import SchedulerConfig
from tests.scheduler.paper_farm import Farm


def reason(farm: Farm, job: str) -> WaitReason | None:
    return farm.scheduler.job_view(job, now=farm.now).reason


def test_a_running_job_with_nothing_waiting_has_no_reason(farm: Farm) -> None:
    farm.node("n1", slots=2)
    job = farm.submit("j", frames="1-2")
    farm.dispatch()
    assert reason(farm, job) is None
    assert farm.scheduler.job_detail(job).job.reason is None


def test_paused_and_held_name_who_did_it(farm: Farm) -> None:
    farm.node("n1")
    job = farm.submit("j", frames="1-4")
    farm.scheduler.job_action([job], "pause", "alice", farm.now)
    assert reason(farm, job) == WaitReason(kind="paused", text="paused by alice")
    farm.scheduler.job_action([job], "resume", "alice", farm.now)
    farm.scheduler.job_action([job], "hold", "bob", farm.now)
    assert reason(farm, job) == WaitReason(kind="held", text="held by bob")


def test_a_job_held_after_its_scout_frames_says_so(farm: Farm) -> None:
    farm.node("n1")
    job = farm.submit("j", frames="1-10", scout="1")
    farm.dispatch()
    farm.finish(job, 0)
    assert farm.state(job) == "holding"
    assert reason(farm, job) == WaitReason(kind="held", text="held (scout frames done)")


def test_dependencies_are_named_with_their_state(farm: Farm) -> None:
    farm.node("n1")
    first = farm.submit("first", frames="1", name="sim")
    job = farm.submit("j", frames="1-4", after=[first])
    found = reason(farm, job)
    assert found == WaitReason(kind="after", text="waiting on sim (queued)")


def test_the_machine_limit(farm: Farm) -> None:
    farm.node("n1", slots=4)
    job = farm.submit("j", frames="1-10", max_running=2)
    farm.dispatch()
    assert reason(farm, job) == WaitReason(kind="limit", text="machine limit 2 reached")


def test_no_node_with_the_tags_names_the_missing_tag(farm: Farm) -> None:
    farm.node("n1", tags=["linux"])
    job = farm.submit("j", frames="1-4", tags=["linux", "gpupool7"])
    farm.dispatch()
    assert reason(farm, job) == WaitReason(kind="tags", text="no node has tag gpupool7")
    assert farm.scheduler.job_view(job, now=farm.now).stats.etr is None


def test_a_node_that_joins_with_the_tag_clears_the_reason_and_announces_the_job(
    farm: Farm,
) -> None:
    job = farm.submit("j", frames="1-4", tags=["gpu"])
    assert reason(farm, job) == WaitReason(kind="tags", text="no node has tag gpu")
    hello = AgentHello(name="g1", slots=1, tags=["gpu"])
    changes, _ = farm.scheduler.node_connected(hello, farm.now)
    # The console learns the reason changed although none of the job's chunks did.
    assert job in changes.jobs
    assert reason(farm, job) is None


def test_every_usable_node_offline_or_disabled(farm: Farm) -> None:
    farm.node("n1")
    farm.node("n2")
    job = farm.submit("j", frames="1-4")
    farm.scheduler.node_disconnected("n1", farm.now)
    farm.scheduler.set_node_enabled("n2", False, "admin", farm.now)
    assert reason(farm, job) == WaitReason(
        kind="offline", text="every node it may use is 1 offline or 1 disabled"
    )


def test_blocked_on_every_node_until_the_first_block_ends() -> None:
    farm = Farm(SchedulerConfig(block_after=1, block_for=600.0, retries=5, retry_delay=1.0))
    farm.node("n1")
    job = farm.submit("j", frames="1")
    farm.dispatch()
    farm.finish(job, 0, outcome="failed")
    farm.advance(2.0)
    farm.dispatch()
    found = reason(farm, job)
    assert found == WaitReason(kind="blocked", text="blocked on 1/1 nodes", until=1000.0 + 600.0)


def test_a_retry_backing_off_gives_its_time_and_attempt() -> None:
    farm = Farm(SchedulerConfig(retries=3, retry_delay=30.0, block_after=0))
    farm.node("n1")
    job = farm.submit("j", frames="1")
    farm.dispatch()
    farm.finish(job, 0, outcome="failed")
    farm.dispatch()
    assert reason(farm, job) == WaitReason(kind="retry", text="retry 1 of 3", until=1000.0 + 30.0)
    farm.advance(31.0)
    farm.dispatch()
    assert reason(farm, job) is None  # it runs again


def test_every_slot_busy(farm: Farm) -> None:
    farm.node("n1", slots=2)
    first = farm.submit("a", frames="1-2")
    job = farm.submit("b", frames="1-2")
    farm.dispatch()
    assert reason(farm, first) is None
    assert reason(farm, job) == WaitReason(kind="slots", text="all 2 slots it may use are busy")
    # Waiting for a slot still gets an estimate once a chunk has a time.


def test_a_failed_job_counts_its_chunks_out_of_retries() -> None:
    farm = Farm(SchedulerConfig(retries=0, block_after=0))
    farm.node("n1")
    job = farm.submit("j", frames="1")
    farm.dispatch()
    farm.finish(job, 0, outcome="failed")
    assert farm.state(job) == "failed"
    assert reason(farm, job) == WaitReason(kind="failed", text="1 chunk out of retries")


def test_the_post_job_script_waits_for_the_renders(farm: Farm) -> None:
    farm.node("n1")
    job = farm.submit("j", frames="1", post_job=["true"])
    farm.dispatch()
    found = reason(farm, job)
    assert found == WaitReason(kind="stage", text="post-job script waits for the renders")


def test_an_operators_block_holds_until_lifted_by_name_and_survives_retries() -> None:
    farm = Farm(SchedulerConfig(retries=0, block_after=0))
    farm.node("bad")
    job = farm.submit("j", frames="1-2")
    farm.dispatch()
    farm.finish(job, 0, outcome="failed")
    changes = farm.scheduler.block_node(job, "bad", True, "wrangler", farm.now)
    assert any("node bad blocked for this job" in e.text for e in changes.events)
    farm.finish(job, 1)
    farm.scheduler.job_action([job], "retry-failed", "wrangler", farm.now)
    farm.advance(3600.0)
    farm.dispatch()
    assert farm.running() == {"bad": []}
    found = reason(farm, job)
    assert found is not None
    # Till lifted, not till the year its record says (which read as a time passed today).
    assert found == WaitReason(kind="blocked", text="blocked on 1/1 nodes until unblocked")
    assert reason_line(found, farm.now) == "blocked on 1/1 nodes until unblocked"
    assert farm.scheduler.job_view(job).blocked_nodes.keys() == {"bad"}
    farm.scheduler.block_node(job, "bad", False, "wrangler", farm.now)
    farm.dispatch()
    assert farm.running() == {"bad": [(job, 0)]}
    assert farm.scheduler.job_view(job).blocked_nodes == {}
