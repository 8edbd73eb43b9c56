"""GPUs and limits (licences): they decide which slot a chunk may take, never the order."""

from __future__ import annotations

from farmtui.protocol import JobSpec, WaitReason
from server.resources import Limit
from tests.scheduler.paper_farm import Farm


def gpus_of(farm: Farm) -> dict[tuple[str, int], list[int] | None]:
    """(job, chunk) -> the GPUs its latest assignment gave it, from one dispatch pass."""
    return {
        (a.message.job_id, a.message.chunk): a.message.gpus for a in farm.dispatch().assignments
    }


def reason(farm: Farm, job: str) -> WaitReason | None:
    return farm.scheduler.job_view(job, now=farm.now).reason


def test_each_chunk_gets_its_own_gpus_and_waits_when_none_is_free(farm: Farm) -> None:
    farm.node("g1", slots=4, gpus=[0, 1, 2])
    job = farm.submit("j", frames="1-3", gpus=2)
    assert gpus_of(farm) == {("j", 0): [0, 1]}
    assert reason(farm, job) == WaitReason(kind="gpus", text="waiting for 2 free GPUs (2/3 in use)")
    farm.finish(job, 0)
    assert gpus_of(farm) == {("j", 1): [0, 1]}


def test_a_cpu_chunk_on_a_gpu_node_sees_no_gpu_and_a_node_without_gpus_is_left_alone(
    farm: Farm,
) -> None:
    farm.node("g1", slots=1, gpus=[0])
    farm.node("c1", slots=1)
    farm.submit("j", frames="1-2")
    assigned = gpus_of(farm)
    assert sorted(assigned.values(), key=str) == [None, []]


def test_gpus_stay_held_until_a_killed_chunk_is_confirmed_dead(farm: Farm) -> None:
    farm.node("g1", slots=2, gpus=[0])
    job = farm.submit("j", frames="1-2", gpus=1)
    assert gpus_of(farm) == {("j", 0): [0]}
    farm.scheduler.chunk_action(job, [0], "retry", "op", farm.now)
    # The kill went out; until the agent confirms the tree is gone, GPU 0 is taken.
    assert gpus_of(farm) == {}
    farm.finish(job, 0, "killed", attempt=1, node="g1")
    assert list(gpus_of(farm).values()) == [[0]]


def test_gpu_memory_and_gpu_only_nodes(farm: Farm) -> None:
    farm.node("small", slots=2, gpus=[0], gpu_memory=8192)
    farm.node("big", slots=2, gpus=[0], gpu_memory=49152, gpu_only=True)
    farm.submit("cpu", frames="1")
    farm.submit("hungry", frames="1", gpus=1, gpu_memory=16384)
    farm.submit("huge", frames="1", gpus=1, gpu_memory=98304)
    placed = {a.message.job_id: a.node for a in farm.dispatch().assignments}
    assert placed == {"cpu": "small", "hungry": "big"}
    assert reason(farm, "huge") == WaitReason(kind="gpus", text="no node has 1 GPU of 96 GiB")


def test_a_cpu_job_says_when_every_node_is_kept_for_gpu_work(farm: Farm) -> None:
    farm.node("g1", slots=2, gpus=[0], gpu_only=True)
    job = farm.submit("j")
    assert gpus_of(farm) == {}
    assert reason(farm, job) == WaitReason(
        kind="gpus", text="every node it may use takes GPU jobs only"
    )


def test_a_limit_caps_chunks_farm_wide_and_frees_a_unit_however_a_chunk_ends(
    farm: Farm,
) -> None:
    farm.scheduler.set_limit(Limit("nuke", 2), "nuke", "admin", farm.now)
    farm.node("n1", slots=3)
    farm.node("n2", slots=3)
    job = farm.submit("comp", frames="1-10", limits=["nuke"], retries=5)
    farm.submit("other", frames="1")
    placed = [(a.message.job_id, a.message.chunk) for a in farm.dispatch().assignments]
    assert sorted(placed) == [("comp", 0), ("comp", 1), ("other", 0)]
    assert reason(farm, job) == WaitReason(
        kind="licence", text="waiting for a nuke licence (2/2 in use)"
    )
    farm.finish(job, 0)  # done
    assert [a.message.chunk for a in farm.dispatch().assignments] == [2]
    farm.finish(job, 1, "failed")  # failed: the retry waits, the unit is free
    assert [a.message.chunk for a in farm.dispatch().assignments] == [3]
    lost = farm.scheduler.jobs[job].chunks[2].node or ""
    kept = [c for c in (2, 3) if farm.scheduler.jobs[job].chunks[c].node != lost]
    farm.advance(1000, silent=(lost,))  # its node is lost after its lease
    assert farm.scheduler.limit_views()[0].in_use == len(kept)
    farm.dispatch()
    assert farm.scheduler.limit_views()[0].in_use == 2


def test_a_limit_per_node(farm: Farm) -> None:
    farm.scheduler.set_limit(Limit("houdini", 10, per_node=1), "houdini", "admin", farm.now)
    farm.node("n1", slots=4)
    farm.node("n2", slots=4)
    job = farm.submit("sim", frames="1-4", limits=["houdini"])
    nodes = sorted(a.node for a in farm.dispatch().assignments)
    assert nodes == ["n1", "n2"]
    assert reason(farm, job) == WaitReason(
        kind="licence", text="every node with a free slot has 1/1 houdini in use (per node)"
    )


def test_an_undefined_limit_waits_and_says_how_to_define_it(farm: Farm) -> None:
    farm.node("n1")
    job = farm.submit("j", limits=["katana"])
    assert farm.dispatch().assignments == []
    assert reason(farm, job) == WaitReason(
        kind="licence", text="limit katana is not defined (farm limit set katana N)"
    )
    changes = farm.scheduler.set_limit(Limit("katana", 1), "katana", "admin", farm.now)
    assert job in changes.jobs  # its reason changed: consoles are told
    assert len(farm.dispatch().assignments) == 1


def test_lowering_a_limit_kills_nothing_and_removing_one_stops_new_chunks(farm: Farm) -> None:
    farm.scheduler.set_limit(Limit("nuke", 3), "nuke", "admin", farm.now)
    farm.node("n1", slots=4)
    job = farm.submit("comp", frames="1-10", limits=["nuke"])
    assert len(farm.dispatch().assignments) == 3
    changes = farm.scheduler.set_limit(Limit("nuke", 1), "nuke", "admin", farm.now)
    assert changes.kills == []
    farm.finish(job, 0)
    assert farm.dispatch().assignments == []  # 2 held of 1
    farm.scheduler.set_limit(None, "nuke", "admin", farm.now)
    farm.finish(job, 1)
    farm.finish(job, 2)
    assert farm.dispatch().assignments == []


def test_holdings_are_read_back_after_a_leader_restart(farm: Farm) -> None:
    farm.scheduler.set_limit(Limit("nuke", 1), "nuke", "admin", farm.now)
    farm.node("g1", slots=2, gpus=[0, 1])
    job = farm.submit("comp", frames="1-4", limits=["nuke"], gpus=1)
    assert gpus_of(farm) == {("comp", 0): [0]}
    scheduler = farm.scheduler
    scheduler.load(list(scheduler.jobs.values()), list(scheduler.nodes.values()), farm.now)
    assert scheduler.resources.in_use["nuke"] == 1
    assert scheduler.resources.busy_gpus("g1") == [0]
    assert reason(farm, job) == WaitReason(
        kind="licence", text="waiting for a nuke licence (1/1 in use)"
    )


def test_fair_share_interleaves_owners_within_a_priority_only_when_asked() -> None:
    from server.scheduler import SchedulerConfig

    for fair, wanted in ((False, ["a1", "a1", "a1", "a1"]), (True, ["a1", "b1", "a1", "b1"])):
        farm = Farm(SchedulerConfig(fair_share=fair))
        for job_id, owner in (("a1", "alice"), ("b1", "bob")):
            farm.scheduler.submit(
                job_id, JobSpec(frames="1-10", argv=["r", "{start}"]), owner, farm.now
            )
        farm.submit("urgent", frames="1-2", priority=10)
        farm.node("n1", slots=6)
        assigned = [a.message.job_id for a in farm.dispatch().assignments]
        assert assigned[:2] == ["urgent", "urgent"]  # priority still comes first
        assert assigned[2:] == wanted, fair
