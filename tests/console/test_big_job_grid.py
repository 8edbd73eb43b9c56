"""The frame grid of a job with more chunks than one page (``MAX_PAGE_CHUNKS``)."""

from __future__ import annotations

from farmtui.console.state import FRAME_CODE
from server.views import MAX_PAGE_CHUNKS
from tests.console.conftest import synced
from tests.console.real_farm import RealFarm


async def test_a_job_of_more_chunks_than_a_page_shows_every_frame(farm: RealFarm) -> None:
    """The console gets a big job's first page of chunks: its grid stopped at frame
    10,000 and its legend counted that page's frames only (a failed frame 50,000
    never showed). The grid now comes from the leader's runs of frame states."""
    frames = MAX_PAGE_CHUNKS + 2_000
    job = farm.submit("big", frames=f"1-{frames}", chunk=1, argv=["true"])
    last = farm.client.show(job.id, limit=1, after=frames - 2)  # the last chunk alone
    (chunk,) = last.chunks
    farm.client.chunk_action(job.id, "set-done", [chunk.index])
    app = farm.app()
    async with app.run_test(size=(80, 24)) as pilot:
        await synced(pilot, app, job.id)
        watched = app.state.watched
        assert watched is not None
        assert len(watched.frames) == frames
        assert watched.frames[-1] == frames
        assert watched.state_of(frames) == "done"
        assert watched.counts[FRAME_CODE["done"]] == 1
        assert sum(watched.counts) == frames
