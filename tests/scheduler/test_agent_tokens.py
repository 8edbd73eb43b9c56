"""A job is given only to nodes whose agent knows every token of its commands.

An agent from before ``{input_list}`` failed every chunk of a new ffmpeg job with
"unknown token" (both versions said 0.1.0), blocking itself for the job.
"""

from __future__ import annotations

from farmtui.protocol import WaitReason
from farmtui.renderers import TOKENS, build_argv
from tests.scheduler.paper_farm import Farm

SCENE = "plates/p_####.png"
PLATE = build_argv("ffmpeg", SCENE, "out/c_####.png")


def placed(farm: Farm) -> dict[tuple[str, int], str]:
    return {(a.message.job_id, a.message.chunk): a.node for a in farm.dispatch().assignments}


def test_a_job_using_a_new_token_goes_only_to_agents_that_know_it(farm: Farm) -> None:
    farm.node("old", slots=2)  # its hello lists no tokens
    farm.node("new", slots=1, tokens=sorted(TOKENS))
    farm.submit("comp", frames="1-3", renderer="ffmpeg", argv=PLATE, scene=SCENE)
    farm.submit("plain", frames="1-2")
    assert placed(farm) == {("comp", 0): "new", ("plain", 0): "old", ("plain", 1): "old"}


def test_a_job_no_agent_can_run_says_why(farm: Farm) -> None:
    farm.node("old", slots=2)
    farm.submit("comp", frames="1", renderer="ffmpeg", argv=PLATE, scene=SCENE)
    farm.submit("pre", frames="1", pre_job=["prep", "{outdir_printf}"], output="o/f_####.png")
    assert placed(farm) == {}
    assert farm.scheduler.job_view("comp", now=farm.now).reason == WaitReason(
        kind="tags",
        text="no node's agent knows {input_list} {outdir_printf}: upgrade farmtui on the nodes",
    )
    assert farm.scheduler.job_view("pre", now=farm.now).reason == WaitReason(
        kind="tags", text="no node's agent knows {outdir_printf}: upgrade farmtui on the nodes"
    )
    farm.node("new", slots=2, tokens=sorted(TOKENS))
    assert sorted(placed(farm)) == [("comp", 0), ("pre", 0)]
