"""Under any sequence of events: no GPU is given twice, no limit is overrun, no frame
starts before the upstream frames it needs are done, and what the scheduler counts
as held equals a recount from the attempts that hold slots."""

from __future__ import annotations

import copy
import dataclasses
import os
from collections import Counter
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from farmtui.protocol import AgentHello, GpuInfo
from server.frame_waits import SATISFIED
from server.resources import Limit
from server.scheduler import Scheduler
from tests.scheduler.paper_farm import Farm
from tests.scheduler.test_counters import _apply, ops

GPUS = {"n1": [0, 1, 2], "n2": []}
UNITS = 2

submit_rich = st.tuples(
    st.just("rich"),
    st.integers(1, 6),  # frames
    st.integers(1, 3),  # chunk size
    st.integers(0, 2),  # gpus
    st.booleans(),  # a licence
    st.sampled_from([None, (0, 0), (-1, 1)]),  # frame dependency on the previous job
)
events = st.one_of(ops, submit_rich, st.tuples(st.just("back"), st.sampled_from(["n1", "n2"])))


def _hello(name: str) -> AgentHello:
    inventory = [GpuInfo(index=i, memory=8192) for i in GPUS[name]]
    return AgentHello(name=name, slots=3, agent_id=name, gpus=inventory)


def _step(farm: Farm, op: tuple[Any, ...]) -> None:
    if op[0] == "rich":
        _, frames, size, gpus, licence, offset = op
        fields: dict[str, Any] = {"frames": f"1-{frames}", "chunk": size, "gpus": gpus}
        if licence:
            fields["limits"] = ["nuke"]
        jobs = sorted(farm.scheduler.jobs)
        if offset is not None and jobs:
            fields.update(after=[jobs[-1]], after_frames=True, after_offset=offset)
        farm.submit(**fields)
    elif op[0] == "back" or op[:3] == ("node", op[1], "back"):
        farm.scheduler.node_connected(_hello(op[1]), farm.now)
    else:
        _apply(farm, op)


# What each attempt was handed, as the agents saw it: (job, chunk, attempt) -> (GPUs, limits).
Handed = dict[tuple[str, int, int], tuple[list[int], list[str]]]


def _held(s: Scheduler, handed: Handed) -> tuple[dict[str, list[int]], Counter[str]]:
    """GPUs per node and units per limit, recounted from every attempt that holds a slot."""
    gpus: dict[str, list[int]] = {}
    units: Counter[str] = Counter()
    for name, node in s.nodes.items():
        for key in node.running:
            given, limits = handed.get(key, ([], []))
            gpus.setdefault(name, []).extend(given)
            units.update(limits)
    return gpus, units


def _check_dispatch(farm: Farm, handed: Handed) -> None:
    s = farm.scheduler
    for assignment in farm.dispatch().assignments:
        message = assignment.message
        job = s.jobs[message.job_id]
        key = (message.job_id, message.chunk, message.attempt)
        handed[key] = (message.gpus or [], [] if message.sync_from else list(job.spec.limits))
        if not job.spec.after_frames:
            continue
        start, end = job.spec.after_offset
        for dep_id in job.spec.after:
            dep = s.jobs.get(dep_id)
            if dep is None or dep.state == "done":
                continue
            for frame in assignment.message.frames:
                for wanted in range(frame + start, frame + end + 1):
                    index = dep.chunks.layout.chunk_of(wanted)
                    if index is not None:
                        assert dep.chunks.look(index).state in SATISFIED


def _check_holdings(s: Scheduler, handed: Handed) -> None:
    gpus, units = _held(s, handed)
    for name, held in gpus.items():
        assert len(held) == len(set(held)), f"a GPU of {name} given twice: {held}"
        assert set(held) <= set(GPUS[name])
        assert sorted(held) == s.resources.busy_gpus(name)
    assert units["nuke"] <= UNITS
    assert +s.resources.in_use == +units


@settings(
    max_examples=int(os.environ.get("FARMTUI_COUNTER_EXAMPLES", "150")),
    deadline=None,
    database=None,
)
@given(st.lists(events, min_size=1, max_size=60))
def test_gpus_limits_and_frame_dependencies_hold_after_any_events(
    steps: list[tuple[Any, ...]],
) -> None:
    farm = Farm()
    farm.scheduler.set_limit(Limit("nuke", UNITS), "nuke", "admin", farm.now)
    for name in GPUS:
        farm.scheduler.node_connected(_hello(name), farm.now)
    handed: Handed = {}
    for op in steps:
        _step(farm, op)
        _check_dispatch(farm, handed)
        _check_holdings(farm.scheduler, handed)


@settings(max_examples=60, deadline=None, database=None)
@given(st.lists(events, min_size=1, max_size=40))
def test_a_restarted_leader_reads_the_same_holdings_back(steps: list[tuple[Any, ...]]) -> None:
    farm = Farm()
    farm.scheduler.set_limit(Limit("nuke", UNITS), "nuke", "admin", farm.now)
    for name in GPUS:
        farm.scheduler.node_connected(_hello(name), farm.now)
    handed: Handed = {}
    for op in steps:
        _step(farm, op)
        _check_dispatch(farm, handed)
    s = farm.scheduler
    # A deleted job's attempts are not in the store: their holdings end with it.
    live = all(key[0] in s.jobs for node in s.nodes.values() for key in node.running)
    before = (+s.resources.in_use, {name: s.resources.busy_gpus(name) for name in GPUS})
    jobs = [dataclasses.replace(copy.deepcopy(job), tally=None) for job in s.jobs.values()]
    s.reload(jobs, copy.deepcopy(list(s.nodes.values())), farm.now)
    after = (+s.resources.in_use, {name: s.resources.busy_gpus(name) for name in GPUS})
    if live:
        assert after == before
    _check_dispatch(farm, handed)
