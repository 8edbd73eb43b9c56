"""What the leader keeps of a job must not make its garbage collector's pauses grow.

A full collection stops the whole leader while it walks every object the
collector tracks. The leader keeps every chunk it has touched for as long as
it keeps the job, so whatever a chunk holds that the collector tracks is
walked again at every full collection, for good.
"""

from __future__ import annotations

import gc

from tests.scheduler.paper_farm import Farm


def test_a_done_chunk_leaves_nothing_for_the_garbage_collector_to_walk(farm: Farm) -> None:
    """A frame set per done chunk (a frozenset: the collector never stops tracking one)
    made each full collection longer with every chunk done: with 300 agents they were
    120-156 ms and growing through the run."""
    farm.node("n1", slots=100)
    job_id = farm.submit(frames="1-3000")
    farm.dispatch()
    gc.collect()
    before = len(gc.get_objects())
    while running := farm.running().get("n1"):
        for job, chunk in running:
            farm.finish(job, chunk)
        farm.dispatch()
    assert farm.state(job_id) == "done"
    gc.collect()
    assert len(gc.get_objects()) - before < 300, "about one tracked object a chunk done"
