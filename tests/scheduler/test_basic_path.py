"""Submit, dispatch, report, finish: the path every job takes."""

from __future__ import annotations

import pytest

from server.scheduler import SchedulerError
from tests.scheduler.paper_farm import Farm


def test_a_job_renders_to_done_on_one_node(farm: Farm) -> None:
    job = farm.submit(frames="1-4", chunk=2, output="renders/shot/frame_####.png")
    farm.node("n1")
    changes = farm.dispatch()
    assert len(changes.assignments) == 1
    message = changes.assignments[0].message
    assert changes.assignments[0].node == "n1"
    assert (message.chunk, message.attempt, message.frames) == (0, 1, [1, 2])
    assert message.argv == ["render", "{start}", "{end}"]  # the agent expands tokens
    assert message.outputs == ["renders/shot/frame_0001.png", "renders/shot/frame_0002.png"]
    assert message.outdir == "renders/shot"
    assert message.output == "renders/shot/frame_####.png"
    assert message.log_path == f"jobs/{job}/chunk-0000.attempt-1.log"
    assert farm.state(job) == "rendering"
    assert farm.frame_states(job) == {
        1: "assigned",
        2: "assigned",
        3: "unassigned",
        4: "unassigned",
    }

    farm.scheduler.chunk_started("n1", job, 0, 1, farm.now)
    staged = farm.scheduler.frames_written("n1", job, 0, 1, [1], True, farm.now)
    assert staged.frames == [(job, [1], "staged")]
    farm.finish(job, 0)
    assert farm.frame_states(job)[1] == "done"
    farm.dispatch()
    farm.finish(job, 1)
    assert farm.state(job) == "done"
    view = farm.scheduler.job_view(job)
    assert (view.stats.frames_done, view.stats.frames_total) == (4, 4)


def test_done_job_notifies_its_owner(farm: Farm) -> None:
    job = farm.submit(frames="1")
    farm.node("n1")
    farm.dispatch()
    changes = farm.finish(job, 0)
    assert [n.kind for n in changes.notifications] == ["done"]


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"frames": "1-x"}, "malformed frame list"),
        ({"frames": ""}, "empty"),
        ({"chunk": 0}, "chunk: 0 is out of range"),
        ({"priority": 101}, "priority"),
        ({"priority": -1}, "priority"),
        ({"output": "/abs/frame_####.png"}, "relative"),
        ({"output": "../up/frame_####.png"}, "escapes"),
        ({"output": "frame.png"}, "padding"),
        ({"renderer": " "}, "renderer"),
        ({"argv": []}, "command"),
        ({"after": ["nope"]}, "unknown job nope"),
        ({"scout": "500"}, "scout"),
        ({"frames": "1-100000000"}, "too many frames"),
        ({"argv": ["r", "{strat}"]}, "unknown token"),
        ({"argv": ["r", "{output}"]}, "no output pattern"),
        ({"argv": ["r", "{scene}"]}, "no scene"),
    ],
)
def test_bad_submissions_are_refused_and_change_nothing(
    farm: Farm, fields: dict[str, object], message: str
) -> None:
    with pytest.raises(SchedulerError, match=message):
        farm.submit("bad", **fields)
    assert "bad" not in farm.scheduler.jobs
    assert farm.order() == []


def test_a_non_generic_renderer_needs_no_argv(farm: Farm) -> None:
    farm.submit("b", renderer="blender", scene="shot.blend", output="r/f_####.png", argv=[])
    assert farm.state("b") == "queued"
    assert farm.scheduler.jobs["b"].spec.argv[:3] == ["blender", "-b", "shot.blend"]


def test_a_renderer_missing_what_its_command_needs_is_refused(farm: Farm) -> None:
    with pytest.raises(SchedulerError, match="output pattern"):
        farm.submit("b", renderer="blender", scene="shot.blend", argv=[])
    assert "b" not in farm.scheduler.jobs


def test_duplicate_job_id_is_refused(farm: Farm) -> None:
    farm.submit("a")
    with pytest.raises(SchedulerError, match="already exists"):
        farm.submit("a")


def test_show_json_has_what_scripts_rely_on(farm: Farm) -> None:
    import msgspec

    job = farm.submit("j", frames="1-3", name="shot")
    farm.node("n1")
    farm.dispatch()
    detail = msgspec.json.decode(msgspec.json.encode(farm.scheduler.job_detail(job)))
    assert {"id", "name", "state", "priority", "frames"} <= detail["job"].keys()
    assert detail["job"]["name"] == "shot"
    assert detail["frame_states"] == {"1": "assigned", "2": "unassigned", "3": "unassigned"}
    chunk = detail["chunks"][0]
    assert (chunk["state"], chunk["node"], len(chunk["attempts"])) == ("assigned", "n1", 1)
    nodes = msgspec.json.decode(msgspec.json.encode(farm.scheduler.node_views()))
    assert nodes[0]["running"] == [{"job_id": job, "chunk": 0, "attempt": 1}]
