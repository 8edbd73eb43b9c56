"""Progress, render times and the estimated time remaining."""

from __future__ import annotations

from tests.scheduler.paper_farm import Farm


def test_no_estimate_before_a_chunk_completes(farm: Farm) -> None:
    job = farm.submit("j", frames="1-10")
    farm.node("n1")
    farm.dispatch()
    stats = farm.scheduler.job_view(job).stats
    assert (stats.frames_total, stats.chunks_total, stats.chunks_running) == (10, 10, 1)
    assert stats.mean_render is None
    assert stats.etr is None


def test_mean_p90_and_etr_from_completed_chunks_and_the_slots_the_job_gets(farm: Farm) -> None:
    job = farm.submit("j", frames="1-12", chunk=1)
    farm.node("n1", slots=2)
    farm.node("n2", slots=2)
    farm.dispatch()
    for index, took in enumerate([10.0, 20.0, 30.0, 40.0]):
        farm.finish(job, index, took=took)
    stats = farm.scheduler.job_view(job).stats
    assert (stats.frames_done, stats.chunks_done) == (4, 4)
    assert stats.mean_render == 25.0
    assert stats.p90_render == 40.0
    # 8 chunks left at 25 s on 4 slots.
    assert stats.etr == 50.0


def test_etr_respects_the_machine_limit(farm: Farm) -> None:
    job = farm.submit("j", frames="1-5", max_running=1)
    farm.node("n1", slots=4)
    farm.dispatch()
    farm.finish(job, 0, took=10.0)
    assert farm.scheduler.job_view(job).stats.etr == 40.0


def test_failed_frames_are_counted(farm: Farm) -> None:
    job = farm.submit("j", frames="1-4", chunk=2, retries=0)
    farm.node("n1")
    farm.dispatch()
    farm.finish(job, 0, "failed")
    stats = farm.scheduler.job_view(job).stats
    assert (stats.frames_failed, stats.chunks_failed) == (2, 1)
