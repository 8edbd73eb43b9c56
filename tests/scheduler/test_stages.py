"""Scout frames, pre-job and post-job scripts: the stages of a job."""

from __future__ import annotations

from tests.scheduler.paper_farm import Farm


def test_scout_frames_render_first_then_the_job_holds_until_unheld(farm: Farm) -> None:
    job = farm.submit("j", frames="1-10", chunk=5, scout="1,5,10")
    detail = farm.scheduler.job_detail(job)
    # Each chunk is one evenly spaced run, so {start}-{end}x{step} names it exactly.
    assert [c.frames for c in detail.chunks] == [[1, 5], [10], [2, 3, 4], [6, 7, 8, 9]]
    farm.node("n1", slots=4)
    first = farm.dispatch().assignments
    assert [a.message.frames for a in first] == [[1, 5], [10]]
    farm.finish(job, 0)
    changes = farm.finish(job, 1)
    assert farm.state(job) == "holding"
    assert [n.kind for n in changes.notifications] == ["scout-ready"]
    assert farm.dispatch().assignments == []
    farm.scheduler.job_action([job], "unhold", "bob", farm.now)
    assert [a.message.chunk for a in farm.dispatch().assignments] == [2, 3]
    farm.finish(job, 2)
    farm.finish(job, 3)
    assert farm.state(job) == "done"


def test_pre_job_runs_before_and_post_job_after_the_render_chunks(farm: Farm) -> None:
    job = farm.submit(
        "j",
        frames="1-2",
        pre_job=["setup.sh"],
        post_job=["publish.sh"],
        timeouts={"script_timeout": 60.0, "max_render": 500.0},
        output="out/f_##.exr",
    )
    kinds = [c.kind for c in farm.scheduler.job_detail(job).chunks]
    assert kinds == ["pre", "render", "render", "post"]
    farm.node("n1", slots=4)
    [pre] = farm.dispatch().assignments
    assert (pre.message.kind, pre.message.argv, pre.message.outputs) == ("pre", ["setup.sh"], [])
    assert pre.message.timeouts.max_render == 60.0
    assert farm.dispatch().assignments == []
    farm.finish(job, 0)
    renders = farm.dispatch().assignments
    assert [a.message.chunk for a in renders] == [1, 2]
    assert renders[0].message.timeouts.max_render == 500.0
    farm.finish(job, 1)
    assert farm.dispatch().assignments == []  # post waits for every render chunk
    farm.finish(job, 2)
    [post] = farm.dispatch().assignments
    assert (post.message.kind, post.message.argv) == ("post", ["publish.sh"])
    assert farm.state(job) == "rendering"
    farm.finish(job, 3)
    assert farm.state(job) == "done"
    stats = farm.scheduler.job_view(job).stats
    assert (stats.chunks_total, stats.chunks_done) == (2, 2)


def test_a_failed_pre_job_fails_the_job(farm: Farm) -> None:
    job = farm.submit("j", frames="1-2", pre_job=["setup.sh"], retries=0)
    farm.node("n1", slots=4)
    farm.dispatch()
    changes = farm.finish(job, 0, "failed")
    assert farm.state(job) == "failed"
    assert [n.kind for n in changes.notifications] == ["failed"]
