"""Chunks of short-chunk jobs handed to a node ahead of a free slot (``server.prefetch``).

A node that holds one chunk ahead starts it the moment a renderer exits,
instead of after the report's round trip through the leader: for chunks of a
fraction of a second that round trip was most of their time.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from farmtui.protocol import AgentHello, JobPatch, JobSpec, RunningRef
from server.model import Changes
from server.prefetch import PREFETCH_BELOW, TAKE_BACK_EVERY, takes_ahead
from server.scheduler import Scheduler
from server.scheduler_config import SchedulerConfig
from server.store import Store
from tests.scheduler.paper_farm import Farm

# A command none of whose chunks has run yet: how long they take is not known.
OTHER_WORK = ["simulate", "{start}", "{end}"]


def short_job(farm: Farm, frames: str = "1-10") -> str:
    """A job whose first chunk is done in a fraction of a second, on n1."""
    job_id = farm.submit(frames=frames, chunk=1)
    farm.dispatch()
    assert farm.running()["n1"] == [(job_id, 0)], "nothing is taken ahead before a time is known"
    farm.finish(job_id, 0, took=0.2)
    return job_id


def test_a_node_holds_a_chunk_of_a_short_chunk_job_ahead_of_its_slot() -> None:
    farm = Farm()
    farm.node("n1", slots=1, prefetch=1)
    job_id = short_job(farm)
    farm.dispatch()
    assert farm.running()["n1"] == [(job_id, 1), (job_id, 2)], "one running, one waiting"
    farm.finish(job_id, 1, took=0.2)
    farm.dispatch()
    assert farm.running()["n1"] == [(job_id, 2), (job_id, 3)]


def brief_job(farm: Farm, took: float) -> str:
    """A job of 100 chunks whose first took ``took`` s, on n1 (2 slots)."""
    job_id = farm.submit(frames="1-100", chunk=1)
    farm.dispatch()
    assert farm.running()["n1"] == [(job_id, 0), (job_id, 1)], "nothing ahead before a time"
    farm.finish(job_id, 0, took=took)
    farm.dispatch()
    return job_id


@pytest.mark.parametrize(
    ("took", "ahead"),
    [(0.001, 8), (0.2, 8), (0.4, 4), (0.9, 2), (2.0, 2), (PREFETCH_BELOW - 0.1, 2)],
)
def test_a_node_holds_about_a_second_of_a_jobs_work_a_slot_ahead(took: float, ahead: int) -> None:
    """One chunk ahead of a slot hides a report's round trip for chunks of a second; for
    chunks of milliseconds a slot ran dry between two of them (a node of 2 slots ran
    /bin/true at 600 a second with 2 ahead, 790 with 32). More than a second of a job's
    work a slot would hold its last frames on one node while others idle."""
    farm = Farm()
    farm.node("n1", slots=2, prefetch=8)
    job_id = brief_job(farm, took)
    held = farm.running()["n1"]
    assert len(held) == 2 + ahead, f"chunks of {took} s: {len(held) - 2} ahead of 2 slots"
    assert held == [(job_id, index) for index in range(1, 3 + ahead)]


def test_a_job_whose_chunk_turns_heavy_takes_no_more_than_a_chunk_a_slot_ahead() -> None:
    farm = Farm()
    farm.node("n1", slots=2, prefetch=8)
    job_id = brief_job(farm, 0.01)
    assert len(farm.running()["n1"]) == 10
    for index in range(1, 8):  # seven end, the last one slowly: 3 chunks on the node
        farm.finish(job_id, index, took=3.0 if index == 7 else 0.01)
    farm.dispatch()
    assert farm.running()["n1"] == [(job_id, index) for index in range(8, 12)], (
        "2 rendering, one ahead of each slot"
    )


def second_of_a_brief_kind(farm: Farm) -> str:
    """A job of 100 chunks given out after a job of the same work whose chunks took
    10 ms, on n1 (2 slots, prefetch 8)."""
    farm.node("n1", slots=2, prefetch=8)
    first = farm.submit(frames="1-3", chunk=1)
    farm.dispatch()
    for index in range(3):
        farm.finish(first, index, took=0.01)
        farm.dispatch()
    second = farm.submit(frames="1-100", chunk=1)  # the same command: the same kind
    farm.dispatch()
    return second


def test_a_new_job_of_a_brief_kind_of_work_fills_a_deep_node_before_its_own_chunk_ends() -> None:
    """A queue of small jobs of one kind of brief chunks: each new job's chunks are all
    given out before one of them ends, so it goes by its kind's last job."""
    farm = Farm()
    second = second_of_a_brief_kind(farm)
    assert farm.running()["n1"] == [(second, index) for index in range(10)], (
        "2 rendering and 8 ahead, as the first job's chunks of 10 ms had"
    )


def test_chunks_of_long_chunk_jobs_never_wait_on_a_busy_node() -> None:
    """A chunk waiting behind a long render would hold up its job while others idle."""
    farm = Farm()
    farm.node("n1", slots=1, prefetch=1)
    job_id = farm.submit(frames="1-10", chunk=1)
    farm.dispatch()
    farm.finish(job_id, 0, took=PREFETCH_BELOW + 1)
    farm.dispatch()
    assert farm.running()["n1"] == [(job_id, 1)]
    gpus = farm.submit(frames="1-10", chunk=1, gpus=1)  # its chunks would hold a GPU waiting
    farm.node("g1", slots=1, gpus=[0], gpu_only=True, prefetch=1)
    farm.dispatch()
    farm.finish(gpus, 0, took=0.2)
    farm.dispatch()
    assert farm.running()["g1"] == [(gpus, 1)]


def test_a_free_slot_anywhere_comes_before_room_ahead() -> None:
    farm = Farm()
    farm.node("n1", slots=1, prefetch=1)
    farm.node("n2", slots=1)
    job_id = farm.submit(frames="1-10", chunk=1)
    farm.dispatch()
    assert farm.running() == {"n1": [(job_id, 0)], "n2": [(job_id, 1)]}
    farm.finish(job_id, 0, took=0.2)
    farm.dispatch()
    assert farm.running()["n1"] == [(job_id, 2), (job_id, 3)]
    # n1's renderer of chunk 2 exits (chunk 3 starts there) as n2's ends: n2's free slot
    # takes the next chunk, and only the one after waits on n1.
    farm.finish(job_id, 2, took=0.2)
    farm.finish(job_id, 1, took=0.2)
    farm.dispatch()
    assert farm.running() == {"n1": [(job_id, 3), (job_id, 5)], "n2": [(job_id, 4)]}


def test_a_node_without_prefetch_runs_only_its_slots() -> None:
    farm = Farm()
    farm.node("n1", slots=2)
    job_id = farm.submit(frames="1-10", chunk=1)
    farm.dispatch()
    farm.finish(job_id, 0, took=0.2)
    farm.dispatch()
    assert farm.running()["n1"] == [(job_id, 1), (job_id, 2)]


def test_a_node_of_no_slots_holds_nothing_ahead() -> None:
    """A hand-made hello of 0 slots and room ahead would sit on chunks it never runs."""
    farm = Farm()
    farm.node("n1", slots=1)
    job_id = short_job(farm)
    farm.node("idle", slots=0, prefetch=64)
    farm.dispatch()
    assert farm.running()["idle"] == []
    assert farm.running()["n1"] == [(job_id, 1)]


def test_a_job_that_comes_first_gets_the_next_slot_not_the_short_job_behind_it() -> None:
    """Chunks waiting ahead were refilled from the short job at every chunk's end, so
    a job of a higher priority submitted meanwhile waited until the short job was over."""
    farm = Farm()
    farm.node("n1", slots=1, prefetch=1)
    short = short_job(farm, frames="1-100")
    farm.dispatch()
    assert farm.running()["n1"] == [(short, 1), (short, 2)], "one running, one waiting"
    urgent = farm.submit(frames="1-10", chunk=1, priority=1, argv=OTHER_WORK)
    farm.dispatch()
    farm.finish(short, 1, took=0.2)  # chunk 2 starts on the agent at once
    farm.dispatch()
    assert farm.running()["n1"] == [(short, 2)], "the room ahead is kept for the urgent job"
    farm.finish(short, 2, took=0.2)
    farm.dispatch()
    assert farm.running()["n1"] == [(urgent, 0)]


def test_a_job_that_cannot_run_on_a_node_keeps_no_room_there() -> None:
    farm = Farm()
    farm.node("n1", slots=1, prefetch=1)
    short = short_job(farm)
    farm.submit(frames="1-10", chunk=1, priority=1, tags=["gpu"])  # no node carries the tag
    farm.dispatch()
    assert farm.running()["n1"] == [(short, 1), (short, 2)]


def test_a_job_whose_chunks_turn_long_stops_taking_chunks_ahead_at_once() -> None:
    """Judged by its average alone, a job of 0.2 s chunks that turned to 8 s ones kept
    parking chunks behind 8 s renders until the average caught up."""
    farm = Farm()
    farm.node("n1", slots=1, prefetch=1)
    job_id = short_job(farm)
    for index in range(1, 4):
        farm.dispatch()
        farm.finish(job_id, index, took=0.2)
    farm.dispatch()
    assert farm.running()["n1"] == [(job_id, 4), (job_id, 5)]
    farm.finish(job_id, 4, took=PREFETCH_BELOW + 3)  # the mean is still under the bar
    farm.dispatch()
    assert farm.running()["n1"] == [(job_id, 5)], "nothing more waits behind a long render"


def _taken_back(changes: Changes) -> list[tuple[str, str, int]]:
    return sorted((k.node, k.job_id, k.chunk) for k in changes.kills if k.waiting_only)


def test_what_waits_for_a_slot_is_taken_back_when_nothing_new_may_start() -> None:
    """Pausing or holding a job, disabling a node, changing where or how many may run:
    the chunks held ahead of a slot are taken back (the agent stops them only if they
    have not started), and come back with no retry used."""
    farm = Farm()
    farm.node("n1", slots=1, prefetch=1)
    farm.node("n2", slots=1)  # takes nothing ahead: starts whatever it is given
    job_id = farm.submit(frames="1-20", chunk=1)
    farm.dispatch()
    farm.finish(job_id, 0, took=0.2)
    farm.dispatch()
    on_n1 = farm.running()["n1"]
    assert len(on_n1) == 2, "one running, one waiting"
    expected = [("n1", job_id, index) for _, index in on_n1]
    changes = farm.scheduler.job_action([job_id], "pause", "alice", farm.now)
    assert _taken_back(changes) == expected
    # The agent ends the one that waited, killed: it comes back, no retry used.
    waiting = on_n1[1][1]
    farm.finish(job_id, waiting, "killed")
    assert farm.scheduler.jobs[job_id].chunks[waiting].state == "preempted"
    assert farm.dispatch().assignments == [], "a paused job starts nothing"
    farm.scheduler.job_action([job_id], "resume", "alice", farm.now)
    farm.dispatch()
    assert _taken_back(farm.scheduler.set_node_enabled("n1", False, "bob", farm.now)) == [
        ("n1", job_id, index) for _, index in farm.running()["n1"]
    ]
    farm.scheduler.set_node_enabled("n1", True, "bob", farm.now)
    changes = farm.scheduler.patch(job_id, JobPatch(max_running=1), "bob", farm.now)
    assert [node for node, _, _ in _taken_back(changes)] == ["n1"] * len(farm.running()["n1"])


def test_what_waits_behind_a_long_render_is_taken_back_when_the_job_turns_long() -> None:
    farm = Farm()
    farm.node("n1", slots=1, prefetch=1)
    job_id = short_job(farm)
    farm.dispatch()
    assert farm.running()["n1"] == [(job_id, 1), (job_id, 2)]
    farm.dispatch()
    changes = farm.finish(job_id, 1, took=PREFETCH_BELOW + 3)
    assert _taken_back(changes) == [("n1", job_id, 2)]


def test_what_waits_on_a_node_blocked_for_the_job_is_taken_back() -> None:
    """A node blocked for a job (after its errors, or by hand): a chunk of the job that
    waited there would fail once more (and again count against the node)."""
    farm = Farm(SchedulerConfig(block_after=1))
    farm.node("n1", slots=1, prefetch=1)
    job_id = short_job(farm)
    farm.dispatch()
    failing, waiting = (index for _, index in farm.running()["n1"])
    changes = farm.finish(job_id, failing, "failed", took=0.2)
    assert _taken_back(changes) == [("n1", job_id, waiting)]
    farm.scheduler.block_node(job_id, "n1", False, "bob", farm.now)
    farm.dispatch()
    held = [("n1", job_id, index) for _, index in farm.running()["n1"]]
    assert len(held) == 2
    changes = farm.scheduler.block_node(job_id, "n1", True, "bob", farm.now)
    assert _taken_back(changes) == held


def test_a_node_that_failed_a_chunk_of_the_job_takes_none_of_its_chunks_ahead() -> None:
    """A chunk held there starts the moment the failed one exits, before the leader can
    block the node for the job: it failed block_after + 1 times."""
    farm = Farm(SchedulerConfig(block_after=2))
    farm.node("n1", slots=1, prefetch=1)
    job_id = short_job(farm)
    farm.dispatch()
    failing, waiting = (index for _, index in farm.running()["n1"])
    farm.finish(job_id, failing, "failed", took=0.2)  # the waiting one starts on the agent
    farm.dispatch()
    assert farm.running()["n1"] == [(job_id, waiting)], "nothing more waits behind it"


def test_a_job_that_comes_first_takes_back_what_waits_for_its_node() -> None:
    """A job of a higher priority waited until every chunk held ahead of it there had
    rendered; now the next tick takes them back, and it gets the node's next slot."""
    farm = Farm()
    farm.node("n1", slots=1, prefetch=1)
    short = short_job(farm, frames="1-100")
    farm.dispatch()
    assert farm.running()["n1"] == [(short, 1), (short, 2)], "one running, one waiting"
    assert _taken_back(farm.advance(1)) == [], "nothing comes before the short job yet"
    urgent = farm.submit(frames="1-10", chunk=1, priority=1, argv=OTHER_WORK)
    farm.dispatch()
    asked = farm.advance(1)
    # Both are asked: the agent stops only the one that has not started.
    assert _taken_back(asked) == [("n1", short, 1), ("n1", short, 2)]
    assert {k.reason for k in asked.kills} == {
        f"not started: job {farm.scheduler.jobs[urgent].spec.name} ({urgent}) comes first "
        "in the queue"
    }
    assert _taken_back(farm.advance(1)) == [], "each attempt is asked once"
    farm.finish(short, 2, "killed")  # it waited: it ends, and comes back
    chunk = farm.scheduler.jobs[short].chunks[2]
    assert chunk.state == "preempted"
    assert chunk.errors == 0, "no retry used"
    farm.dispatch()
    assert farm.running()["n1"] == [(short, 1)], "the room ahead is kept for the urgent job"
    farm.finish(short, 1, took=0.2)
    farm.dispatch()
    assert farm.running()["n1"] == [(urgent, 0)]


def test_only_a_job_that_could_start_there_now_takes_anything_back() -> None:
    farm = Farm()
    farm.node("n1", slots=1, prefetch=1)
    short = short_job(farm, frames="1-100")
    farm.dispatch()
    farm.submit(frames="1-10", chunk=1, priority=90)  # behind the short job
    farm.submit(frames="1-10", chunk=1, priority=1, tags=["gpu"])  # no node carries the tag
    held = farm.submit(frames="1-10", chunk=1, priority=1)
    farm.scheduler.job_action([held], "hold", "bob", farm.now)
    farm.dispatch()
    assert _taken_back(farm.advance(1)) == []
    assert farm.running()["n1"] == [(short, 1), (short, 2)]


def test_a_job_takes_back_only_as_much_room_as_it_could_use_now() -> None:
    """Its chunks whose retry still backs off cannot start: they take no room back."""
    farm = Farm()
    for name in ("n1", "n2", "n3"):
        farm.node(name, slots=1, prefetch=1)
    short = farm.submit(frames="1-100", chunk=1)
    farm.dispatch()
    for _, index in [pair for pairs in farm.running().values() for pair in pairs]:
        farm.finish(short, index, took=0.2)
    farm.dispatch()
    assert all(len(held) == 2 for held in farm.running().values()), "one running, one waiting"
    farm.node("n0", slots=3)
    urgent = farm.submit(frames="1-4", chunk=1, priority=1, retries=3, retry_delay=60)
    farm.dispatch()
    assert [index for _, index in farm.running()["n0"]] == [0, 1, 2]
    farm.finish(urgent, 0, "killed", took=1.0)  # the farm's doing: it may start at once
    for index in (1, 2):
        farm.finish(urgent, index, "failed", took=1.0)  # each backs off for a minute
    farm.scheduler.set_node_enabled("n0", False, "bob", farm.now)
    farm.dispatch()
    # Chunks 0 and 3 could start now; 1 and 2 could not: room on two nodes, not three.
    taken = _taken_back(farm.advance(1))
    assert len({node for node, _, _ in taken}) == 2, taken


# --- a job none of whose chunks is done yet, by its kind of work -----------------------


def test_a_queue_of_small_jobs_of_one_kind_takes_chunks_ahead_from_the_first_job_on() -> None:
    """A thousand jobs of a hundred quick chunks took nothing ahead: each job's chunks
    were all given out before the first of them ended, so no job with chunks still
    waiting was ever known short. Once one job of the kind has a short chunk done, the
    jobs queued behind it wait ahead from their start."""
    farm = Farm()
    farm.node("n1", slots=1, prefetch=1)
    first = farm.submit(frames="1-2", chunk=1)
    queued = farm.submit(frames="1-3", chunk=1)
    farm.dispatch()
    assert farm.running()["n1"] == [(first, 0)], "no chunk of the kind is done yet"
    farm.finish(first, 0, took=0.2)
    farm.dispatch()
    assert farm.running()["n1"] == [(first, 1), (queued, 0)], "the next job waits ahead"
    farm.finish(first, 1, took=0.2)
    farm.dispatch()
    assert farm.running()["n1"] == [(queued, 0), (queued, 1)]


def test_only_the_same_work_goes_by_the_kind() -> None:
    """Another command, scene, chunk size or owner may take any time: it waits for a
    chunk of its own to be done."""
    for other in (
        {"argv": OTHER_WORK},
        {"env": {"QUALITY": "final"}},
        {"chunk": 10},
        {
            "renderer": "blender",
            "scene": "shots/a.blend",
            "output": "out/f_####.png",
            "argv": [],
        },
    ):
        farm = Farm()
        farm.node("n1", slots=1, prefetch=1)
        first = farm.submit(frames="1-2", chunk=1)
        unknown = farm.submit(frames="1-30", **{"chunk": 1, **other})
        farm.dispatch()
        farm.finish(first, 0, took=0.2)
        farm.dispatch()
        assert farm.running()["n1"] == [(first, 1)], other
        farm.finish(first, 1, took=0.2)
        farm.dispatch()
        assert farm.running()["n1"] == [(unknown, 0)], other
    farm = Farm()
    farm.node("n1", slots=1, prefetch=1)
    first = farm.submit(frames="1-2", chunk=1)
    farm.dispatch()
    farm.finish(first, 0, took=0.2)
    bobs = "b1"
    farm.scheduler.submit(
        bobs, JobSpec(frames="1-3", chunk=1, argv=["render", "{start}", "{end}"]), "bob", farm.now
    )
    farm.dispatch()
    assert farm.running()["n1"] == [(first, 1)], "another owner's work is not alice's"


def test_a_kind_that_turns_long_stops_its_queued_jobs_waiting_ahead() -> None:
    """The first chunk done of a job of a short kind took 8 s: the jobs of that kind
    queued behind it no longer wait ahead, and what waits is taken back."""
    farm = Farm()
    farm.node("n1", slots=1, prefetch=1)
    first = farm.submit(frames="1-2", chunk=1)
    second = farm.submit(frames="1-3", chunk=1)
    third = farm.submit(frames="1-3", chunk=1)
    farm.dispatch()
    farm.finish(first, 0, took=0.2)
    farm.dispatch()
    farm.finish(first, 1, took=0.2)
    farm.dispatch()
    assert farm.running()["n1"] == [(second, 0), (second, 1)]
    changes = farm.finish(second, 0, took=PREFETCH_BELOW + 3)
    assert _taken_back(changes) == [("n1", second, 1)], "it waits behind a long render"
    farm.finish(second, 1, "killed")  # it had not started: it comes back
    farm.dispatch()
    assert farm.running()["n1"] == [(second, 1)], "nothing of the kind waits ahead now"
    assert third in farm.scheduler.jobs


def test_a_restarted_leader_learns_the_kinds_again() -> None:
    """Kinds are live knowledge, like the nodes' readings: after a restart a queued job
    waits for a chunk of its kind to be done again."""
    farm = Farm()
    farm.node("n1", slots=1, prefetch=1)
    first = farm.submit(frames="1-2", chunk=1)
    queued = farm.submit(frames="1-3", chunk=1)
    farm.dispatch()
    farm.finish(first, 0, took=0.2)
    restarted = Scheduler(SchedulerConfig())
    restarted.load(list(farm.scheduler.jobs.values()), list(farm.scheduler.nodes.values()), 0.0)
    assert not takes_ahead(restarted.jobs[queued], restarted._short_kinds)


def test_a_chunk_that_waited_ahead_started_when_its_renderer_did() -> None:
    """Its attempt showed the hand-out as its start, so the time it waited for the slot
    read as rendering, and two handed out in one pass showed one start."""
    farm = Farm()
    farm.node("n1", slots=1, prefetch=1)
    job_id = short_job(farm)
    farm.dispatch()
    handed_out = farm.now
    assert farm.running()["n1"] == [(job_id, 1), (job_id, 2)], "one running, one waiting"
    farm.now += 3.0
    farm.finish(job_id, 1, took=3.0)  # chunk 2 starts now, on the agent
    farm.now += 0.5
    farm.finish(job_id, 2, took=0.5)
    (first,) = farm.scheduler.jobs[job_id].chunks[1].attempts
    (waited,) = farm.scheduler.jobs[job_id].chunks[2].attempts
    assert first.started == handed_out
    assert waited.started == pytest.approx(handed_out + 3.0)
    assert waited.finished == pytest.approx(handed_out + 3.5)


def _queue_of_one_kind(farm: Farm) -> tuple[str, str]:
    """n1 (1 slot, 1 ahead) runs a job of the kind short; the next job's first chunk
    runs and its second waits ahead, by the kind."""
    farm.node("n1", slots=1, prefetch=1)
    first = farm.submit(frames="1-1", chunk=1)
    second = farm.submit(frames="1-3", chunk=1)
    farm.dispatch()
    farm.finish(first, 0, took=0.2)
    farm.dispatch()
    assert farm.running()["n1"] == [(second, 0), (second, 1)]
    return first, second


def test_a_first_chunk_still_running_after_5_s_takes_back_what_waits_behind_it() -> None:
    """The chunk waiting ahead started only when its job's first (long) render ended,
    while another node sat idle: the leader knows the chunks are long once the first
    has run for 5 s, and the next tick takes back what waits."""
    farm = Farm()
    _, second = _queue_of_one_kind(farm)
    assert _taken_back(farm.advance(PREFETCH_BELOW + 1)) == [], "it has not started yet"
    farm.scheduler.chunk_started("n1", second, 0, 1, farm.now)  # its first render begins
    assert _taken_back(farm.advance(1)) == []
    asked = farm.advance(PREFETCH_BELOW)
    assert ("n1", second, 1) in _taken_back(asked)
    third = farm.submit(frames="1-3", chunk=1)
    farm.finish(second, 1, "killed")  # it had not started: it comes back
    farm.dispatch()
    held = farm.running()["n1"]
    assert held == [(second, 0)], "the kind is long now: nothing of it waits ahead"
    assert third in farm.scheduler.jobs


def test_a_first_chunk_that_timed_out_and_completed_makes_its_kind_long() -> None:
    farm = Farm()
    farm.node("n1", slots=1, prefetch=1)
    first = farm.submit(
        frames="1-1", chunk=1, timeouts={"max_render": 30, "on_timeout": "complete"}
    )
    second = farm.submit(
        frames="1-3", chunk=1, timeouts={"max_render": 30, "on_timeout": "complete"}
    )
    farm.dispatch()
    farm.finish(first, 0, took=0.2)  # the kind is short
    farm.dispatch()
    assert farm.running()["n1"] == [(second, 0), (second, 1)]
    changes = farm.finish(second, 0, "timeout", took=30.0, timeout_kind="max_render")
    assert _taken_back(changes) == [("n1", second, 1)]
    farm.finish(second, 1, "killed")
    farm.dispatch()
    assert farm.running()["n1"] == [(second, 1)], "nothing of the kind waits ahead now"


def test_a_kind_forgotten_among_too_many_goes_back_to_waiting_for_its_own_chunks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Past the kinds kept, the oldest is forgotten: a job of it queued while it was
    known takes nothing ahead any more."""
    monkeypatch.setattr("server.prefetch.KINDS_KEPT", 1)
    farm = Farm()
    farm.node("n1", slots=1, prefetch=1)
    other = farm.submit(frames="1-1", chunk=1, priority=10, argv=OTHER_WORK)
    first = farm.submit(frames="1-2", chunk=1)
    farm.dispatch()
    farm.finish(other, 0, took=0.2)  # OTHER_WORK is short
    later = farm.submit(frames="1-3", chunk=1, priority=60, argv=OTHER_WORK)
    farm.dispatch()
    assert farm.running()["n1"] == [(first, 0)], "the room is kept for the job before it"
    farm.finish(first, 0, took=0.2)  # the default kind is short: OTHER_WORK is forgotten
    farm.dispatch()
    assert farm.running()["n1"] == [(first, 1)], "OTHER_WORK waits for a chunk of its own"
    assert later in farm.scheduler.jobs


def test_a_queue_of_one_kind_behind_a_job_that_cannot_start_still_takes_chunks_ahead() -> None:
    """Jobs queued before their kind was known, behind one waiting for another job:
    the pass stopped at that job and never came to them, so nothing waited ahead."""
    farm = Farm()
    farm.node("n0", slots=1)
    blocker = farm.submit(frames="1-1", chunk=1, priority=10, argv=OTHER_WORK)
    farm.dispatch()
    assert farm.running()["n0"] == [(blocker, 0)], "a long render"
    farm.node("n1", slots=1, prefetch=1)
    farm.submit(frames="1-2", chunk=1, priority=20, after=[blocker], argv=["comp", "{start}"])
    first = farm.submit(frames="1-1", chunk=1)
    queued = farm.submit(frames="1-3", chunk=1)
    farm.dispatch()
    assert farm.running()["n1"] == [(first, 0)]
    farm.finish(first, 0, took=0.2)  # the kind is short
    farm.dispatch()
    assert farm.running()["n1"] == [(queued, 0), (queued, 1)]


def test_a_deep_node_gives_back_what_it_holds_beyond_a_jobs_new_depth() -> None:
    """A job of brief chunks fills a deep node; its frames turn heavier (still short):
    the chunks that node holds beyond what it would be given now go back, the last given
    first. Before, they all rendered one after another there while other nodes idled."""
    farm = Farm()
    farm.node("n1", slots=2, prefetch=8)
    job_id = brief_job(farm, 0.01)
    assert len(farm.running()["n1"]) == 10, "2 rendering, 8 ahead"
    farm.node("n2", slots=1)  # where what goes back can start now
    changes = farm.finish(job_id, 1, took=3.0)  # the mean is still under the bar
    assert _taken_back(changes) == [("n1", job_id, index) for index in range(6, 11)], (
        "of the 9 still held, 2 render and 2 wait ahead (one a slot): the last 5 given go back"
    )


def test_a_new_job_of_a_brief_kind_gives_back_what_it_holds_beyond_its_own_first_chunk() -> None:
    """Filled as its kind's last job had it (chunks of 10 ms), a job whose own first chunk
    takes 3 s keeps one chunk ahead of each slot on that node."""
    farm = Farm()
    second = second_of_a_brief_kind(farm)
    assert len(farm.running()["n1"]) == 10
    farm.node("n2", slots=1)
    changes = farm.finish(second, 0, took=3.0)
    assert _taken_back(changes) == [("n1", second, index) for index in range(5, 10)]


def test_the_wobble_of_brief_chunks_times_gives_nothing_back() -> None:
    """Chunks of a few hundredths of a second take twice as long now and then (a Python
    start-up, a busy machine): what a node holds beyond the depth that says is a fraction
    of a second of work, not worth sending back and forth (break round 32a: up to six
    times a chunk)."""
    farm = Farm()
    farm.node("n1", slots=2, prefetch=32)
    job_id = brief_job(farm, 0.01)
    assert len(farm.running()["n1"]) == 34
    changes = farm.finish(job_id, 1, took=0.1)  # 9 a slot now: 13 held beyond, 1.3 s
    assert _taken_back(changes) == []


def test_a_job_whose_frames_turn_heavy_now_and_then_gives_back_at_most_every_ten_seconds() -> None:
    farm = Farm()
    farm.node("n1", slots=2, prefetch=8)
    job_id = brief_job(farm, 0.01)

    def first_on(node: str) -> int:
        return farm.running()[node][0][1]

    for _ in range(20):
        farm.finish(job_id, first_on("n1"), took=0.01)
        farm.dispatch()
    farm.node("n2", slots=1)
    assert _taken_back(farm.finish(job_id, first_on("n1"), took=3.0)) != []
    for _ in range(4):  # brief again: n1 fills again (n2 takes one), then a heavy frame
        farm.finish(job_id, first_on("n1"), took=0.01)
        farm.dispatch()
    assert len(farm.running()["n1"]) == 10
    farm.finish(job_id, first_on("n2"), took=0.01)  # n2 free again
    heavy = farm.finish(job_id, first_on("n1"), took=3.0)
    assert _taken_back(heavy) == [], "not again within 10 s"
    farm.advance(TAKE_BACK_EVERY)
    assert _taken_back(farm.finish(job_id, first_on("n1"), took=3.0)) != [], "10 s later"


def test_a_node_alone_keeps_what_it_holds_beyond_a_jobs_new_depth() -> None:
    """With no other node free to start them, chunks given back would come back to the
    same node, each with a new attempt, for nothing (break round 32b)."""
    farm = Farm()
    farm.node("n1", slots=2, prefetch=8)
    job_id = brief_job(farm, 0.01)
    farm.node("n2", slots=1)
    farm.dispatch()  # n2 busy too
    assert _taken_back(farm.finish(job_id, 1, took=3.0)) == []


def test_a_first_render_that_was_killed_does_not_judge_the_job_when_it_runs_again() -> None:
    """Cancelled 1 s into its first render and resumed 28 s later, a job was judged long
    at once by that killed render's clock, and what waited ahead came back (34b)."""
    farm = Farm()
    _, second = _queue_of_one_kind(farm)
    farm.scheduler.chunk_started("n1", second, 0, 1, farm.now)  # its first render begins
    farm.advance(1)
    farm.scheduler.job_action([second], "cancel", "alice", farm.now)
    farm.finish(second, 0, "killed", attempt=1, node="n1")
    farm.finish(second, 1, "killed", attempt=1, node="n1")
    farm.advance(28)
    farm.scheduler.job_action([second], "resume", "alice", farm.now)
    farm.dispatch()
    assert farm.running()["n1"] == [(second, 0), (second, 1)], "one runs, one waits ahead"
    assert _taken_back(farm.advance(0.1)) == []
    first = farm.scheduler.jobs[second].chunks[0]
    farm.scheduler.chunk_started("n1", second, 0, first.attempt, farm.now)
    assert _taken_back(farm.advance(1)) == []
    # Its new first render is judged by its own clock.
    assert ("n1", second, 1) in _taken_back(farm.advance(PREFETCH_BELOW))


def test_a_first_render_killed_early_leaves_the_clock_to_the_next_that_still_runs() -> None:
    """Two first renders ran; the first to start was killed at once: what waited ahead
    stayed for the whole of the other's 30 s render, the kind never judged long (34c)."""
    farm = Farm()
    farm.node("n1", slots=2, prefetch=1)
    first = farm.submit(frames="1-1", chunk=1)
    farm.dispatch()
    farm.finish(first, 0, took=0.2)
    second = farm.submit(frames="1-5", chunk=1)
    farm.dispatch()
    held = farm.running()["n1"]
    assert len(held) > 2, held
    farm.scheduler.chunk_started("n1", second, 0, 1, farm.now)
    farm.advance(0.5)
    farm.scheduler.chunk_started("n1", second, 1, 1, farm.now)
    farm.finish(second, 0, "killed", attempt=1, node="n1")
    assert _taken_back(farm.advance(PREFETCH_BELOW - 1)) == []
    assert ("n1", second, 2) in _taken_back(farm.advance(2)), "judged by chunk 1's render"


def test_a_render_turning_long_after_brief_ones_takes_back_what_waits_behind_it() -> None:
    """A brief first chunk, then 30 s ones: the clock judged only a job's first render, so
    what waited ahead on n1 stayed behind each long render while n2 sat idle (34d). And
    while the long render runs, a brief chunk ending elsewhere does not make the job take
    chunks ahead again behind it (break round 35a)."""
    farm = Farm()
    farm.node("n1", slots=1, prefetch=1)
    job_id = short_job(farm)
    farm.dispatch()
    assert farm.running()["n1"] == [(job_id, 1), (job_id, 2)], "one running, one waiting"
    farm.scheduler.chunk_started("n1", job_id, 1, 1, farm.now)  # heavy frames from here on
    farm.node("n2", slots=1)
    assert _taken_back(farm.advance(PREFETCH_BELOW - 1)) == []
    # (A render that started goes on: the agent stops only what has not.)
    assert ("n1", job_id, 2) in _taken_back(farm.advance(1))
    farm.finish(job_id, 2, "killed", node="n1")  # it had not started: it comes back
    farm.dispatch()
    assert farm.running() == {"n1": [(job_id, 1)], "n2": [(job_id, 2)]}
    farm.scheduler.chunk_started("n2", job_id, 2, 2, farm.now)
    farm.finish(job_id, 2, took=0.3, node="n2", attempt=2)  # a brief one, on n2
    farm.dispatch()
    assert farm.running() == {"n1": [(job_id, 1)], "n2": [(job_id, 3)]}, "none behind n1's"
    # The long render ends: the job's own times say what it is from then on.
    farm.finish(job_id, 1, took=30.0, node="n1")
    farm.dispatch()
    assert farm.running()["n1"] == [(job_id, 4)]


def test_a_long_render_of_a_paused_job_keeps_it_from_taking_chunks_ahead_once_resumed() -> None:
    """Paused while its render ran, a job left the clock: resumed, its chunks waited
    behind that render again (break round 35a)."""
    farm = Farm()
    farm.node("n1", slots=1, prefetch=1)
    job_id = short_job(farm)
    farm.dispatch()
    farm.scheduler.chunk_started("n1", job_id, 1, 1, farm.now)
    farm.advance(1)
    farm.scheduler.job_action([job_id], "pause", "alice", farm.now)
    farm.finish(job_id, 2, "killed", node="n1")  # taken back by the pause
    farm.advance(PREFETCH_BELOW)
    farm.scheduler.job_action([job_id], "resume", "alice", farm.now)
    farm.dispatch()
    assert farm.running()["n1"] == [(job_id, 1)], "nothing waits behind its long render"


def test_a_long_first_render_that_began_before_the_job_was_known_short_is_timed() -> None:
    """Its first render began before any chunk of it had ended (nothing went ahead yet);
    a brief one ended beside it and chunks went ahead: the long one was never timed, and
    they waited behind it while n2 sat idle (break round 35a)."""
    farm = Farm()
    farm.node("n1", slots=2, prefetch=1)
    job_id = farm.submit(frames="1-10", chunk=1, argv=OTHER_WORK)
    farm.dispatch()
    assert farm.running()["n1"] == [(job_id, 0), (job_id, 1)]
    farm.scheduler.chunk_started("n1", job_id, 0, 1, farm.now)  # long
    farm.advance(0.3)
    farm.finish(job_id, 1, took=0.3, node="n1")
    farm.dispatch()
    held = [index for _, index in farm.running()["n1"]]
    assert len(held) > 2, "brief by its own time: chunks wait ahead"
    farm.node("n2", slots=1)
    taken = _taken_back(farm.advance(PREFETCH_BELOW))
    assert {("n1", job_id, index) for index in held if index != 0} <= set(taken)


def _behind_another_jobs_render(slots: int) -> tuple[Farm, str, str]:
    """n1 (``slots`` slots, one ahead) renders a frame of ``heavy`` (one chunk; its kind
    not known) and holds chunks of ``short`` (short by its kind) ahead of its slots."""
    farm = Farm()
    farm.node("n1", slots=slots, prefetch=1)
    first = farm.submit(frames="1-1", chunk=1)
    farm.dispatch()
    farm.finish(first, 0, took=0.2)  # its kind is short from now on
    heavy = farm.submit(frames="1-1", chunk=1, argv=OTHER_WORK)
    short = farm.submit(frames="1-10", chunk=1)
    farm.dispatch()
    held = farm.running()["n1"]
    assert held == [(heavy, 0)] + [(short, index) for index in range(slots)], held
    farm.scheduler.chunk_started("n1", heavy, 0, 1, farm.now)
    return farm, heavy, short


def test_what_waits_behind_another_jobs_long_render_comes_back() -> None:
    """A chunk of a short job held ahead on a node whose one slot renders another job's
    long frame waited as long as that render, while n2 sat idle (break round 35b): the
    clock took back only the long render's own job. Now it comes back once that render
    has run PREFETCH_BELOW s, and the node takes nothing ahead until it ends."""
    farm, heavy, short = _behind_another_jobs_render(slots=1)
    assert farm.running()["n1"] == [(heavy, 0), (short, 0)]
    assert _taken_back(farm.advance(PREFETCH_BELOW - 1)) == []
    assert _taken_back(farm.advance(1)) == [("n1", short, 0)]
    assert _taken_back(farm.advance(1)) == [], "asked once"
    farm.finish(short, 0, "killed", node="n1")  # it had not started: back, no retry used
    farm.node("n2", slots=1)
    farm.dispatch()
    assert farm.running() == {"n1": [(heavy, 0)], "n2": [(short, 0)]}, "none ahead on n1"
    farm.finish(heavy, 0, took=30.0)
    farm.dispatch()
    assert farm.running()["n1"] == [(short, 1), (short, 2)], "n1 takes chunks ahead again"


def test_a_node_with_a_slot_free_of_long_renders_keeps_what_waits_there() -> None:
    """One of two slots holds a long render: what waits ahead starts on the other."""
    farm, heavy, short = _behind_another_jobs_render(slots=2)
    assert farm.running()["n1"] == [(heavy, 0), (short, 0), (short, 1)]
    assert _taken_back(farm.advance(PREFETCH_BELOW + 1)) == []


def _hello(heavy: str, short: str, rendered_for: float) -> AgentHello:
    """n1's hello: ``heavy``'s render has run ``rendered_for`` s, ``short``'s chunk waits."""
    return AgentHello(
        name="n1",
        slots=1,
        prefetch=1,
        running=[
            RunningRef(job_id=heavy, chunk=0, attempt=1, rendered_for=rendered_for),
            RunningRef(job_id=short, chunk=0, attempt=1),  # it waits for the slot
        ],
    )


@pytest.mark.parametrize("rendered_for", [40.0, PREFETCH_BELOW - 2])
def test_a_render_a_hello_names_is_timed_from_when_it_began(
    tmp_path: Path, rendered_for: float
) -> None:
    """A leader started again knew nothing of a render begun before its start: chunks
    went ahead behind it for as long as it ran. The agent's hello says how long each
    of its renders has run: one long already is judged at once, before a dispatch pass
    could hand a chunk ahead behind it (a chunk bounced), and however many renders began
    elsewhere in the last seconds (they held it back 5 s: break round 36a)."""
    farm, heavy, short = _behind_another_jobs_render(slots=1)
    store = Store(tmp_path / "farm.db")
    made = {(heavy, 0), (short, 0)}
    store.save(Changes(jobs={heavy, short}, chunks=made, nodes={"n1"}), farm.scheduler)
    jobs, nodes = store.load()
    store.close()
    restarted = Farm()
    restarted.now = farm.now + 1.0
    restarted.scheduler.load(jobs, nodes, restarted.now)
    restarted.node("n2", slots=1, tags=["sim"])
    other = restarted.submit(frames="1-5", chunk=1, argv=OTHER_WORK, tags=["sim"], priority=10)
    restarted.dispatch()
    assert restarted.running()["n2"] == [(other, 0)]
    restarted.scheduler.chunk_started("n2", other, 0, 1, restarted.now)  # just began
    changes, _ = restarted.scheduler.node_connected(
        _hello(heavy, short, rendered_for), restarted.now
    )
    if rendered_for >= PREFETCH_BELOW:
        assert _taken_back(changes) == [("n1", short, 0)], "at once"
    else:
        assert _taken_back(changes) == []
        assert _taken_back(restarted.advance(1.9)) == []
        assert _taken_back(restarted.advance(0.2)) == [("n1", short, 0)], "when 5 s old"
    restarted.finish(short, 0, "killed", node="n1")
    restarted.dispatch()
    assert restarted.running()["n1"] == [(heavy, 0)], "nothing goes ahead behind it"


def test_a_take_back_lost_with_the_link_is_asked_again_when_the_node_is_back() -> None:
    """The link dropped with the take-back in it: the node came back, its hello saying
    the chunk still waited, and it was never asked again; it waited out the long render
    while other nodes idled (break round 36a)."""
    farm, heavy, short = _behind_another_jobs_render(slots=1)
    assert _taken_back(farm.advance(PREFETCH_BELOW)) == [("n1", short, 0)]
    farm.scheduler.node_disconnected("n1", farm.now)  # the ask went with the link
    changes, _ = farm.scheduler.node_connected(_hello(heavy, short, PREFETCH_BELOW + 1), farm.now)
    assert _taken_back(changes) == [("n1", short, 0)]


@pytest.mark.parametrize("rule", ["pause", "disable", "block", "max_running"])
def test_what_may_no_longer_wait_is_asked_back_again_when_its_node_is_back(rule: str) -> None:
    """The take-back went with a dropped link: a paused job's chunk, or one on a node
    disabled meanwhile, started there a second later (break round 36b)."""
    farm = Farm()
    farm.node("n1", slots=1, prefetch=1)
    job_id = short_job(farm)
    farm.dispatch()
    assert farm.running()["n1"] == [(job_id, 1), (job_id, 2)], "one running, one waiting"
    farm.scheduler.node_disconnected("n1", farm.now)
    if rule == "pause":
        farm.scheduler.job_action([job_id], "pause", "alice", farm.now)
    elif rule == "disable":
        farm.scheduler.set_node_enabled("n1", False, "alice", farm.now)
    elif rule == "block":
        farm.scheduler.block_node(job_id, "n1", True, "alice", farm.now)
    else:
        farm.scheduler.patch(job_id, JobPatch(max_running=1), "alice", farm.now)
    hello = AgentHello(
        name="n1",
        slots=1,
        prefetch=1,
        running=[
            RunningRef(job_id=job_id, chunk=1, attempt=1, rendered_for=0.1),
            RunningRef(job_id=job_id, chunk=2, attempt=1),
        ],
    )
    changes, _ = farm.scheduler.node_connected(hello, farm.now)
    assert _taken_back(changes) == [("n1", job_id, 2)]
    # What may wait there still is left alone.
    farm = Farm()
    farm.node("n1", slots=1, prefetch=1)
    job_id = short_job(farm)
    farm.dispatch()
    farm.scheduler.node_disconnected("n1", farm.now)
    changes, _ = farm.scheduler.node_connected(hello, farm.now)
    assert _taken_back(changes) == []
