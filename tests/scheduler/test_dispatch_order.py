"""Priority first (lower sooner), then queue order; moves stay inside a priority group."""

from __future__ import annotations

import pytest

from server.scheduler import SchedulerError
from tests.scheduler.paper_farm import Farm


def assigned_jobs(farm: Farm) -> list[str]:
    return [a.message.job_id for a in farm.dispatch().assignments]


def test_lower_priority_number_dispatches_first_then_queue_order(farm: Farm) -> None:
    farm.submit("late", priority=80)
    farm.submit("a50", priority=50)
    farm.submit("urgent", priority=10)
    farm.submit("b50")  # default 50, after a50
    assert farm.order() == ["urgent", "a50", "b50", "late"]
    assert [farm.scheduler.job_view(j).position for j in farm.order()] == [0, 1, 2, 3]
    farm.node("n1", slots=4)
    assert assigned_jobs(farm) == ["urgent", "a50", "b50", "late"]


def test_one_slot_goes_to_the_front_of_the_queue(farm: Farm) -> None:
    farm.submit("a", frames="1-3")
    farm.submit("b", frames="1-3", priority=20)
    farm.node("n1")
    assert assigned_jobs(farm) == ["b"]


def test_moves_within_a_group(farm: Farm) -> None:
    for name in ("a", "b", "c", "d"):
        farm.submit(name)
    farm.submit("hi", priority=5)
    farm.scheduler.move("c", "up", None, "op", farm.now)
    assert farm.order() == ["hi", "a", "c", "b", "d"]
    farm.scheduler.move("a", "down", None, "op", farm.now)
    assert farm.order() == ["hi", "c", "a", "b", "d"]
    farm.scheduler.move("d", "top", None, "op", farm.now)
    assert farm.order() == ["hi", "d", "c", "a", "b"]
    farm.scheduler.move("d", "bottom", None, "op", farm.now)
    assert farm.order() == ["hi", "c", "a", "b", "d"]
    # Top of its group is not the top of the queue: priority always wins.
    farm.scheduler.move("b", "top", None, "op", farm.now)
    assert farm.order() == ["hi", "b", "c", "a", "d"]
    # Already at the edge of its group: refused, naming what it would have passed.
    with pytest.raises(SchedulerError, match="would pass job hi .priority 5.: priority always"):
        farm.scheduler.move("b", "up", None, "op", farm.now)
    with pytest.raises(SchedulerError, match="job hi is already first of priority 5$"):
        farm.scheduler.move("hi", "up", None, "op", farm.now)
    with pytest.raises(SchedulerError, match="job d is already last of priority 50$"):
        farm.scheduler.move("d", "down", None, "op", farm.now)
    assert farm.order() == ["hi", "b", "c", "a", "d"]


def test_drag_and_drop_before_a_job_of_the_same_group(farm: Farm) -> None:
    for name in ("a", "b", "c", "d"):
        farm.submit(name)
    changes = farm.scheduler.move("d", None, "b", "op", farm.now)
    assert farm.order() == ["a", "d", "b", "c"]
    assert {"d", "b", "c"} <= changes.jobs  # their positions changed
    assert changes.events[0].actor == "op"
    # Many drops into the same gap keep the order exact.
    for _ in range(80):
        farm.scheduler.move("c", None, "b", "op", farm.now)
        farm.scheduler.move("b", None, "c", "op", farm.now)
    assert farm.order() == ["a", "d", "b", "c"]


def test_drag_across_priority_groups_is_refused(farm: Farm) -> None:
    farm.submit("a")
    farm.submit("hi", priority=10)
    with pytest.raises(SchedulerError, match="priority always wins"):
        farm.scheduler.move("a", None, "hi", "op", farm.now)
    assert farm.order() == ["hi", "a"]


def test_changing_priority_joins_the_end_of_the_new_group_and_spares_running_chunks(
    farm: Farm,
) -> None:
    farm.submit("a", frames="1-4")
    farm.submit("b", frames="1-4", priority=20)
    farm.submit("c", frames="1-4", priority=20)
    farm.node("n1")
    assert assigned_jobs(farm) == ["b"]
    changes = farm.scheduler.set_priority("a", 20, "admin", farm.now)
    assert farm.order() == ["b", "c", "a"]
    assert changes.kills == []
    assert changes.assignments == []
    farm.scheduler.set_priority("c", 0, "admin", farm.now)
    assert farm.order() == ["c", "b", "a"]
    # b's chunk keeps running; the next free slot goes to the new front, c.
    assert farm.scheduler.jobs["b"].chunks[0].state == "assigned"
    assert farm.dispatch().assignments == []
    farm.finish("b", 0)
    assert assigned_jobs(farm) == ["c"]


def test_priority_out_of_range_is_refused(farm: Farm) -> None:
    farm.submit("a")
    with pytest.raises(SchedulerError, match="0-100"):
        farm.scheduler.set_priority("a", 200, "admin", farm.now)


def test_max_running_caps_chunks_at_once(farm: Farm) -> None:
    farm.submit("a", frames="1-10", max_running=2)
    farm.submit("b", frames="1-10")
    farm.node("n1", slots=8)
    jobs = assigned_jobs(farm)
    assert jobs.count("a") == 2
    assert jobs.count("b") == 6


def test_tags_pick_the_pool(farm: Farm) -> None:
    farm.submit("gpu", frames="1-2", tags=["gpu"])
    farm.node("cpu1")
    assert assigned_jobs(farm) == []
    farm.node("gpu1", tags=["gpu", "linux"])
    changes = farm.dispatch()
    assert [(a.node, a.message.job_id) for a in changes.assignments] == [("gpu1", "gpu")]


def test_a_higher_job_that_cannot_use_a_node_lets_a_lower_one_have_it(farm: Farm) -> None:
    farm.submit("gpu", tags=["gpu"], priority=1)
    farm.submit("any")
    farm.node("cpu1")
    assert assigned_jobs(farm) == ["any"]


def test_disabled_nodes_get_nothing(farm: Farm) -> None:
    farm.submit("a", frames="1-3")
    farm.node("n1")
    farm.scheduler.set_node_enabled("n1", False, "admin", farm.now)
    assert assigned_jobs(farm) == []
    assert farm.scheduler.node_views()[0].state == "disabled"
    # Reconnecting does not re-enable it.
    farm.node("n1")
    assert assigned_jobs(farm) == []
    farm.scheduler.set_node_enabled("n1", True, "admin", farm.now)
    assert assigned_jobs(farm) == ["a"]


def test_after_waits_until_the_dependency_is_done(farm: Farm) -> None:
    farm.submit("sim")
    farm.submit("render", after=["sim"], priority=0)
    farm.node("n1", slots=2)
    assert assigned_jobs(farm) == ["sim"]
    assert farm.state("render") == "queued"
    farm.finish("sim", 0)
    assert assigned_jobs(farm) == ["render"]


def test_after_keeps_waiting_when_the_dependency_fails(farm: Farm) -> None:
    farm.submit("sim", retries=0)
    farm.submit("render", after=["sim"])
    farm.node("n1")
    farm.dispatch()
    farm.finish("sim", 0, "failed")
    assert farm.state("sim") == "failed"
    assert assigned_jobs(farm) == []
    assert farm.state("render") == "queued"


def test_no_chunk_is_ever_assigned_twice(farm: Farm) -> None:
    farm.submit("a", frames="1-5")
    farm.node("n1", slots=3)
    farm.node("n2", slots=3)
    first = farm.dispatch().assignments
    second = farm.dispatch().assignments
    chunks = [a.message.chunk for a in first + second]
    assert sorted(chunks) == [0, 1, 2, 3, 4]
    assert sum(len(v) for v in farm.running().values()) == 5


def test_archived_jobs_leave_the_queue_and_its_positions(farm: Farm) -> None:
    farm.submit("a")
    farm.submit("b")
    changes = farm.scheduler.job_action(["a"], "archive", "op", farm.now)
    assert farm.order() == ["b"]
    assert farm.scheduler.job_view("b").position == 0
    assert farm.scheduler.job_view("a").position == -1
    assert {"a", "b"} <= changes.jobs
    assert [v.id for v in farm.scheduler.job_views(include_archived=True)] == ["a", "b"]
    farm.node("n1", slots=2)
    assert assigned_jobs(farm) == ["b"]
    with pytest.raises(SchedulerError, match="archived"):
        farm.scheduler.move("a", "up", None, "op", farm.now)


def test_a_refused_move_names_the_jobs_by_their_names() -> None:
    """Their ids alone were all the refusal said (break round 33c)."""
    farm = Farm()
    farm.submit("0001aa", name="longA", priority=50)
    farm.submit("0002bb", name="urgent", priority=10)
    with pytest.raises(
        SchedulerError,
        match=r"^job longA \(0001aa\) is already first of priority 50; moving it up would pass "
        r"job urgent \(0002bb\) \(priority 10\)",
    ):
        farm.scheduler.move("0001aa", "up", None, "op", farm.now)
