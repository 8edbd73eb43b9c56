"""The scheduler's incremental bookkeeping always equals a recount from scratch.

Each job's counters (chunks and frames per state, running chunks, render
times), its queue of waiting chunks, and the dispatch index are adjusted on
every event rather than recomputed; Hypothesis drives random events through a
paper farm and recounts after each one. The views built from the counters
must say what a walk over every frame says.
"""

from __future__ import annotations

import copy
import dataclasses
import os
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from farmtui.protocol import AgentHello, JobPatch
from server import frame_states
from server.frame_states import job_frame_states
from server.scheduler import SchedulerError
from tests.scheduler.counters import check_counters
from tests.scheduler.paper_farm import Farm

JOB_ACTIONS = [
    "pause",
    "resume",
    "hold",
    "unhold",
    "cancel",
    "requeue",
    "retry-failed",
    "retry-sync",
    "complete",
    "archive",
    "unarchive",
    "delete",
]
CHUNK_ACTIONS = ["retry", "hold", "set-failed", "set-done", "exclude"]

ops = st.one_of(
    st.tuples(
        st.just("submit"),
        st.integers(1, 6),
        st.integers(1, 3),
        st.sampled_from(["plain", "scout", "scripts"]),
    ),
    st.tuples(
        st.just("finish"),
        st.integers(0, 50),
        st.sampled_from(["done", "failed", "killed", "timeout"]),
    ),
    st.tuples(st.just("frames"), st.integers(0, 50), st.booleans()),
    st.tuples(st.just("job"), st.integers(0, 5), st.sampled_from(JOB_ACTIONS)),
    st.tuples(
        st.just("chunk"), st.integers(0, 5), st.integers(0, 7), st.sampled_from(CHUNK_ACTIONS)
    ),
    st.tuples(st.just("time"), st.sampled_from([0.5, 3.0, 30.0])),
    st.tuples(st.just("priority"), st.integers(0, 5), st.integers(40, 60)),
    st.tuples(st.just("move"), st.integers(0, 5), st.sampled_from(["up", "down", "top", "bottom"])),
    st.tuples(st.just("limit"), st.integers(0, 5), st.integers(0, 2)),
    st.tuples(
        st.just("node"),
        st.sampled_from(["n1", "n2"]),
        st.sampled_from(["lost", "back", "off", "on"]),
    ),
)


def _pick_job(farm: Farm, pick: int) -> str | None:
    ids = sorted(farm.scheduler.jobs)
    return ids[pick % len(ids)] if ids else None


def _running(farm: Farm) -> list[tuple[str, str, int, int]]:
    return sorted(
        (name, job_id, index, attempt)
        for name, node in farm.scheduler.nodes.items()
        for job_id, index, attempt in node.running
        if (chunk := farm.scheduler._chunk(job_id, index)) is not None
        and chunk.state == "assigned"
        and chunk.attempt == attempt
    )


def _apply(farm: Farm, op: tuple[Any, ...]) -> None:
    s = farm.scheduler
    kind = op[0]
    if kind == "submit":
        _, frames, size, shape = op
        fields: dict[str, Any] = {"frames": f"1-{frames}", "chunk": size}
        if shape == "scout":
            fields["scout"] = "1"
        if shape == "scripts":
            fields["pre_job"] = ["true"]
            fields["post_job"] = ["true"]
        farm.submit(**fields)
    elif kind == "finish":
        running = _running(farm)
        if running:
            name, job_id, index, attempt = running[op[1] % len(running)]
            outcome = op[2]
            farm.finish(
                job_id,
                index,
                outcome,
                node=name,
                attempt=attempt,
                timeout_kind="max_render" if outcome == "timeout" else None,
            )
    elif kind == "frames":
        running = _running(farm)
        if running:
            name, job_id, index, attempt = running[op[1] % len(running)]
            frames = s.jobs[job_id].chunks[index].frames[:1]
            s.frames_written(name, job_id, index, attempt, frames, op[2], farm.now)
    elif kind == "time":
        farm.advance(op[1])
    elif kind == "node":
        _, name, what = op
        if what == "lost":
            s.node_lost(name, farm.now)
        elif what == "back":
            s.node_connected(AgentHello(name=name, slots=2, agent_id=name), farm.now)
        else:
            s.set_node_enabled(name, what == "on", "bob", farm.now)
    else:
        job_id = _pick_job(farm, op[1])
        if job_id is None:
            return
        try:
            if kind == "job":
                s.job_action([job_id], op[2], "bob", farm.now)
            elif kind == "chunk":
                count = len(s.jobs[job_id].chunks)
                s.chunk_action(job_id, [op[2] % count], op[3], "bob", farm.now)
            elif kind == "priority":
                s.set_priority(job_id, op[2], "bob", farm.now)
            elif kind == "move":
                s.move(job_id, op[2], None, "bob", farm.now)
            elif kind == "limit":
                s.patch(job_id, JobPatch(max_running=op[2]), "bob", farm.now)
        except SchedulerError:
            pass


def _check_views(farm: Farm) -> None:
    """The stats built from the counters equal a walk over every frame and chunk."""
    for job in farm.scheduler.jobs.values():
        stats = farm.scheduler.job_view(job.id).stats
        states = job_frame_states(job)
        assert stats.frames_total == sum(1 for v in states.values() if v != "excluded")
        assert stats.frames_done == sum(1 for v in states.values() if v == "done")
        assert stats.frames_failed == sum(1 for v in states.values() if v == "failed")
        render = [c for c in job.chunks if c.kind == "render" and c.state != "excluded"]
        assert stats.chunks_total == len(render)
        assert stats.chunks_done == sum(1 for c in render if c.state == "done")
        assert stats.chunks_running == sum(1 for c in job.chunks if c.state == "assigned")


@settings(
    max_examples=int(os.environ.get("FARMTUI_COUNTER_EXAMPLES", "150")),
    deadline=None,
    database=None,
)
@given(st.lists(ops, min_size=1, max_size=60))
def test_counters_equal_a_recount_after_any_events(steps: list[tuple[Any, ...]]) -> None:
    farm = Farm()
    for name in ("n1", "n2"):
        farm.scheduler.node_connected(AgentHello(name=name, slots=2, agent_id=name), farm.now)
    # Blocks of three chunks: the frame runs kept between reads are refreshed block
    # by block (``frame_states.RunBlocks``), across the blocks of these small jobs.
    kept, frame_states.RUN_BLOCK = frame_states.RUN_BLOCK, 3
    try:
        for op in steps:
            _apply(farm, op)
            farm.dispatch()
            check_counters(farm.scheduler)
            _check_views(farm)
    finally:
        frame_states.RUN_BLOCK = kept


@settings(max_examples=60, deadline=None, database=None)
@given(st.lists(ops, min_size=1, max_size=40))
def test_a_reload_rebuilds_the_same_counters_and_index(steps: list[tuple[Any, ...]]) -> None:
    farm = Farm()
    for name in ("n1", "n2"):
        farm.scheduler.node_connected(AgentHello(name=name, slots=2, agent_id=name), farm.now)
    for op in steps:
        _apply(farm, op)
        farm.dispatch()
    s = farm.scheduler
    before = {job.id: farm.scheduler.job_view(job.id).stats for job in s.jobs.values()}
    index = s.dispatch_index()
    # What the store would hand back: copies, without the live counters.
    jobs = [dataclasses.replace(copy.deepcopy(job), tally=None) for job in s.jobs.values()]
    s.reload(jobs, copy.deepcopy(list(s.nodes.values())), farm.now)
    check_counters(s)
    assert s.dispatch_index() == index
    assert {job.id: s.job_view(job.id).stats for job in s.jobs.values()} == before


def test_no_free_slot_means_no_dispatch_work() -> None:
    farm = Farm()
    farm.node("n1", slots=1)
    job = farm.submit(frames="1-1000", chunk=1)
    assert len(farm.dispatch().assignments) == 1
    # A heartbeat changes nothing that dispatch or the store cares about.
    heartbeat = farm.scheduler.node_heartbeat("n1", 5.0, 5.0, farm.now)
    assert not heartbeat.jobs
    assert not heartbeat.chunks
    assert not heartbeat.nodes
    assert not farm.dispatch()
    farm.finish(job, 0)
    assert [a.message.chunk for a in farm.dispatch().assignments] == [1]
