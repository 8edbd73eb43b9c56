"""The main screen's part that shows what the leader sends: link status, batches of
changes (repainted at a paced rate), notices for ended jobs, the status line."""

from __future__ import annotations

import time
from urllib.parse import urlsplit

from farmtui.console import heap
from farmtui.console.later import later
from farmtui.console.link import LinkBatch, LinkProblem, LinkStatus
from farmtui.console.notices import grouped, notices
from farmtui.console.screens.main_parts import ScreenParts
from farmtui.console.state import Change
from farmtui.console.widgets.status_bar import ConnectionBanner, StatusBar
from farmtui.protocol import FetchEvents, WatchJob

REPAINT_EVERY = 0.2  # the longest the screen waits to show the leader's changes (seconds)
REPAINT_SHARE = 0.25  # of the time, at most this much goes to repainting for those changes
# At most 30 repaints a second: the repaint's own cost does not show the rendering
# it causes later, so a stream of small changes (1,000 frame events a second)
# was repainted 600 times a second for 0.8 of a core; at 60 a second it took 0.6,
# at 30 a second 0.42, each event on screen within 40 ms (bench/console_perf.py).
REPAINT_MIN = 1 / 30
NOTICE_EVERY = 2.0  # bells and toasts for ended jobs come at most this often (seconds)
SETTLE_AFTER = 2.0  # after a big message, its first paint is over by then (seconds)


class LinkPainting(ScreenParts):
    """Part of ``MainScreen``; see ``farmtui.console.screens.main_parts``."""

    def on_link_status(self, message: LinkStatus) -> None:
        banner = self.query_one(ConnectionBanner)
        if message.state == "lost":
            banner.show_lost(message.attempt, message.error, self.link.stale_since, message.refused)
            self.dim_stale(True)
            what = "leader refused this console" if message.refused else "leader unreachable"
            self._log("warn", f"{what} (attempt {message.attempt}): {message.error}")
            self.operator.link_lost()
        elif message.state == "connected":
            banner.show_resyncing()
        self._update_status()

    def on_link_problem(self, message: LinkProblem) -> None:
        self._log("error", f"bad message from the leader: {message.error}")

    def on_link_batch(self, _: LinkBatch) -> None:
        """Apply what arrived at once; repaint after a pause as long as the last repaint's
        cost allows (``REPAINT_SHARE``, at most ``REPAINT_EVERY``).

        A busy farm sends a batch for every few chunks; repainting 2,000 rows
        (filter, sort, layout) for each left no time for the keyboard. The
        state is always current; the screen catches up within a fifth of a
        second, and a small farm's cheap repaints are hardly held at all.
        """
        change = self._pending_change or Change()
        for message in self.link.drain():
            self.state.apply(message, change)
        self._pending_change = change
        if heap.settle_due() and self._settle_timer is None:
            wait = max(SETTLE_AFTER, self._last_settle + heap.SETTLE_EVERY - time.monotonic())
            self._settle_timer = later(self, wait, self._settle)
        if self._repaint_timer is not None:
            return
        pause = min(REPAINT_EVERY, max(REPAINT_MIN, self._repaint_cost / REPAINT_SHARE))
        wait = self._last_repaint + pause - time.monotonic()
        if wait <= 0:
            self._repaint()
        else:
            self._repaint_timer = later(self, wait, self._repaint)

    def _settle(self) -> None:
        self._settle_timer = None
        self._last_settle = time.monotonic()
        heap.settle()

    @property
    def repaint_pending(self) -> bool:
        """Whether changes from the leader wait for the next repaint."""
        return self._pending_change is not None

    def _repaint(self) -> None:
        self._repaint_timer = None
        change, self._pending_change = self._pending_change, None
        if change is not None:
            began = time.monotonic()
            self.apply_change(change)
            self._last_repaint = time.monotonic()
            self._repaint_cost = self._last_repaint - began

    def apply_change(self, change: Change) -> None:
        """Repaint what ``change`` touched."""
        if change.resync:
            self._resynced()
        if change.order or change.removed or (change.jobs and self._rows_depend_on_jobs()):
            self._show_rows()
        else:
            for job_id in change.jobs:
                self.jobs.refresh_key(job_id)
        if change.nodes:
            self.nodes.show_nodes()
            self.logs.set_nodes(sorted(self.state.nodes))
        if change.watched:
            self.detail.load()
            self.logs.task_pane.job_changed()
            self._update_viewbar()
            self._open_wanted_output()
        elif self.state.watched is not None:
            if change.watched_job:
                self.detail.show_job()
            if change.chunks:
                self.detail.chunks_changed(change.chunks, change.new_chunks)
                self.logs.task_pane.chunks_changed(change.chunks, change.new_chunks)
            if change.frames:
                self.detail.frames_changed(change.frames)
        if self.state.watched is not None and self.state.watched.job_id in change.removed:
            self.state.unwatch()
            self.detail.load()
            self.logs.task_pane.job_changed()
        for output in change.task_output:
            self.logs.task_pane.task_output(output)
        for node_log in change.node_logs:
            self.logs.node_log(node_log)
        # A hidden Monitor Log holds the lines (``PaneLog``) till it has a width again.
        if change.events_backfilled:
            self.logs.rewrite_monitor()
        elif change.events:
            self.logs.add_events(change.events)
        if change.events:
            self.detail.add_events(change.events)
        for fetched in change.job_events:
            if fetched.job_id is not None:
                self.detail.job_events(fetched.job_id, fetched.events)
        if change.failures:
            self.failures.show_failures()
        elif change.jobs and self.failures_shown:
            self.failures.jobs_changed()
        if change.failures_stale and self.failures_shown:
            self.fetch_failures()
        for reply in change.replies:
            self.operator.replied(reply)
        if change.transitions:
            self._announce(change)
        if change.order or change.removed or change.jobs or change.resync:
            self._update_status()

    def _rows_depend_on_jobs(self) -> bool:
        """Whether a job's new state can move or hide its row (sorted, filtered, grouped)."""
        listing = self.job_list
        return (
            listing.sort != "dispatch"
            or listing.hide_finished
            or bool(listing.text_filter)
            or listing.group_by == "state"
        )

    def _announce(self, change: Change) -> None:
        """A bell and a toast for each job that failed or finished (``console.toml``).

        At most one round every ``NOTICE_EVERY`` seconds, and one toast for many
        jobs at once: a farm finishing ten jobs a second must not bury the screen.
        """
        self._notices += notices(change.transitions, self.state.jobs, self.settings.notify)
        if self._notice_timer is None:
            self._flush_notices()

    def _flush_notices(self) -> None:
        self._notice_timer = None
        found, self._notices = self._notices, []
        if not found:
            return
        for notice in grouped(found):
            if notice.bell:
                self.app.bell()
            if notice.toast:
                self.notify(
                    notice.text,
                    title=notice.title,
                    severity="error" if notice.severity == "error" else "information",
                    timeout=8,
                )
        self._notice_timer = later(self, NOTICE_EVERY, self._flush_notices)

    def action_toggle_notifications(self) -> None:
        """Bell and toasts for finished and failed jobs: on or off (until the console quits)."""
        notify = self.settings.notify
        on = not (notify.bell or notify.toast)
        notify.bell = notify.toast = on
        self.notify(f"Bell and toasts for finished jobs {'on' if on else 'off'}", timeout=3)

    @property
    def stale(self) -> bool:
        """Whether what the screen shows may be out of date (the leader is unreachable)."""
        return self.query_one("#body").styles.opacity < 1.0

    def dim_stale(self, stale: bool) -> None:
        # An inline style repaints one widget; a CSS class on the screen would
        # restyle every widget under it (over 100 ms with 10,000 jobs).
        body = self.query_one("#body")
        if (body.styles.opacity < 1.0) != stale:
            body.styles.opacity = 0.6 if stale else 1.0

    def _resynced(self) -> None:
        """A fresh snapshot: drop staleness, re-ask for whatever was being followed."""
        self.link.mark_live()
        self.dim_stale(False)
        self.query_one(ConnectionBanner).hide()
        self._log("info", f"synced as {self.state.user} ({self.state.role})")
        if self.state.watched is not None:
            self._send(WatchJob(job_id=self.state.watched.job_id), "")
        # The leader's latest events: what happened before this console (or while it was away).
        self._send(FetchEvents(job_id=None), "")
        if self.failures_shown:
            self.fetch_failures()
        following = self.logs.following
        if following is not None:
            self._send(following.request(), "")
        self._update_status()
        self._update_viewbar()

    def _show_rows(self) -> None:
        self.jobs.set_rows(self.job_list.rows(self.state))
        if self.jobs.cursor_key is not None and self.state.watched is None:
            self._schedule_watch(self.jobs.cursor_key)

    def _update_status(self) -> None:
        rows = self.jobs.rows
        listing = self.job_list
        self.query_one(StatusBar).show(
            leader=self._leader_host(),
            live=self.link.stale_since is None,
            stale_since=self.link.stale_since,
            user=self.state.user or "?",
            role=self.state.role if self.state.user else "",
            jobs=len(self.state.jobs),
            shown=sum(1 for row in rows if isinstance(row, str)),
            selected=len(self.jobs.selected),
            group_by=listing.group_by,
            text_filter=listing.text_filter,
            archived=listing.show_archived,
            sort="" if listing.sort == "dispatch" else listing.sort,
            hide_finished=listing.hide_finished,
            waiting=self.operator.waiting(),
        )

    def _show_waiting(self) -> None:
        """Requests unanswered for a while show in the status line (a frozen leader)."""
        waiting = self.operator.waiting() is not None
        if waiting or self._waiting_shown:
            self._update_status()
        self._waiting_shown = waiting

    def _leader_host(self) -> str:
        """The leader's host name (without the port: it is in the banner when it matters)."""
        return urlsplit(self.link.url).hostname or self.leader
