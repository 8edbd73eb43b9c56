"""A million-frame job: submitted at once, kept compact, shown a page at a time.

The leader makes a chunk only when it is first dispatched or changed
(``server.model.ChunkList``); views read the untouched ones off the job's
layout. So a huge job costs what its touched chunks cost, and ``GET
/api/jobs/ID`` answers one page of chunks plus the frame states as runs.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx

from farmtui.client import FarmClient
from farmtui.protocol import JobDetail
from tests.helpers.leader import InProcessLeader, leader_in_process
from tests.server.test_rest import SPEC, one_line_error

MILLION: dict[str, Any] = {**SPEC, "name": "huge", "frames": "1-1000000", "chunk": 1}


async def submit(http: httpx.AsyncClient, **fields: Any) -> str:
    response = await http.post("/api/jobs", json={**MILLION, **fields})
    assert response.status_code == 201, response.text
    job_id: str = response.json()["id"]
    return job_id


async def test_a_million_frame_job_is_shown_a_page_at_a_time(leader: InProcessLeader) -> None:
    async with leader.http() as http:
        job_id = await submit(http)
        job = leader.leader.job(job_id)
        assert job is not None
        assert job.chunks.made() == []  # nothing made until it runs

        page = (await http.get(f"/api/jobs/{job_id}", params={"limit": 3})).json()
        assert [chunk["index"] for chunk in page["chunks"]] == [0, 1, 2]
        assert page["frame_states"] == {"1": "unassigned", "2": "unassigned", "3": "unassigned"}
        assert page["frame_runs"] == [[1, 1_000_000, "unassigned", 1]]
        assert page["frame_runs_complete"] is True
        assert (page["chunk_count"], page["next_after"]) == (1_000_000, 2)
        assert page["job"]["stats"]["frames_total"] == 1_000_000

        last = (await http.get(f"/api/jobs/{job_id}", params={"after": 999_998})).json()
        assert [chunk["frames"] for chunk in last["chunks"]] == [[1_000_000]]
        assert last["next_after"] is None

        # Without a limit: the largest page, and where the next one starts.
        default = (await http.get(f"/api/jobs/{job_id}")).json()
        assert len(default["chunks"]) == 10_000
        assert default["next_after"] == 9_999
        assert job.chunks.made() == []  # reading made nothing

        for params, error in [
            ({"limit": 0}, "limit=0 is not between 1 and 10000"),
            ({"limit": 10_001}, "limit=10001 is not between 1 and 10000"),
            ({"after": -2}, "after=-2 is not a chunk index (0 or more, or -1)"),
            ({"limit": "ten"}, "limit='ten' is not a whole number"),
        ]:
            refused = await http.get(f"/api/jobs/{job_id}", params=params)
            assert refused.status_code == 400
            assert one_line_error(refused) == error


async def test_frame_runs_follow_the_chunks_that_ran(leader: InProcessLeader) -> None:
    async with leader.http() as http:
        job_id = await submit(http, frames="1-100", chunk=10)
        done = await http.post(
            f"/api/jobs/{job_id}/chunks/actions", json={"action": "set-done", "chunks": [3]}
        )
        assert done.status_code == 200, done.text
        page = (await http.get(f"/api/jobs/{job_id}", params={"limit": 1})).json()
    assert page["frame_runs"] == [
        [1, 30, "unassigned", 1],
        [31, 40, "done", 1],
        [41, 100, "unassigned", 1],
    ]
    job = leader.leader.job(job_id)
    assert job is not None
    assert [chunk.index for chunk in job.chunks.made()] == [3]


async def test_the_whole_job_is_read_page_by_page(leader: InProcessLeader) -> None:
    """``farm show --json`` keeps its promise (every chunk and frame) for any size."""
    async with leader.http() as http:
        job_id = await submit(http, frames="1-12000", chunk=1)

    def read() -> tuple[JobDetail, JobDetail]:
        with FarmClient(leader.url, leader.admin_token) as farm:
            return farm.show_all(job_id), farm.show(job_id, limit=5, after=10)

    # The client is synchronous; the leader serves on this loop.
    detail, page = await asyncio.to_thread(read)
    assert [chunk.index for chunk in detail.chunks] == list(range(12_000))
    assert len(detail.frame_states) == 12_000
    assert detail.next_after is None
    assert [chunk.index for chunk in page.chunks] == [11, 12, 13, 14, 15]


async def test_stepped_and_ragged_frame_lists_cost_a_page_no_more(
    leader: InProcessLeader,
) -> None:
    """Every other frame of two million, or frames so ragged they make no runs:
    a page is still one page (a read-only token must not be able to stall the farm)."""
    async with leader.http() as http:
        stepped = await submit(http, frames="1-2000000x2")
        backwards = await submit(http, frames="1000000-1", chunk=100)
        ragged = await submit(http, frames="1-60000y3")  # all but every 3rd: 2,3,5,6,...
        pages = {
            job_id: (await http.get(f"/api/jobs/{job_id}", params={"limit": 1})).json()
            for job_id in (stepped, backwards, ragged)
        }
    assert pages[stepped]["frame_runs"] == [[1, 1_999_999, "unassigned", 2]]
    assert pages[backwards]["frame_runs"] == [[1_000_000, 1, "unassigned", -1]]
    # 20,000 runs of two frames: cut at 10,000, and said so.
    assert pages[ragged]["frame_runs_complete"] is False
    assert len(pages[ragged]["frame_runs"]) <= 10_001


async def test_job_wide_actions_on_a_million_chunks_make_none_of_them(tmp_path: Path) -> None:
    """cancel, resume, complete and requeue move the untouched chunks all at once."""

    async def act(http: httpx.AsyncClient, job_id: str, action: str) -> dict[str, Any]:
        answer = await http.post("/api/jobs/actions", json={"action": action, "ids": [job_id]})
        assert answer.status_code == 200, answer.text
        page = (await http.get(f"/api/jobs/{job_id}", params={"limit": 1})).json()
        return dict(page)

    async with leader_in_process(tmp_path) as farm, farm.http() as http:
        job_id = await submit(http)
        page = await act(http, job_id, "cancel")
        assert page["job"]["state"] == "cancelled"
        assert page["chunks"][0]["state"] == "cancelled"
        page = await act(http, job_id, "complete")
        assert page["job"]["state"] == "done"
        assert page["frame_runs"] == [[1, 1_000_000, "done", 1]]
        assert page["job"]["stats"]["frames_done"] == 1_000_000
        job = farm.leader.job(job_id)
        assert job is not None
        assert job.chunks.made() == []
    # What the job-wide action did is in the job's row: a restart finds it so.
    async with leader_in_process(tmp_path) as farm, farm.http() as http:
        page = (await http.get(f"/api/jobs/{job_id}", params={"limit": 1})).json()
        assert page["job"]["state"] == "done"
        assert page["job"]["stats"]["chunks_done"] == 1_000_000
        page = await act(http, job_id, "requeue")
        assert page["job"]["state"] == "queued"
        assert page["frame_runs"] == [[1, 1_000_000, "unassigned", 1]]
        assert page["chunks"][0]["state"] == "queued"
