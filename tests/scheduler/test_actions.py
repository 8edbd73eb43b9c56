"""Operator actions on jobs and chunks, as the console and the CLI apply them."""

from __future__ import annotations

import pytest

from server.scheduler import SchedulerError
from tests.scheduler.paper_farm import Farm


def rendering_job(farm: Farm, frames: str = "1-6", nodes: int = 2) -> str:
    job = farm.submit("j", frames=frames, chunk=1)
    for i in range(nodes):
        farm.node(f"n{i + 1}")
    farm.dispatch()
    return job


def test_pause_lets_running_chunks_finish_and_starts_nothing(farm: Farm) -> None:
    job = rendering_job(farm)
    changes = farm.scheduler.job_action([job], "pause", "bob", farm.now)
    assert changes.kills == []
    assert farm.state(job) == "paused"
    assert any(e.actor == "bob" for e in changes.events)
    farm.finish(job, 0)
    assert farm.dispatch().assignments == []
    assert farm.chunk_states(job)[:3] == ["done", "assigned", "queued"]
    farm.scheduler.job_action([job], "resume", "bob", farm.now)
    assert farm.state(job) == "rendering"
    assert len(farm.dispatch().assignments) == 1


def test_cancel_kills_every_in_flight_chunk_on_every_node(farm: Farm) -> None:
    job = rendering_job(farm, nodes=3)
    changes = farm.scheduler.job_action([job], "cancel", "bob", farm.now)
    assert sorted(k.node for k in changes.kills) == ["n1", "n2", "n3"]
    assert farm.state(job) == "cancelled"
    assert set(farm.chunk_states(job)) == {"cancelled"}
    # Each killed attempt keeps its slot until its node confirms the tree is gone.
    assert farm.running() == {"n1": [(job, 0)], "n2": [(job, 1)], "n3": [(job, 2)]}
    assert farm.dispatch().assignments == []
    # The kill's report frees the slot and changes nothing else.
    farm.finish(job, 0, "killed", node="n1", attempt=1)
    assert farm.running()["n1"] == []
    assert set(farm.chunk_states(job)) == {"cancelled"}
    # Records are kept: attempts show they were killed, and the job can be requeued.
    assert farm.scheduler.job_detail(job).chunks[0].attempts[0].outcome == "killed"
    farm.scheduler.job_action([job], "requeue", "bob", farm.now)
    assert farm.state(job) == "queued"
    assert [a.message.chunk for a in farm.dispatch().assignments] == [0]
    farm.finish(job, 1, "killed", node="n2", attempt=1)
    farm.finish(job, 2, "killed", node="n3", attempt=1)
    again = farm.dispatch().assignments
    assert [(a.message.chunk, a.message.attempt) for a in again] == [(1, 2), (2, 2)]


def test_delete_removes_the_job_and_kills_its_chunks(farm: Farm) -> None:
    job = rendering_job(farm)
    changes = farm.scheduler.job_action([job], "delete", "bob", farm.now)
    assert changes.removed == {job}
    assert job not in changes.jobs
    assert len(changes.kills) == 2
    assert job not in farm.scheduler.jobs
    assert farm.order() == []


def test_an_unknown_id_changes_nothing_at_all(farm: Farm) -> None:
    job = rendering_job(farm)
    with pytest.raises(SchedulerError, match="unknown job nope"):
        farm.scheduler.job_action([job, "nope"], "cancel", "bob", farm.now)
    assert farm.state(job) == "rendering"


def test_hold_and_unhold(farm: Farm) -> None:
    job = rendering_job(farm, nodes=1)
    farm.scheduler.job_action([job], "hold", "bob", farm.now)
    assert farm.state(job) == "holding"
    farm.finish(job, 0)
    assert farm.dispatch().assignments == []
    farm.scheduler.job_action([job], "unhold", "bob", farm.now)
    assert len(farm.dispatch().assignments) == 1


def test_a_paused_job_held_and_un_held_is_still_paused(farm: Farm) -> None:
    """Un-held, a job held while paused started rendering: the hold undid the pause
    (break round 27a). A store reloaded in between keeps it too."""
    job = rendering_job(farm, nodes=1)
    farm.scheduler.job_action([job], "pause", "bob", farm.now)
    farm.scheduler.job_action([job], "hold", "bob", farm.now)
    assert farm.state(job) == "holding"
    from server.store_rows import decode_job, encode_job

    assert decode_job(encode_job(farm.scheduler.jobs[job])).paused_under_hold  # stored
    farm.finish(job, 0)
    farm.scheduler.job_action([job], "unhold", "bob", farm.now)
    assert farm.state(job) == "paused"
    assert farm.dispatch().assignments == []
    farm.scheduler.job_action([job], "resume", "bob", farm.now)
    assert len(farm.dispatch().assignments) == 1
    # Held, then paused: the pause waits under the hold (it was dropped: break round 27c).
    farm.scheduler.job_action([job], "hold", "bob", farm.now)
    farm.scheduler.job_action([job], "pause", "bob", farm.now)
    farm.scheduler.job_action([job], "unhold", "bob", farm.now)
    assert farm.state(job) == "paused"
    farm.scheduler.job_action([job], "resume", "bob", farm.now)
    # Held again, not paused: un-held, it renders.
    farm.scheduler.job_action([job], "hold", "bob", farm.now)
    farm.scheduler.job_action([job], "unhold", "bob", farm.now)
    assert farm.state(job) != "paused"


def test_requeue_renders_done_frames_again_keeping_attempt_history(farm: Farm) -> None:
    job = farm.submit("j", frames="1-2")
    farm.node("n1", slots=2)
    farm.dispatch()
    farm.finish(job, 0)
    farm.finish(job, 1)
    assert farm.state(job) == "done"
    changes = farm.scheduler.job_action([job], "requeue", "bob", farm.now)
    assert farm.state(job) == "queued"
    assert (job, [1], "unassigned") in changes.frames
    farm.dispatch()
    detail = farm.scheduler.job_detail(job)
    assert [c.attempt for c in detail.chunks] == [2, 2]
    assert [len(c.attempts) for c in detail.chunks] == [2, 2]


@pytest.mark.parametrize(("stop", "start"), [("pause", "resume"), ("hold", "unhold")])
def test_requeue_of_a_stopped_job_waits_for_its_operator(farm: Farm, stop: str, start: str) -> None:
    """A requeue renders the frames again, but a paused or held job stays stopped:
    it started rendering at once (break round 27a)."""
    job = farm.submit("j", frames="1-2")
    farm.node("n1", slots=2)
    farm.dispatch()
    farm.finish(job, 0)
    farm.scheduler.job_action([job], stop, "bob", farm.now)  # type: ignore[arg-type]
    stopped = farm.state(job)
    farm.scheduler.job_action([job], "requeue", "bob", farm.now)
    assert farm.state(job) == stopped
    farm.finish(job, 1, "killed", node="n1", attempt=1)  # the requeue stopped it
    assert farm.chunk_states(job) == ["queued", "queued"]
    assert farm.dispatch().assignments == []
    farm.scheduler.job_action([job], start, "bob", farm.now)  # type: ignore[arg-type]
    assert len(farm.dispatch().assignments) == 2


def test_requeue_of_a_job_held_after_its_scouts_renders_the_scouts_again(farm: Farm) -> None:
    job = farm.submit("j", frames="1-4", scout="1")
    farm.node("n1", slots=1)
    farm.dispatch()
    farm.finish(job, 0)
    assert farm.state(job) == "holding"  # the farm's own hold: scouts done
    farm.scheduler.job_action([job], "requeue", "bob", farm.now)
    assert farm.state(job) == "queued"
    assert [a.message.chunk for a in farm.dispatch().assignments] == [0]


def test_retry_failed_requeues_only_failed_chunks(farm: Farm) -> None:
    job = farm.submit("j", frames="1-2", retries=0)
    farm.node("n1", slots=2)
    farm.dispatch()
    farm.finish(job, 0)
    farm.finish(job, 1, "failed")
    assert farm.state(job) == "failed"
    farm.scheduler.job_action([job], "retry-failed", "bob", farm.now)
    assert farm.chunk_states(job) == ["done", "queued"]
    assert farm.state(job) == "rendering"
    farm.dispatch()
    farm.finish(job, 1)
    assert farm.state(job) == "done"


def test_retry_failed_on_a_cancelled_job_leaves_its_cancelled_chunks_cancelled(
    farm: Farm,
) -> None:
    """A bulk "retry failed" over a selection restarted every cancelled job in it,
    and its events said "0 chunks re-queued" and never that it left cancelled."""
    job = farm.submit("j", frames="1-3", retries=0)
    farm.node("n1", slots=1)
    farm.dispatch()
    farm.finish(job, 0, "failed")
    farm.scheduler.job_action([job], "cancel", "bob", farm.now)
    assert farm.chunk_states(job) == ["failed", "cancelled", "cancelled"]
    changes = farm.scheduler.job_action([job], "retry-failed", "bob", farm.now)
    assert farm.chunk_states(job) == ["queued", "cancelled", "cancelled"]
    texts = [(e.text, e.actor) for e in changes.events]
    assert ("job cancelled -> queued", "bob") in texts
    assert ("retry failed: 1 chunks re-queued", "bob") in texts
    farm.dispatch()
    farm.finish(job, 0)
    assert farm.state(job) == "cancelled", "its cancelled chunks were rendered"

    other = farm.submit("k", frames="1-2")
    farm.scheduler.job_action([other], "cancel", "bob", farm.now)
    changes = farm.scheduler.job_action([other], "retry-failed", "bob", farm.now)
    assert farm.state(other) == "cancelled"
    assert farm.chunk_states(other) == ["cancelled", "cancelled"]
    assert [e.text for e in changes.events] == ["retry failed: no failed chunk (job is cancelled)"]
    changes = farm.scheduler.job_action([other], "retry-sync", "bob", farm.now)
    assert farm.state(other) == "cancelled"
    assert [e.text for e in changes.events] == [
        "retry sync: nothing to copy or retry (job is cancelled)"
    ]
    farm.scheduler.job_action([other], "resume", "bob", farm.now)
    assert farm.chunk_states(other) == ["queued", "queued"], "resume renders them again"


def test_retry_sync_reruns_failed_and_unsynced_chunks(farm: Farm) -> None:
    job = farm.submit("j", frames="1-3", retries=0)
    farm.node("n1", slots=3)
    farm.dispatch()
    farm.finish(job, 0)
    farm.finish(job, 1)
    farm.finish(job, 2, "failed")
    # Chunk 1's copy to the sync root went missing (say, the store lost it).
    farm.scheduler.jobs[job].chunks[1].done = ()
    farm.scheduler.job_action([job], "retry-sync", "bob", farm.now)
    assert farm.chunk_states(job) == ["done", "queued", "queued"]


def test_complete_marks_the_job_done_by_hand_and_starts_dependants(farm: Farm) -> None:
    job = rendering_job(farm, nodes=1)
    farm.submit("next", after=[job])
    changes = farm.scheduler.job_action([job], "complete", "bob", farm.now)
    assert len(changes.kills) == 1
    assert farm.state(job) == "done"
    assert [n.kind for n in changes.notifications] == ["done"]
    # The node's one slot is held by the killed attempt until it is confirmed dead.
    assert farm.dispatch().assignments == []
    farm.finish(job, 0, "killed", node="n1", attempt=1)
    assert [a.message.job_id for a in farm.dispatch().assignments] == ["next"]


def test_archive_review_labels(farm: Farm) -> None:
    job = farm.submit("j")
    farm.scheduler.job_action([job], "review", "bob", farm.now)
    assert farm.scheduler.job_view(job).reviewed
    farm.scheduler.job_action([job], "unreview", "bob", farm.now)
    assert not farm.scheduler.job_view(job).reviewed
    farm.scheduler.job_action([job], "archive", "bob", farm.now)
    assert farm.scheduler.job_view(job).archived
    farm.scheduler.job_action([job], "unarchive", "bob", farm.now)
    assert farm.order() == [job]


def test_actions_apply_to_every_selected_job(farm: Farm) -> None:
    a, b = farm.submit("a"), farm.submit("b")
    changes = farm.scheduler.job_action([a, b], "pause", "bob", farm.now)
    assert farm.state(a) == farm.state(b) == "paused"
    assert {a, b} <= changes.jobs


# --- chunk actions -------------------------------------------------------------


def test_chunk_retry_kills_the_running_attempt_and_queues_it_again(farm: Farm) -> None:
    job = rendering_job(farm, nodes=1)
    changes = farm.scheduler.chunk_action(job, [0], "retry", "bob", farm.now)
    assert [(k.node, k.chunk, k.attempt) for k in changes.kills] == [("n1", 0, 1)]
    assert farm.chunk_states(job)[0] == "queued"
    # Never two attempts at once: the next starts once the node confirms the first is dead.
    assert farm.dispatch().assignments == []
    assert farm.scheduler.chunk_view(job, 0).stopping_on == "n1"
    farm.finish(job, 0, "killed", node="n1", attempt=1)
    assert farm.dispatch().assignments[0].message.attempt == 2


def test_chunk_hold_set_failed_set_done(farm: Farm) -> None:
    job = farm.submit("j", frames="1-4")
    farm.scheduler.chunk_action(job, [0], "hold", "bob", farm.now)
    farm.scheduler.chunk_action(job, [1], "set-done", "bob", farm.now)
    changes = farm.scheduler.chunk_action(job, [2], "set-failed", "bob", farm.now)
    assert (job, [3], "failed") in changes.frames
    assert farm.frame_states(job) == {1: "held", 2: "done", 3: "failed", 4: "unassigned"}
    farm.node("n1", slots=4)
    assert [a.message.chunk for a in farm.dispatch().assignments] == [3]
    farm.finish(job, 3)
    # A held chunk waits for the operator; the failed one is stuck until retried.
    assert farm.state(job) == "failed"


def test_excluded_chunks_are_never_rendered_and_the_rest_makes_the_job_done(farm: Farm) -> None:
    job = farm.submit("j", frames="1-3")
    farm.scheduler.chunk_action(job, [1, 2], "exclude", "bob", farm.now)
    farm.node("n1", slots=3)
    assert [a.message.chunk for a in farm.dispatch().assignments] == [0]
    farm.finish(job, 0)
    assert farm.state(job) == "done"
    detail = farm.scheduler.job_detail(job)
    assert [c.state for c in detail.chunks] == ["done", "excluded", "excluded"]
    assert farm.scheduler.job_view(job).stats.frames_total == 1


def test_chunk_action_with_an_unknown_chunk_changes_nothing(farm: Farm) -> None:
    job = farm.submit("j", frames="1-2")
    with pytest.raises(SchedulerError, match="no chunk 9"):
        farm.scheduler.chunk_action(job, [0, 9], "exclude", "bob", farm.now)
    assert farm.chunk_states(job) == ["queued", "queued"]


def test_resume_after_cancel_renders_the_cancelled_chunks(farm: Farm) -> None:
    job = rendering_job(farm, frames="1-3", nodes=1)
    farm.finish(job, 0)
    farm.scheduler.job_action([job], "cancel", "bob", farm.now)
    changes = farm.scheduler.job_action([job], "resume", "bob", farm.now)
    assert farm.chunk_states(job) == ["done", "queued", "queued"]
    assert farm.state(job) == "rendering"
    assert changes.events[-1].actor == "bob"


def test_cancel_greys_out_the_frames_it_stopped(farm: Farm) -> None:
    job = rendering_job(farm, frames="1-2", nodes=1)
    changes = farm.scheduler.job_action([job], "cancel", "bob", farm.now)
    assert (job, [1], "unassigned") in changes.frames
    assert farm.frame_states(job) == {1: "unassigned", 2: "unassigned"}


def test_deleting_a_dependency_holds_the_jobs_waiting_for_it_until_unheld(farm: Farm) -> None:
    farm.submit("sim")
    farm.submit("render", after=["sim"])
    farm.submit("other")
    changes = farm.scheduler.job_action(["sim"], "delete", "bob", farm.now)
    assert farm.state("render") == "holding"
    assert farm.state("other") == "queued"
    assert any("deleted; un-hold it to go on without" in e.text for e in changes.events)
    farm.node("n1", slots=2)
    assert [a.message.job_id for a in farm.dispatch().assignments] == ["other"]
    farm.scheduler.job_action(["render"], "unhold", "bob", farm.now)
    assert [a.message.job_id for a in farm.dispatch().assignments] == ["render"]


def test_done_chunks_show_the_node_that_rendered_them(farm: Farm) -> None:
    job = rendering_job(farm, nodes=1)
    farm.finish(job, 0)
    assert farm.scheduler.chunk_view(job, 0).node == "n1"
    assert farm.scheduler.chunk_view(job, 1).node is None


def test_holding_only_chunks_that_ended_is_refused_and_a_mix_says_what_it_skipped(
    farm: Farm,
) -> None:
    """It logged "hold on chunks 0" and changed nothing, without a word (audit 28a)."""
    job = farm.submit("j", frames="1-3")
    farm.node("n1")
    farm.dispatch()
    farm.finish(job, 0)
    with pytest.raises(SchedulerError, match="chunk 0 of job j ended already: nothing to hold"):
        farm.scheduler.chunk_action(job, [0], "hold", "bob", farm.now)
    changes = farm.scheduler.chunk_action(job, [0, 2], "hold", "bob", farm.now)
    assert changes.events[-1].text == "hold on chunks 0, 2 (no effect on 0: it has ended)"
    assert farm.chunk_states(job) == ["done", "queued", "held"]
