"""Render time management: limits per chunk or per frame, on-timeout responses, auto timeout."""

from __future__ import annotations

import msgspec
import pytest

from farmtui.protocol import JobPatch, Timeouts
from server.scheduler import SchedulerConfig
from tests.scheduler.paper_farm import Farm


def timed_out(farm: Farm, on_timeout: str, **fields: object) -> str:
    job = farm.submit("j", frames="1-2", timeouts={"max_render": 60.0, "on_timeout": on_timeout})
    farm.submit("next", after=[job])
    farm.node("n1")
    farm.dispatch()
    farm.finish(job, 0, "timeout", timeout_kind="max_render", took=60.0)
    return job


def test_limits_reach_the_agent_resolved_for_the_chunk(farm: Farm) -> None:
    farm.submit(
        "j",
        frames="1-5",
        chunk=3,
        timeouts={"min_render": 2.0, "max_render": 10.0, "max_start": 30.0, "per_frame": True},
    )
    farm.node("n1", slots=2)
    limits = [a.message.timeouts for a in farm.dispatch().assignments]
    # Per frame: the 3-frame chunk gets three times the limits, the 2-frame chunk twice.
    assert [(t.min_render, t.max_render, t.max_start) for t in limits] == [
        (6.0, 30.0, 30.0),
        (4.0, 20.0, 30.0),
    ]
    assert limits[0].on_timeout == "error"


def test_on_timeout_requeue_retries_without_an_error(farm: Farm) -> None:
    job = timed_out(farm, "requeue")
    view = farm.scheduler.chunk_view(job, 0)
    assert (view.state, view.errors, view.attempts[0].outcome) == ("queued", 0, "timeout")
    assert farm.dispatch().assignments[0].message.chunk == 0


def test_on_timeout_error_counts_an_error_and_backs_off(farm: Farm) -> None:
    job = timed_out(farm, "error")
    view = farm.scheduler.chunk_view(job, 0)
    assert (view.state, view.errors) == ("waiting-retry", 1)


def test_on_timeout_fail_fails_the_chunk_without_retry(farm: Farm) -> None:
    job = timed_out(farm, "fail")
    view = farm.scheduler.chunk_view(job, 0)
    assert (view.state, view.errors) == ("failed", 1)
    assert farm.frame_states(job)[1] == "failed"


def test_on_timeout_complete_counts_as_done_and_dependants_start(farm: Farm) -> None:
    job = timed_out(farm, "complete")
    assert farm.scheduler.chunk_view(job, 0).state == "done"
    farm.dispatch()
    farm.finish(job, 1, "timeout", timeout_kind="max_render")
    assert farm.state(job) == "done"
    assert [a.message.job_id for a in farm.dispatch().assignments] == ["next"]


def test_on_timeout_notify_tells_the_owner_and_leaves_the_chunk_running(farm: Farm) -> None:
    job = farm.submit("j", timeouts={"max_render": 60.0, "on_timeout": "notify"})
    farm.node("n1")
    farm.dispatch()
    changes = farm.scheduler.chunk_timed_out("n1", job, 0, 1, "max_render", 61.0, farm.now)
    assert [n.kind for n in changes.notifications] == ["timeout"]
    assert changes.events[0].level == "warn"
    assert changes.kills == []
    assert not changes.chunks
    assert farm.chunk_states(job) == ["assigned"]


@pytest.mark.parametrize("per_frame", [False, True])
def test_auto_timeout_after_the_sample_size(per_frame: bool) -> None:
    farm = Farm()
    job = farm.submit(
        "j",
        frames="1-12",
        chunk=2,
        timeouts={
            "auto": True,
            "auto_min_chunks": 2,
            "auto_multiplier": 3.0,
            "per_frame": per_frame,
        },
    )
    farm.node("n1", slots=3)
    first = farm.dispatch().assignments
    assert all(a.message.timeouts.max_render is None for a in first)
    farm.finish(job, 0, took=10.0)
    assert farm.dispatch().assignments[0].message.timeouts.max_render is None  # 1 < 2
    changes = farm.finish(job, 1, took=30.0)
    # The limit became known: the chunks still running get it too.
    assert [(node, u.chunk, u.timeouts.max_render) for node, u in changes.timeout_updates] == [
        ("n1", 2, 60.0),
        ("n1", 3, 60.0),
    ]
    [a] = farm.dispatch().assignments
    assert a.message.timeouts.max_render == 60.0  # mean 20 s x 3
    later = farm.finish(job, 2, took=20.0)
    assert later.timeout_updates == []  # only when it first becomes known


def test_auto_timeout_keeps_a_smaller_explicit_limit(farm: Farm) -> None:
    job = farm.submit(
        "j", frames="1-3", timeouts={"auto": True, "auto_min_chunks": 1, "max_render": 15.0}
    )
    farm.node("n1")
    farm.dispatch()
    farm.finish(job, 0, took=10.0)  # auto would be 20 s
    assert farm.dispatch().assignments[0].message.timeouts.max_render == 15.0


def test_auto_timeout_by_percent_and_farm_wide() -> None:
    farm = Farm(SchedulerConfig(auto_timeout_all=True, auto_min_chunks=None, auto_min_percent=50))
    job = farm.submit("j", frames="1-4")
    farm.node("n1")
    farm.dispatch()
    farm.finish(job, 0, took=10.0)  # 25%
    assert farm.dispatch().assignments[0].message.timeouts.max_render is None
    farm.finish(job, 1, took=10.0)  # 50%
    assert farm.dispatch().assignments[0].message.timeouts.max_render == 20.0


def test_script_timeout_applies_to_pre_and_post_jobs(farm: Farm) -> None:
    farm.submit("j", pre_job=["a.sh"], timeouts={"script_timeout": 5.0, "max_render": 99.0})
    farm.node("n1")
    [pre] = farm.dispatch().assignments
    assert (pre.message.timeouts.max_render, pre.message.timeouts.min_render) == (5.0, None)


def test_patched_timeouts_apply_to_the_next_dispatch(farm: Farm) -> None:
    from farmtui.protocol import JobPatch, Timeouts

    job = farm.submit("j", frames="1-2")
    farm.node("n1")
    farm.dispatch()
    farm.scheduler.patch(job, JobPatch(timeouts=Timeouts(max_render=7.0)), "bob", farm.now)
    farm.finish(job, 0)
    assert farm.dispatch().assignments[0].message.timeouts.max_render == 7.0


def test_a_patch_names_only_the_settings_it_changes(farm: Farm) -> None:
    """The console's settings editor sends every setting it shows: the job's event
    log named all of them as changed when one was (a tester read it as a bug)."""
    from farmtui.protocol import JobPatch, Timeouts

    job = farm.submit("j", frames="1-2", retries=2)
    spec = farm.scheduler.jobs[job].spec
    same_except_retries = JobPatch(
        retries=5, max_running=spec.max_running, tags=list(spec.tags), timeouts=spec.timeouts
    )
    changes = farm.scheduler.patch(job, same_except_retries, "bob", farm.now)
    assert [event.text for event in changes.events] == ["settings changed: retries"]
    unchanged = farm.scheduler.patch(
        job,
        JobPatch(retries=5, timeouts=Timeouts(**msgspec.structs.asdict(spec.timeouts))),
        "bob",
        farm.now,
    )
    assert unchanged.events == []


def test_new_timeouts_reach_the_chunks_already_on_their_nodes(farm: Farm) -> None:
    """An operator's new limits went only to chunks dispatched later: a hung frame kept
    its slot past a lowered maximum."""
    job = farm.submit("j", frames="1-3", chunk=1, timeouts={"max_render": 3600.0})
    farm.node("n1", slots=2)
    farm.dispatch()
    lowered = JobPatch(timeouts=Timeouts(max_render=600.0, per_frame=False))
    changes = farm.scheduler.patch(job, lowered, "admin", farm.now)
    assert [(node, u.chunk, u.timeouts.max_render) for node, u in changes.timeout_updates] == [
        ("n1", 0, 600.0),
        ("n1", 1, 600.0),
    ]
    renamed = farm.scheduler.patch(job, JobPatch(name="renamed"), "admin", farm.now)
    assert renamed.timeout_updates == []  # nothing to tell them
