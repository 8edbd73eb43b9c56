"""The monitor: jobs table, detail view, logs and nodes, fed live by the leader link.

Layout follows the terminal: below 140 columns one view at a time (1 Jobs,
2 Detail, 3 Logs, 4 Nodes, 5 Failures); from 140
columns the jobs table stays on the left and one other view shares the right;
from 200 columns Logs stays beside Detail (or Nodes) as well.

The screen wires things together and nothing more: the link's batches are
folded into ``ConsoleState`` and only what changed is repainted; what the
jobs table shows is ``JobList``; every request to the leader goes through
``Operator``; menus and the palette hand back typed commands
(``actions.RunJobs``, ``MoveJobs`` ...). Keys mean one thing in every view
(``keymap.py``); ``?`` lists them.
"""

from __future__ import annotations

import ssl
import time
from functools import partial
from typing import ClassVar, Literal, assert_never
from urllib.parse import urlsplit

from textual import events, on
from textual.app import ComposeResult
from textual.binding import BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.timer import Timer
from textual.widgets import Input

from farmtui.console.actions import (
    CHUNK_ACTIONS,
    JOB_ACTIONS,
    MOVES,
    JobCommand,
    MoveJobs,
    OpenDetail,
    OpenOutput,
    RunChunks,
    RunJobs,
)
from farmtui.console.commands import Command
from farmtui.console.job_list import SORT_COLUMN_KEY, JobList
from farmtui.console.keymap import screen_bindings
from farmtui.console.link import Backoff, LeaderLink, LinkBatch, LinkProblem, LinkStatus
from farmtui.console.notices import Notice, grouped, notices
from farmtui.console.operator import LogLevel, Operator, chunk_names, job_names
from farmtui.console.saved_filters import SavedFilters
from farmtui.console.screens.chunk_mode import ChunkActionMode
from farmtui.console.screens.context_menu import ContextMenu, MenuCommand
from farmtui.console.screens.edit_settings import EditSettingsScreen
from farmtui.console.screens.help import HelpScreen, Section, class_bindings, describe
from farmtui.console.screens.priority_prompt import PriorityPrompt
from farmtui.console.screens.saved_filters import (
    ApplyFilter,
    DeleteFilter,
    FilterChoice,
    SavedFiltersScreen,
    SaveFilterAs,
    SaveFilterPrompt,
)
from farmtui.console.screens.unblock import UnblockScreen
from farmtui.console.settings import ConsoleSettings, SettingsError
from farmtui.console.state import GROUP_CYCLE, Change, ConsoleState
from farmtui.console.widgets.action_strip import ActionStrip
from farmtui.console.widgets.chunk_table import ChunkTable
from farmtui.console.widgets.failures_panel import FailuresPanel, FailuresTable
from farmtui.console.widgets.filter_input import FilterInput
from farmtui.console.widgets.frame_grid import FrameGrid
from farmtui.console.widgets.job_detail import JobDetailPanel
from farmtui.console.widgets.jobs_table import JobsTable
from farmtui.console.widgets.key_bar import KeyBar
from farmtui.console.widgets.line_table import LineTable
from farmtui.console.widgets.logs_panel import LogsPanel
from farmtui.console.widgets.nodes_panel import NodesPanel
from farmtui.console.widgets.status_bar import ConnectionBanner, StatusBar, ViewBar
from farmtui.console.widgets.task_output import TaskChunkList, TaskOutputPane
from farmtui.frames import parse_frames
from farmtui.protocol import (
    ChunkAction,
    ChunkView,
    ConsoleHello,
    ConsoleMessage,
    FailureView,
    FetchEvents,
    FetchFailures,
    FetchNodeLog,
    JobAction,
    JobPatch,
    MoveWhere,
    ShowArchived,
    WatchJob,
)

View = Literal["jobs", "detail", "logs", "nodes", "failures"]


SIDE_VIEWS: tuple[View, ...] = ("detail", "logs", "nodes", "failures")
VIEW_FOCUS: dict[View, str] = {
    "jobs": "#jobs",
    "logs": "#logs-source",
    "nodes": "#nodes",
    "failures": "#failures",
}
VIEW_TITLES: dict[View, str] = {
    "jobs": "Jobs",
    "detail": "Detail",
    "logs": "Logs",
    "nodes": "Nodes",
    "failures": "Failures",
}
WATCH_DELAY = 0.2  # seconds the cursor rests on a job before the detail view follows it
FAILURES_PERIOD = 1.0  # the failures list is asked for at most this often (seconds)
REPAINT_EVERY = 0.2  # the longest the screen waits to show the leader's changes (seconds)
REPAINT_SHARE = 0.25  # of the time, at most this much goes to repainting for those changes
NOTICE_EVERY = 2.0  # bells and toasts for ended jobs come at most this often (seconds)


class MainScreen(Screen[None]):
    """See the module docstring."""

    HORIZONTAL_BREAKPOINTS = [
        (0, "-narrow"),
        (140, "-wide"),
        (200, "-xwide"),
    ]
    BINDINGS: ClassVar[list[BindingType]] = screen_bindings()

    def __init__(
        self,
        state: ConsoleState,
        leader: str,
        token: str,
        *,
        backoff: Backoff | None = None,
        settings: ConsoleSettings | None = None,
        ssl_context: ssl.SSLContext | None = None,
        ca: str | None = None,
    ) -> None:
        super().__init__()
        self.state = state
        self.leader = leader
        self.token = token
        self.backoff = backoff
        self.settings = settings or ConsoleSettings()
        self.saved_filters = SavedFilters(self.settings)
        self.view: View = "jobs"
        self.side_view: View = "detail"
        self.job_list = JobList()
        self.link = LeaderLink(
            self,
            leader,
            token,
            hello=self._hello,
            backoff=backoff,
            ssl_context=ssl_context,
            ca=ca,
            open_timeout=self.settings.link.connect_timeout,
        )
        self.operator = Operator(self, self.link, state, self._log)
        self._watch_timer: Timer | None = None
        self._watch_wanted: str | None = None
        # An attempt whose output to show once its job is watched (Enter in Failures).
        self._output_wanted: tuple[str, int, int] | None = None
        self._failures_sent = float("-inf")  # time.monotonic() of the last FetchFailures
        self._failures_timer: Timer | None = None
        # Repaints are paced (``on_link_batch``): what arrived meanwhile waits in one Change.
        self._pending_change: Change | None = None
        self._repaint_timer: Timer | None = None
        self._last_repaint = float("-inf")
        self._repaint_cost = 0.0
        # The Monitor Log is not written while another view hides it; redrawn when shown.
        self._monitor_behind = False
        # Toasts are paced too (``_announce``): notices waiting for the next one.
        self._notices: list[Notice] = []
        self._notice_timer: Timer | None = None

    # -- layout ------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        yield ConnectionBanner(id="banner")
        yield ViewBar(id="viewbar")
        with Horizontal(id="body"):
            with Vertical(id="jobs-pane"):
                yield FilterInput(
                    placeholder="state:failed owner:alice words — Enter keeps, Esc clears",
                    id="filter",
                )
                yield JobsTable(self.state, id="jobs")
            with Horizontal(id="side"):
                yield JobDetailPanel(self.state, id="detail")
                yield NodesPanel(self.state, id="nodes")
                yield LogsPanel(self.state, id="logs")
                yield FailuresPanel(self.state, id="failures-panel")
        yield ActionStrip(id="strip")
        yield StatusBar(id="status")
        yield KeyBar(id="keys")

    def on_mount(self) -> None:
        self.query_one("#filter").display = False
        self.query_one(ActionStrip).show(0, {})
        self._set_view("jobs")
        self.jobs.focus()
        self.query_one(ConnectionBanner).show_connecting(self.link.url)
        self._update_status()
        self.run_worker(self.link.run(), name="leader-link", group="link", exclusive=True)

    @property
    def jobs(self) -> JobsTable:
        return self.query_one(JobsTable)

    @property
    def detail(self) -> JobDetailPanel:
        return self.query_one(JobDetailPanel)

    @property
    def logs(self) -> LogsPanel:
        return self.query_one(LogsPanel)

    @property
    def nodes(self) -> NodesPanel:
        return self.query_one(NodesPanel)

    @property
    def failures(self) -> FailuresPanel:
        return self.query_one(FailuresPanel)

    @property
    def filter_field(self) -> FilterInput:
        return self.query_one("#filter", FilterInput)

    def _hello(self) -> ConsoleHello:
        return ConsoleHello(include_archived=self.job_list.show_archived)

    # -- views -------------------------------------------------------------------

    def action_view(self, view: View) -> None:
        """Show a view; 1 Jobs, 2 Detail, 3 Logs, 4 Nodes, 5 Failures."""
        self._set_view(view)
        if view == "detail":
            self.detail.focus_tab()
        else:
            self.query_one(VIEW_FOCUS[view]).focus()
        if view == "failures":
            self.fetch_failures()

    def _set_view(self, view: View) -> None:
        self.view = view
        if view != "jobs":
            self.side_view = view
        self._catch_up_monitor()
        for side in SIDE_VIEWS:
            self.set_class(side == self.side_view, f"-side-{side}")
        self.set_class(view == "jobs", "-view-jobs")
        self.set_class(view != "jobs", "-view-side")
        self._update_viewbar()
        self.call_after_refresh(self._leave_hidden_focus)

    def _monitor_visible(self) -> bool:
        """Whether the Logs pane is on screen: its own view, or beside the others at 200 columns."""
        return self.side_view == "logs" or self.has_class("-xwide")

    def _catch_up_monitor(self) -> None:
        """Redraw the Monitor Log if events arrived while it was hidden."""
        if self._monitor_behind and self._monitor_visible():
            self._monitor_behind = False
            self.logs.rewrite_monitor()

    def on_resize(self, _: events.Resize) -> None:
        # Widened to 200 columns, the Logs pane comes into view beside the others.
        self.call_after_refresh(self._catch_up_monitor)

    def _leave_hidden_focus(self) -> None:
        """A hidden filter gives the keyboard back (``1`` must not type into it)."""
        field = self.filter_field
        if field.has_focus and not field.shown:
            self.action_view(self.view)

    def _update_viewbar(self) -> None:
        watched = self.state.watched
        title = watched.job.name if watched and self.view != "jobs" else ""
        self.query_one(ViewBar).show(self.view, title)

    def action_escape(self) -> None:
        """Esc: close the filter, else go back to the jobs table.

        In the wide layout the jobs view stays current while the focus is on the
        right, so the focus decides, not only the view.
        """
        field = self.filter_field
        if field.has_focus or (field.display and not self.job_list.text_filter):
            field.value = ""
            field.display = False
            self.jobs.focus()
        elif self.view != "jobs" or not self.jobs.has_focus:
            self.action_view("jobs")

    def action_help(self) -> None:
        """``?``: every key of the current view, from the bindings."""
        title = VIEW_TITLES[self.view]
        if self.view == "jobs" and not self.has_class("-narrow"):
            title += f" (and {self.side_view.capitalize()} beside it)"
        self.app.push_screen(HelpScreen(title, self.help_sections()))

    def help_sections(self) -> list[Section]:
        """The sections of the ``?`` overlay: everywhere, then each pane of the current view."""
        app = self.app
        shown: set[View] = {self.view}
        if not self.has_class("-narrow"):
            shown |= {"jobs", self.side_view}
        if self.has_class("-xwide"):
            shown.add("logs")
        sections: list[Section] = [
            (
                "Everywhere (jobs: the selection, or the row under the cursor)",
                describe(app, self._bindings),
            ),
        ]
        if "jobs" in shown:
            sections.append(("Jobs table", describe(app, self.jobs._bindings)))
        if "detail" in shown:
            sections += [
                ("Detail", describe(app, self.detail._bindings)),
                ("Frames tab (frame grid)", describe(app, self.detail.grid._bindings)),
                ("Chunks tab", describe(app, self.detail.chunks._bindings)),
                (
                    "Chunk action mode (after k)",
                    describe(app, class_bindings(ChunkActionMode.BINDINGS)),
                ),
            ]
        if "logs" in shown:
            sections += [
                ("Logs", describe(app, self.logs._bindings)),
                ("Logs: Task Output", describe(app, self.logs.task_pane._bindings)),
                (
                    "Logs: Task Output chunk list",
                    describe(app, self.logs.task_pane.chunk_list._bindings),
                ),
            ]
        if "nodes" in shown:
            sections.append(("Nodes", describe(app, self.nodes._bindings)))
        if "failures" in shown:
            sections.append(("Failures", describe(app, self.failures.table._bindings)))
        sections.append(("The console", describe(app, app._bindings)))
        sections.append(
            (
                "Set priority prompt (after P)",
                describe(app, class_bindings(PriorityPrompt.BINDINGS)),
            )
        )
        return sections

    # -- the link ------------------------------------------------------------------

    def on_link_status(self, message: LinkStatus) -> None:
        banner = self.query_one(ConnectionBanner)
        if message.state == "lost":
            banner.show_lost(message.attempt, message.error, self.link.stale_since, message.refused)
            self.dim_stale(True)
            what = "leader refused this console" if message.refused else "leader unreachable"
            self._log("warn", f"{what} (attempt {message.attempt}): {message.error}")
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
        if self._repaint_timer is not None:
            return
        pause = min(REPAINT_EVERY, self._repaint_cost / REPAINT_SHARE)
        wait = self._last_repaint + pause - time.monotonic()
        if wait <= 0:
            self._repaint()
        else:
            self._repaint_timer = self.set_timer(wait, self._repaint)

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
        if not self._monitor_visible():
            self._monitor_behind = self._monitor_behind or bool(
                change.events or change.events_backfilled
            )
        elif change.events_backfilled:
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
        self._notice_timer = self.set_timer(NOTICE_EVERY, self._flush_notices)

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

    def _send(self, message: ConsoleMessage, label: str) -> int | None:
        return self.operator.send(message, label)

    def _log(self, level: LogLevel, text: str) -> None:
        self.logs.add_events([self.state.log(level, text)])

    def _leader_host(self) -> str:
        """The leader's host name (without the port: it is in the banner when it matters)."""
        return urlsplit(self.link.url).hostname or self.leader

    def _update_status(self) -> None:
        rows = self.jobs.rows
        listing = self.job_list
        self.query_one(StatusBar).show(
            leader=self._leader_host(),
            live=self.link.stale_since is None,
            stale_since=self.link.stale_since,
            user=self.state.user or "?",
            role=self.state.role,
            jobs=len(self.state.jobs),
            shown=sum(1 for row in rows if isinstance(row, str)),
            selected=len(self.jobs.selected),
            group_by=listing.group_by,
            text_filter=listing.text_filter,
            archived=listing.show_archived,
            sort="" if listing.sort == "dispatch" else listing.sort,
            hide_finished=listing.hide_finished,
        )

    # -- following the cursor ------------------------------------------------------

    @on(LineTable.CursorMoved, "#jobs")
    def _jobs_cursor_moved(self, event: LineTable.CursorMoved) -> None:
        if event.key is not None:
            self._schedule_watch(event.key)

    def _schedule_watch(self, job_id: str) -> None:
        if self._watch_timer is not None:
            self._watch_timer.stop()
        self._watch_timer = self.set_timer(WATCH_DELAY, partial(self.watch_job, job_id))

    def watch_job(self, job_id: str) -> None:
        """Load ``job_id`` into the detail view (asks the leader to stream it)."""
        if self._watch_timer is not None:
            self._watch_timer.stop()
            self._watch_timer = None
        watched = self.state.watched
        if (watched is not None and watched.job_id == job_id) or self._watch_wanted == job_id:
            return
        self._watch_wanted = job_id
        self._send(WatchJob(job_id=job_id), "")

    @on(LineTable.Activated, "#jobs")
    def _jobs_activated(self, event: LineTable.Activated) -> None:
        self.open_detail(event.key)

    def open_detail(self, job_id: str) -> None:
        self._watch_wanted = None
        self.watch_job(job_id)
        self.action_view("detail")

    @on(LineTable.SelectionChanged, "#jobs")
    def _jobs_selection(self, event: LineTable.SelectionChanged) -> None:
        self.query_one(ActionStrip).show(len(event.keys), self._key_displays())
        self._update_status()

    def _key_displays(self) -> dict[str, str]:
        """Binding id -> the key shown for it, after the user's keymap."""
        shown: dict[str, str] = {}
        for key, active in self.active_bindings.items():
            binding = active.binding
            if binding.id and binding.id not in shown:
                shown[binding.id] = self.app.get_key_display(binding.with_key(key))
        return shown

    def on_descendant_focus(self, event: events.DescendantFocus) -> None:
        self.refresh_bindings()
        self.query_one(KeyBar).refresh_keys()

    # -- job actions -------------------------------------------------------------

    def action_job_action(self, action: JobAction) -> None:
        """Apply a job action to the selected jobs (or the one under the cursor)."""
        self.run_command(RunJobs(action), self.jobs.targets())

    def run_command(self, command: JobCommand, job_ids: list[str]) -> None:
        """Carry out a job command on ``job_ids``."""
        match command:
            case RunJobs(action):
                self.operator.job_action(action, job_ids)
            case MoveJobs(where):
                for job_id in job_ids[:1]:
                    self.operator.move(self.state.jobs[job_id], where)
            case OpenDetail():
                for job_id in job_ids[:1]:
                    self.open_detail(job_id)
            case _:
                assert_never(command)

    def action_move(self, where: MoveWhere) -> None:
        """Move the job under the cursor within its priority group."""
        job_id = self.jobs.cursor_key
        if job_id is not None:
            self.run_command(MoveJobs(where), [job_id])

    @on(LineTable.DropRequested, "#jobs")
    def _jobs_drop(self, event: LineTable.DropRequested) -> None:
        if not self.job_list.reorderable:
            self.notify(
                "Drag reorders the dispatch order: sort by priority (s) and group by "
                "priority or none (g) first",
                severity="warning",
            )
            return
        verdict = self.jobs.check_drop(event.key, event.gap)
        if isinstance(verdict, str):
            self._log("warn", verdict)
            self.notify(verdict, title="Move refused", severity="warning")
            return
        before, moved = verdict
        if moved:
            self.operator.move_before(
                self.state.jobs[event.key], self.state.jobs[before] if before else None
            )

    def action_set_priority(self) -> None:
        """``P``: type a priority for the selected jobs (or the one under the cursor)."""
        if not self.state.is_admin:
            self.notify("Only admins can change priority", severity="warning")
            return
        jobs = [
            self.state.jobs[job_id] for job_id in self.jobs.targets() if job_id in self.state.jobs
        ]
        if not jobs:
            self.notify("Select a job first", severity="warning")
            return
        now = sorted({job.priority for job in jobs})
        what = f"{job_names([job.name for job in jobs])} (now {', '.join(map(str, now))})"

        def typed(priority: int | None) -> None:
            if priority is not None:
                self.operator.set_priority(jobs, priority)

        self.app.push_screen(PriorityPrompt(what), typed)

    # -- filter, sort, grouping, archived ------------------------------------------

    def action_filter(self) -> None:
        field = self.filter_field
        if self.view != "jobs" and self.has_class("-narrow"):
            self._set_view("jobs")
        self.jobs.focus()
        field.display = True
        field.value = self.job_list.text_filter
        self.call_after_refresh(field.focus)

    @on(Input.Changed, "#filter")
    def _filter_changed(self, event: Input.Changed) -> None:
        problem = self.job_list.set_filter(event.value)
        self.filter_field.set_class(problem is not None, "-invalid")
        self.filter_field.tooltip = problem
        if problem is None:
            self._show_rows()
            self._update_status()

    @on(Input.Submitted, "#filter")
    def _filter_submitted(self, event: Input.Submitted) -> None:
        problem = self.job_list.set_filter(event.value)
        if problem is not None:
            self.notify(problem, title="Filter", severity="warning")
            return
        if not event.value:
            event.input.display = False
        self.jobs.focus()

    def apply_filter(self, text: str) -> str | None:
        """Filter the jobs table with ``text``, shown in the filter field; the problem, if any."""
        problem = self.job_list.set_filter(text)
        if problem is not None:
            return problem
        field = self.filter_field
        if self.view != "jobs" and self.has_class("-narrow"):
            self.action_view("jobs")
        field.display = bool(text)
        with field.prevent(Input.Changed):
            field.value = text
        field.set_class(False, "-invalid")
        self._show_rows()
        self._update_status()
        return None

    def action_saved_filters(self, highlight: int = 0) -> None:
        """``F``: the saved filters; apply, delete, or save the one in use."""

        def chosen(choice: FilterChoice | None) -> None:
            match choice:
                case None:
                    pass
                case ApplyFilter(name, text):
                    problem = self.apply_filter(text)
                    if problem is None:
                        shown = text if len(text) <= 100 else text[:99] + "…"
                        self.notify(f"Filter {name!r}: {shown}", timeout=3)
                    else:
                        self.notify(f"{name!r}: {problem}", title="Filter", severity="warning")
                case DeleteFilter(name):
                    index = [n for n, _ in self.saved_filters.items()].index(name)
                    try:
                        self.saved_filters.delete(name)
                    except SettingsError as exc:
                        self.notify(str(exc), title="console.toml", severity="error")
                        return
                    self.notify(f"Deleted the saved filter {name!r}", timeout=3)
                    self.action_saved_filters(index)
                case SaveFilterAs():
                    self.action_save_filter()
                case _:
                    assert_never(choice)

        self.saved_filters.refresh()
        self.app.push_screen(
            SavedFiltersScreen(self.saved_filters.items(), self._typed_filter(), highlight),
            chosen,
        )

    def _typed_filter(self) -> str:
        """The filter in use: what the field shows (while shown), else the one applied."""
        field = self.filter_field
        return (field.value if field.display else self.job_list.text_filter).strip()

    def action_save_filter(self) -> None:
        """Save the filter in use under a name (console.toml, kept across restarts)."""
        text = self._typed_filter()
        if not text:
            self.notify("Type a filter first (/), then save it", severity="warning")
            return
        problem = self.job_list.set_filter(text)
        if problem is not None:
            self.notify(problem, title="Filter", severity="warning")
            return
        names = [name for name, _ in self.saved_filters.items()]

        def named(name: str | None) -> None:
            if name is None:
                return
            try:
                replaced = self.saved_filters.save(name, text)
            except SettingsError as exc:
                self.notify(str(exc), title="console.toml", severity="error")
                return
            verb = "Replaced" if replaced else "Saved"
            self.notify(f"{verb} the filter {name!r} (F lists saved filters)", timeout=3)

        self.app.push_screen(SaveFilterPrompt(text, names), named)

    def action_cycle_sort(self) -> None:
        """Sort the jobs table by the next column (dispatch order, name, owner, state ...)."""
        sort = self.job_list.next_sort()
        self.jobs.set_sort_column(SORT_COLUMN_KEY[sort])
        self._show_rows()
        self._update_status()
        self.notify(
            "Sorted in dispatch order" if sort == "dispatch" else f"Sorted by {sort}", timeout=2
        )

    def action_toggle_finished(self) -> None:
        """Hide or show finished jobs (done, cancelled)."""
        self.job_list.hide_finished = not self.job_list.hide_finished
        self._show_rows()
        self._update_status()

    def action_cycle_group(self) -> None:
        """Group the jobs table: none -> by priority -> by state -> none."""
        listing = self.job_list
        listing.group_by = GROUP_CYCLE[listing.group_by]
        self._show_rows()
        self._update_status()
        self.notify(
            f"Grouped by {listing.group_by}" if listing.group_by != "none" else "Not grouped",
            timeout=2,
        )

    def action_toggle_archived(self) -> None:
        """Show or hide archived jobs (asks the leader to send them)."""
        listing = self.job_list
        listing.show_archived = not listing.show_archived
        self._send(ShowArchived(enabled=listing.show_archived), "")
        self._show_rows()
        self._update_status()

    # -- detail --------------------------------------------------------------------

    def action_edit_settings(self) -> None:
        """Edit the watched job's timeouts, retries, tags and machine limit."""
        watched = self.state.watched
        if watched is None:
            self.notify("Open a job first (Enter)", severity="warning")
            return
        job = watched.job

        def edited(patch: JobPatch | None) -> None:
            if patch is not None:
                self.operator.patch(job, patch)

        self.app.push_screen(EditSettingsScreen(job), edited)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """``k`` is offered (in the key bar) only where there are chunks to act on."""
        if action == "chunk_mode":
            chunks_here = isinstance(self.focused, FrameGrid | ChunkTable | TaskChunkList)
            return True if chunks_here else None
        return True

    def on_descendant_blur(self, event: events.DescendantBlur) -> None:
        self.refresh_bindings()

    def chunk_targets(self) -> list[int]:
        """The chunks ``k`` acts on: of the frames picked in the grid, or the chunks picked
        in a chunk list; none when the focus is elsewhere."""
        watched = self.state.watched
        focused = self.focused
        if watched is None or focused is None:
            return []
        if isinstance(focused, FrameGrid):
            chunks = {watched.chunk_of(frame) for frame in focused.target_frames()}
            return sorted(chunk for chunk in chunks if chunk is not None)
        if isinstance(focused, ChunkTable | TaskChunkList):
            return [int(key) for key in focused.targets()]
        return []

    def action_chunk_mode(self) -> None:
        """``k``: chunk action mode for the chunks picked in the grid or a chunk list."""
        watched = self.state.watched
        chunks = self.chunk_targets()
        if watched is None or not chunks:
            self.notify(
                "Pick frames in the frame grid or chunks in the chunk table first "
                "(2, then t), then k",
                severity="warning",
            )
            return
        what = f"{chunk_names(chunks)} of {watched.job.name}"

        def chosen(action: ChunkAction | None) -> None:
            if action is not None:
                self.run_chunks(RunChunks(action), chunks)

        self.app.push_screen(ChunkActionMode(what), chosen)

    def run_chunks(self, command: RunChunks | OpenOutput, chunks: list[int]) -> None:
        match command:
            case RunChunks(action):
                self.operator.chunk_action(action, chunks)
            case OpenOutput():
                for chunk in chunks[:1]:
                    self.action_view("logs")
                    self.logs.pick_chunk(chunk)
            case _:
                assert_never(command)

    def run_chunk_action(self, action: ChunkAction, chunks: list[int]) -> None:
        """Apply a chunk action to chunks of the watched job."""
        self.run_chunks(RunChunks(action), chunks)

    @on(LineTable.Activated, "#chunk-table")
    def _chunk_activated(self, event: LineTable.Activated) -> None:
        self.run_chunks(OpenOutput(), [int(event.key)])

    @on(FrameGrid.ChunkWanted)
    def _frame_chunk(self, event: FrameGrid.ChunkWanted) -> None:
        watched = self.state.watched
        chunk = watched.chunk_of(event.frame) if watched is not None else None
        if chunk is None:
            self.notify(f"No chunk renders frame {event.frame}", severity="warning")
            return
        self.detail.show_chunk(chunk)

    # -- context menus -----------------------------------------------------------

    @on(LineTable.ContextRequested, "#jobs")
    def _jobs_menu(self, event: LineTable.ContextRequested) -> None:
        job = self.state.jobs.get(event.key)
        if job is None:
            return
        keys = self._key_displays()
        items: list[tuple[MenuCommand, str]] = [
            (RunJobs(spec.action), f"{spec.label:<13}{keys.get(spec.binding_id, '')}")
            for spec in JOB_ACTIONS
        ]
        if job.archived:
            items.append((RunJobs("unarchive"), "Unarchive"))
        if job.reviewed:
            items.append((RunJobs("unreview"), "Not reviewed"))
        items += [(MoveJobs(where), f"Move {where}") for where in MOVES]
        items.append((OpenDetail(), "Open detail    enter"))

        def chosen(command: MenuCommand | None) -> None:
            if isinstance(command, RunJobs | MoveJobs | OpenDetail):
                self.run_command(command, [job.id])

        self.app.push_screen(ContextMenu(job.name, items, event.screen_offset), chosen)

    @on(LineTable.ContextRequested, "#chunk-table")
    def _chunks_menu(self, event: LineTable.ContextRequested) -> None:
        chunk = int(event.key)
        items: list[tuple[MenuCommand, str]] = [
            (RunChunks(spec.action), f"{spec.label:<12}k {spec.key}") for spec in CHUNK_ACTIONS
        ]
        items.append((OpenOutput(), "Show output  o"))

        def chosen(command: MenuCommand | None) -> None:
            if isinstance(command, RunChunks | OpenOutput):
                self.run_chunks(command, [chunk])

        self.app.push_screen(ContextMenu(f"chunk {chunk}", items, event.screen_offset), chosen)

    # -- logs and nodes ------------------------------------------------------------

    @on(LogsPanel.PeerLogWanted)
    def _peer_wanted(self, event: LogsPanel.PeerLogWanted) -> None:
        self._send(FetchNodeLog(node=event.node), "")

    @on(TaskOutputPane.OutputWanted)
    def _task_wanted(self, event: TaskOutputPane.OutputWanted) -> None:
        self._send(event.source.request(), "")

    @on(NodesPanel.EnableRequested)
    def _node_enable(self, event: NodesPanel.EnableRequested) -> None:
        self.operator.set_node_enabled(event.node, event.enabled)

    @on(NodesPanel.LogRequested)
    def _node_log(self, event: NodesPanel.LogRequested) -> None:
        self._set_view("logs")
        self.logs.pick_peer(event.node)

    @on(LineTable.Activated, "#nodes")
    def _node_activated(self, event: LineTable.Activated) -> None:
        self._node_log(NodesPanel.LogRequested(event.key))

    def show_logs(self, source: Literal["monitor", "peer", "task"]) -> None:
        self.action_view("logs")
        self.logs.show_source(source)

    # -- failures ------------------------------------------------------------------

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
                self._failures_timer = self.set_timer(wait, self._failures_due)
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

    @on(FailuresTable.RetryWanted)
    def _failure_retry(self, event: FailuresTable.RetryWanted) -> None:
        failure = event.failure
        job = self.state.jobs.get(failure.job_id)
        if job is None:
            self.notify(f"{failure.job_name} is gone", severity="warning")
            return
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
        job = self.state.jobs.get(failure.job_id)
        if job is None:
            self.notify(f"{failure.job_name} is gone", severity="warning")
            return
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

    # -- command palette -----------------------------------------------------------

    def palette_commands(self) -> list[Command]:
        """Every action, for the command palette."""
        from farmtui.console.palette import palette_commands

        return palette_commands(self)

    def focus_priority(self) -> None:
        self.action_set_priority()

    def toggle_node(self) -> None:
        self.action_view("nodes")
        self.nodes.action_toggle_enabled()
