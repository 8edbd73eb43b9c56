"""The main screen's part for failures: the Failures view, retrying and blocking from
it, opening any attempt's output, a job's events."""

from __future__ import annotations

import time

from textual import on

from farmtui.console.later import later
from farmtui.console.screens.main_parts import ScreenParts
from farmtui.console.screens.unblock import UnblockScreen
from farmtui.console.widgets.failures_panel import FailuresTable
from farmtui.console.widgets.job_detail import JobDetailPanel
from farmtui.console.widgets.line_table import LineTable
from farmtui.frames import parse_frames
from farmtui.protocol import ChunkView, FailureView, FetchEvents, FetchFailures, JobView

FAILURES_PERIOD = 1.0  # the failures list is asked for at most this often (seconds)


class Triage(ScreenParts):
    """Part of ``MainScreen``; see ``farmtui.console.screens.main_parts``."""

    @property
    def failures_shown(self) -> bool:
        """Whether the failures view is on screen (alone, or beside the jobs table)."""
        return self.view == "failures" or (
            self.side_view == "failures" and not self.has_class("-narrow")
        )

    def fetch_failures(self) -> None:
        """Ask for the failures list now, or once FAILURES_PERIOD has passed since the last."""
        wait = self._failures_sent + FAILURES_PERIOD - time.monotonic()
        if wait > 0:
            if self._failures_timer is None:
                self._failures_timer = later(self, wait, self._failures_due)
            return
        self._failures_sent = time.monotonic()
        self._send(FetchFailures(), "")

    def _failures_due(self) -> None:
        self._failures_timer = None
        if self.failures_shown:
            self.fetch_failures()

    @on(LineTable.Activated, "#failures")
    def _failure_activated(self, event: LineTable.Activated) -> None:
        failure = self.failures.table.by_key.get(event.key)
        if failure is not None:
            self.open_attempt(failure.job_id, failure.chunk, failure.attempt)

    def open_attempt(self, job_id: str, chunk: int, attempt: int) -> None:
        """Task Output with one attempt of any job's chunk (watching the job first)."""
        self.action_view("logs")
        self.logs.show_source("task")
        self._output_wanted = (job_id, chunk, attempt)
        watched = self.state.watched
        if watched is not None and watched.job_id == job_id:
            self._open_wanted_output()
            return
        self.jobs.move_cursor_to_key(job_id)
        self._watch_wanted = None
        self.watch_job(job_id)

    def _open_wanted_output(self) -> None:
        wanted = self._output_wanted
        watched = self.state.watched
        if wanted is None or watched is None or watched.job_id != wanted[0]:
            return
        self._output_wanted = None
        _, chunk, attempt = wanted
        self.logs.pick_chunk(chunk, attempt)

    def _job_of_failure(self, failure: FailureView) -> JobView | None:
        """The failure's job, or None (and a word to the operator) when it is gone."""
        job = self.state.jobs.get(failure.job_id)
        if job is None:
            self.notify(f"{failure.job_name} is gone", severity="warning")
        return job

    @on(FailuresTable.RetryWanted)
    def _failure_retry(self, event: FailuresTable.RetryWanted) -> None:
        failure = event.failure
        job = self._job_of_failure(failure)
        if job is not None:
            self.operator.chunk_action_of("retry", job, [self._chunk_of_failure(failure)])

    def _chunk_of_failure(self, failure: FailureView) -> ChunkView:
        """The chunk as the detail view knows it, else as the failures list describes it."""
        watched = self.state.watched
        if watched is not None and watched.job_id == failure.job_id:
            known = watched.chunks.get(failure.chunk)
            if known is not None:
                return known
        try:
            frames = parse_frames(failure.frames)
        except ValueError:
            frames = []
        return ChunkView(
            index=failure.chunk, frames=frames, state=failure.chunk_state, node=failure.node
        )

    @on(FailuresTable.BlockWanted)
    def _failure_block(self, event: FailuresTable.BlockWanted) -> None:
        failure = event.failure
        job = self._job_of_failure(failure)
        if job is not None:
            self.operator.block_node(job, failure.node, failure.node not in job.blocked_nodes)

    @on(JobDetailPanel.UnblockWanted)
    def _detail_unblock(self, event: JobDetailPanel.UnblockWanted) -> None:
        job = event.job

        def picked(node: str | None) -> None:
            if node is not None:
                self.operator.block_node(job, node, False, ask=False)

        self.app.push_screen(UnblockScreen(job, self.state.clock()), picked)

    @on(JobDetailPanel.EventsWanted)
    def _job_events_wanted(self, event: JobDetailPanel.EventsWanted) -> None:
        self._send(FetchEvents(job_id=event.job_id), "")
