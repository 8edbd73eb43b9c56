"""Frame-by-frame dependencies: frame N waits for frame N upstream, chunk-aware, with offsets."""

from __future__ import annotations

from farmtui.protocol import JobSpec, WaitReason
from server.frame_waits import PARK_BUDGET, blocker, windows
from tests.scheduler.paper_farm import Farm


def started(farm: Farm) -> list[tuple[str, int]]:
    return sorted((a.message.job_id, a.message.chunk) for a in farm.dispatch().assignments)


def reason(farm: Farm, job: str) -> WaitReason | None:
    return farm.scheduler.job_view(job, now=farm.now).reason


def test_each_frame_starts_once_its_upstream_frame_is_done_in_any_order(farm: Farm) -> None:
    farm.submit("render", frames="1-4", priority=60)
    farm.submit("comp", frames="1-4", after=["render"], after_frames=True, priority=10)
    farm.node("n1", slots=2)
    # comp comes first in dispatch order, but every frame of it waits.
    assert started(farm) == [("render", 0), ("render", 1)]
    assert reason(farm, "comp") == WaitReason(
        kind="after", text="waiting on render frame 1 (rendering)"
    )
    farm.finish("render", 1)  # frame 2 first
    assert started(farm) == [("comp", 1)]
    farm.finish("render", 0)
    assert started(farm) == [("comp", 0)]


def test_a_chunk_waits_for_every_frame_it_needs(farm: Farm) -> None:
    farm.submit("render", frames="1-4")
    farm.submit("comp", frames="1-4", chunk=2, after=["render"], after_frames=True)
    farm.node("n1", slots=4)
    assert started(farm) == [("render", i) for i in range(4)]
    farm.finish("render", 0)
    assert started(farm) == []  # comp's chunk 1-2 still needs frame 2
    farm.finish("render", 1)
    assert started(farm) == [("comp", 0)]


def test_an_offset_waits_for_the_neighbours_that_exist(farm: Farm) -> None:
    farm.submit("render", frames="1-5")
    farm.submit("denoise", frames="1-5", after=["render"], after_frames=True, after_offset=(-1, 1))
    farm.node("n1", slots=5)
    started(farm)
    farm.finish("render", 0)
    farm.finish("render", 1)
    # Frame 1 needs 0 (not in render: not waited for), 1 and 2.
    assert started(farm) == [("denoise", 0)]
    farm.finish("render", 2)
    assert started(farm) == [("denoise", 1)]


def test_frames_the_upstream_job_does_not_have_start_at_once(farm: Farm) -> None:
    farm.submit("render", frames="1-2", priority=60)
    farm.submit("comp", frames="1-4", after=["render"], after_frames=True, priority=10)
    farm.node("n1", slots=1)
    assert started(farm) == [("comp", 2)]


def test_a_failed_upstream_frame_keeps_its_dependants_waiting_until_retried(farm: Farm) -> None:
    farm.submit("render", frames="1-2", retries=0)
    farm.submit("comp", frames="1-2", after=["render"], after_frames=True)
    farm.node("n1", slots=2)
    started(farm)
    farm.finish("render", 0, "failed")
    farm.finish("render", 1)
    assert started(farm) == [("comp", 1)]
    assert farm.state("render") == "failed"
    farm.finish("comp", 1)
    assert reason(farm, "comp") == WaitReason(
        kind="after", text="waiting on render frame 1 (failed; job failed)"
    )
    farm.scheduler.job_action(["render"], "retry-failed", "op", farm.now)
    assert started(farm) == [("render", 0)]
    farm.finish("render", 0)
    assert started(farm) == [("comp", 0)]


def test_completing_the_upstream_by_hand_frees_every_dependant(farm: Farm) -> None:
    farm.submit("render", frames="1-100", retries=0)
    farm.submit("comp", frames="1-100", after=["render"], after_frames=True, priority=10)
    farm.node("n1", slots=1)
    started(farm)
    farm.scheduler.job_action(["render"], "complete", "op", farm.now)
    farm.finish("render", 0, "killed", node="n1", attempt=1)
    assert started(farm) == [("comp", 0)]


def test_deleting_the_upstream_holds_the_dependants(farm: Farm) -> None:
    farm.submit("render", frames="1-2")
    farm.submit("comp", frames="1-2", after=["render"], after_frames=True)
    farm.node("n1", slots=3)
    assert started(farm) == [("render", 0), ("render", 1)]
    farm.scheduler.job_action(["render"], "delete", "op", farm.now)
    assert farm.state("comp") == "holding"
    assert started(farm) == []
    farm.scheduler.job_action(["comp"], "unhold", "op", farm.now)
    assert started(farm) == [("comp", 0)]


def test_whole_job_dependencies_still_wait_for_the_whole_job(farm: Farm) -> None:
    farm.submit("render", frames="1-2")
    farm.submit("comp", frames="1-2", after=["render"])
    farm.node("n1", slots=2)
    started(farm)
    farm.finish("render", 0)
    assert started(farm) == []
    farm.finish("render", 1)
    assert started(farm) == [("comp", 0), ("comp", 1)]


def test_parked_chunks_are_not_looked_at_again_until_their_upstream_chunk_ends(
    farm: Farm,
) -> None:
    farm.submit("render", frames="1-1000", priority=60, max_running=1)
    farm.submit("comp", frames="1-1000", after=["render"], after_frames=True, priority=10)
    farm.node("n1", slots=2)
    assert started(farm) == [("render", 0)]
    # A pass parks at most PARK_BUDGET chunks; the next passes go on where it stopped.
    assert len(farm.scheduler.frame_waits.waiting["comp"]) == PARK_BUDGET
    for _ in range(1000 // PARK_BUDGET):
        farm.dispatch()
    assert len(farm.scheduler.frame_waits.waiting["comp"]) == 1000
    farm.finish("render", 0)
    assert started(farm) == [("comp", 0), ("render", 1)]
    assert len(farm.scheduler.frame_waits.waiting["comp"]) == 999


def test_a_wide_window_is_walked_about_once_per_chunk() -> None:
    render = JobSpec(frames="1-200", argv=["r"])
    comp = JobSpec(frames="100", argv=["c"], after=["render"], after_frames=True,
                   after_offset=(-50, 50))  # fmt: skip
    farm = Farm()
    farm.scheduler.submit("render", render, "alice", farm.now)
    farm.scheduler.submit("comp", comp, "alice", farm.now)
    jobs = farm.scheduler.jobs
    chunk = jobs["comp"].chunks[0]
    first = blocker(jobs["comp"], chunk, jobs)
    assert first is not None
    assert first.upstream == ("render", 49)  # frame 50: the window's first frame
    assert first.resume == (0, 50)
    # Where it stopped is where it looks again: frames before it are not walked twice.
    for index in range(49, 150):
        jobs["render"].chunks[index].state = "done"
    assert blocker(jobs["comp"], chunk, jobs, first.resume) is None


def test_windows_merge_into_the_upstream_frames_a_chunk_needs() -> None:
    assert windows((1, 2, 3), -1, 1) == [range(0, 5)]
    assert windows((10, 1), 0, 0) == [range(1, 2), range(10, 11)]
