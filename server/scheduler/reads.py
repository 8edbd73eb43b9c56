"""What consoles and the API read of the farm: job, chunk and node views.

``server.views`` makes them; this part gives it the ranks, the slot census and
why a job waits, read at the latest time an event or a dispatch pass was given.
"""

from __future__ import annotations

from bisect import bisect_right

from farmtui.protocol import ChunkView, JobDetail, JobView, NodeView
from server import dispatch_order, reasons, views
from server.model import Node
from server.scheduler.state import SchedulerState
from server.scheduler_config import SchedulerError


class FarmReads(SchedulerState):
    """Views for consoles and the API; they change nothing."""

    def _waiting(self, now: float | None) -> views.Waiting:
        """What a view needs to say why a job waits (``server.reasons``)."""
        farm = self._reasons
        if (
            farm is None
            or farm.jobs is not self.jobs
            or farm.nodes is not self.nodes
            or farm.free is not self._free
        ):
            # Kept until a node changes shape: which nodes carry which tags is then
            # counted once for every view, not once per job.
            farm = self._reasons = reasons.Farm(
                self.jobs, self.nodes, self._free, self.resources, self.frame_waits
            )
        return views.Waiting(farm, self.config, self._clock_seen if now is None else now)

    def job_view(self, job_id: str, now: float | None = None) -> JobView:
        """``now``: the time its reason is read at (default: the latest event's)."""
        job = self._job(job_id)
        return views.job_view(
            job,
            self.positions().get(job_id, -1),
            self.nodes.values(),
            self._census,
            self._waiting(now),
        )

    def job_views(
        self,
        include_archived: bool,
        now: float | None = None,
        page: views.JobPage | None = None,
    ) -> list[JobView]:
        """In dispatch order; one ``page`` of them (the jobs after ``page.after``) if asked."""
        positions = self.positions()
        waiting = self._waiting(now)
        ordered = dispatch_order.in_dispatch_order(self.jobs.values(), include_archived)
        if page is not None:
            first = 0
            if page.after is not None:
                key = dispatch_order.dispatch_key(self._job(page.after))
                first = bisect_right(ordered, key, key=dispatch_order.dispatch_key)
            ordered = ordered[first : first + page.limit]
        return [
            views.job_view(
                job, positions.get(job.id, -1), self.nodes.values(), self._census, waiting
            )
            for job in ordered
        ]

    def chunk_view(self, job_id: str, chunk: int) -> ChunkView:
        record = self._chunk(job_id, chunk)
        if record is None:
            raise SchedulerError(f"job {job_id} has no chunk {chunk}")
        return views.chunk_view(record)

    def job_detail(
        self, job_id: str, page: views.ChunkPage | None = None, now: float | None = None
    ) -> JobDetail:
        job = self._job(job_id)
        return views.job_detail(
            job,
            self.positions().get(job_id, -1),
            self.nodes.values(),
            self._census,
            page,
            self._waiting(now),
        )

    def node_views(self) -> list[NodeView]:
        return [self.node_view(node) for _, node in sorted(self.nodes.items())]

    def node_view(self, node: Node) -> NodeView:
        return views.node_view(node, self.resources.busy_gpus(node.name))
