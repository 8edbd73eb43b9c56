"""What the store writes per event, and that a restart rebuilds the same farm.

Chunk rows hold only what changed since ``build_chunks``; a job row is
rewritten only when the job itself changed. A restart rebuilds the chunks
from the spec plus those rows, and the scheduler's counters and dispatch
index from the chunks.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from farmtui.protocol import AgentHello, JobSpec
from server.model import Changes
from server.scheduler import Scheduler, SchedulerConfig
from server.store import Store, encode_chunk
from tests.scheduler.counters import check_counters
from tests.scheduler.paper_farm import Farm
from tests.scheduler.test_counters import _apply, ops

SPEC = JobSpec(name="shot", frames="1-1000", chunk=1, argv=["render"], output="r/f_####.png")


def _writes(store: Store, changes: Changes, scheduler: Scheduler) -> int:
    before = store.db.total_changes
    store.save(changes, scheduler)
    return store.db.total_changes - before


def test_submit_writes_one_row_and_a_finished_chunk_one_more(tmp_path: Path) -> None:
    farm = Farm()
    store = Store(tmp_path / "farm.db")
    changes = farm.scheduler.submit("job1", SPEC, "alice", farm.now)
    assert _writes(store, changes, farm.scheduler) == 1  # the job row; no chunk rows
    changes = farm.node("n1", slots=1)
    changes.merge(farm.dispatch())
    store.save(changes, farm.scheduler)
    farm.now += 5
    changes = farm.finish("job1", 0)
    changes.merge(farm.dispatch())
    # The finished chunk, the next one assigned, the node: no job row (it did not change).
    assert _writes(store, changes, farm.scheduler) == 3
    row = store.db.execute("SELECT data FROM chunks WHERE idx = 0").fetchone()[0]
    assert len(row) < 300
    assert '"frames"' not in row


def _stores_small(tmp_path: Path, frames: int) -> None:
    scheduler = Scheduler(SchedulerConfig())
    spec = msgspec.structs.replace(SPEC, frames=f"1-{frames}")
    store = Store(tmp_path / "farm.db")
    store.save(scheduler.submit("big", spec, "alice", 1000.0), scheduler)
    store.close()
    size = sum(p.stat().st_size for p in tmp_path.iterdir())
    assert size < 1_000_000  # untouched chunks have no rows
    jobs, _ = Store(tmp_path / "farm.db").load()
    assert len(jobs[0].chunks) == frames
    assert jobs[0].chunks[-1].frames == (frames,)


def test_a_job_of_many_frames_stores_small(tmp_path: Path) -> None:
    _stores_small(tmp_path, 100_000)


# A million frames: bench/scheduler_scale.py measures it (too slow for the suite).


def test_rows_an_older_leader_wrote_still_load(tmp_path: Path) -> None:
    farm = Farm()
    store = Store(tmp_path / "farm.db")
    store.save(farm.scheduler.submit("job1", SPEC, "alice", farm.now), farm.scheduler)
    farm.node("n1", slots=1)
    farm.dispatch()
    job = farm.scheduler.jobs["job1"]
    whole = msgspec.json.encode(job.chunks[0]).decode()  # every field, as older leaders wrote
    with store.db:
        store.db.execute(
            "INSERT OR REPLACE INTO chunks (job_id, idx, data) VALUES (?, ?, ?)",
            ("job1", 0, whole),
        )
    (loaded,), _ = Store(tmp_path / "farm.db").load()
    assert encode_chunk(loaded.chunks[0]) == encode_chunk(job.chunks[0])
    assert loaded.chunks[0].state == "assigned"


def test_done_frames_an_older_leader_stored_as_a_set_load_in_frame_order(tmp_path: Path) -> None:
    """Before ``done`` was a tuple it was stored in a set's order; a done chunk shares
    its frames tuple (nothing more for the garbage collector to walk)."""
    farm = Farm()
    store = Store(tmp_path / "farm.db")
    spec = msgspec.structs.replace(SPEC, frames="30-37", chunk=4)
    store.save(farm.scheduler.submit("job1", spec, "alice", farm.now), farm.scheduler)
    rows = {0: [32, 33, 30, 31], 1: [37, 34]}  # chunk 0 done, chunk 1 half written
    with store.db:
        for index, done in rows.items():
            row = msgspec.json.encode({"state": "done" if index == 0 else "assigned", "done": done})
            store.db.execute(
                "INSERT OR REPLACE INTO chunks (job_id, idx, data) VALUES (?, ?, ?)",
                ("job1", index, row.decode()),
            )
    (loaded,), _ = Store(tmp_path / "farm.db").load()
    done, half = loaded.chunks[0], loaded.chunks[1]
    assert done.done is done.frames
    assert half.done == (34, 37)


@settings(
    max_examples=40,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(st.lists(ops, min_size=1, max_size=40))
def test_a_restart_rebuilds_the_same_farm(tmp_path: Path, steps: list[tuple[Any, ...]]) -> None:
    for old in tmp_path.iterdir():
        old.unlink()
    farm = Farm()
    store = Store(tmp_path / "farm.db")
    for name in ("n1", "n2"):
        hello = AgentHello(name=name, slots=2, agent_id=name)
        store.save(farm.scheduler.node_connected(hello, farm.now)[0], farm.scheduler)
    for op in steps:
        changes = Changes()
        _apply_recorded(farm, op, changes)
        changes.merge(farm.dispatch())
        store.save(changes, farm.scheduler)
    store.close()
    jobs, nodes = Store(tmp_path / "farm.db").load()
    fresh = Scheduler(SchedulerConfig())
    fresh.load(jobs, nodes, farm.now)
    old = farm.scheduler
    assert sorted(fresh.jobs) == sorted(old.jobs)
    for job_id, job in old.jobs.items():
        again = fresh.jobs[job_id]
        assert [encode_chunk(c) for c in again.chunks] == [encode_chunk(c) for c in job.chunks]
        assert [c.frames for c in again.chunks] == [c.frames for c in job.chunks]
        # The time left counts the slots of the nodes online: none are, just after a restart.
        stats, again_stats = old.job_view(job_id).stats, fresh.job_view(job_id).stats
        assert msgspec.structs.replace(again_stats, etr=stats.etr) == stats
    check_counters(fresh)


def _apply_recorded(farm: Farm, op: tuple[Any, ...], into: Changes) -> None:
    """Apply ``op`` as the leader would, keeping every Changes it produced."""
    scheduler = farm.scheduler
    names = [
        name
        for name in dir(Scheduler)
        if not name.startswith("_") and callable(getattr(Scheduler, name))
    ]
    originals = {name: getattr(scheduler, name) for name in names}

    def recorder(method: Any) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            result = method(*args, **kwargs)
            changes = result[0] if isinstance(result, tuple) else result
            if isinstance(changes, Changes):
                into.merge(changes)
            return result

        return call

    for name, method in originals.items():
        setattr(scheduler, name, recorder(method))
    try:
        _apply(farm, op)
    finally:
        for name in originals:
            delattr(scheduler, name)


def test_a_job_keeps_the_chunks_it_was_cut_into(tmp_path: Path) -> None:
    # Leaders before cut 2 put 1,5,10-12 in one chunk; such a job, stored, keeps
    # its chunks' indices (rows of its chunks refer to them), a new job does not.
    spec = msgspec.structs.replace(SPEC, frames="1,5,10-20", chunk=5)
    scheduler = Scheduler(SchedulerConfig())
    store = Store(tmp_path / "farm.db")
    store.save(scheduler.submit("new", spec, "alice", 1000.0), scheduler)
    store.save(scheduler.submit("old", spec, "alice", 1000.0), scheduler)
    with store.db:  # the row as a leader before cut 2 wrote it
        row = store.db.execute("SELECT data FROM jobs WHERE id = 'old'").fetchone()[0]
        assert '"cut":2' in row
        old = row.replace('"chunks":{"cut":2}', '"chunks":[]')
        store.db.execute("UPDATE jobs SET data = ? WHERE id = 'old'", (old,))
    jobs, _ = Store(tmp_path / "farm.db").load()
    by_id = {job.id: job for job in jobs}
    assert [list(c.frames) for c in by_id["new"].chunks.looks()] == [
        [1, 5],
        [10, 11, 12, 13, 14],
        [15, 16, 17, 18, 19],
        [20],
    ]
    assert [list(c.frames) for c in by_id["old"].chunks.looks()] == [
        [1, 5, 10, 11, 12],
        [13, 14, 15, 16, 17],
        [18, 19, 20],
    ]
