"""The monitor: jobs table, detail view, logs and nodes, fed live by the leader link.

Layout collapses with the terminal: below 140 columns one view at a time
(1 Jobs, 2 Detail, 3 Logs, 4 Nodes); from 140 columns up the jobs table stays
on the left and the other views share the right. The screen owns the link
worker; every leader message batch is folded into ``ConsoleState`` and only
what changed is repainted.
"""

from __future__ import annotations

from functools import partial
from typing import ClassVar, Literal
from urllib.parse import urlsplit

from textual import on
from textual.app import ComposeResult
from textual.binding import BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.timer import Timer
from textual.widgets import ContentSwitcher, Footer, Input

from farmtui.console.actions import (
    CHUNK_ACTION_BY_NAME,
    CHUNK_ACTIONS,
    JOB_ACTION_BY_NAME,
    JOB_ACTIONS,
)
from farmtui.console.commands import Command
from farmtui.console.confirmations import (
    Confirmation,
    chunk_action_confirmation,
    job_action_confirmation,
)
from farmtui.console.keymap import screen_bindings
from farmtui.console.link import Backoff, LeaderLink, LinkBatch, LinkProblem, LinkStatus
from farmtui.console.screens.confirm import ConfirmScreen
from farmtui.console.screens.context_menu import ContextMenu
from farmtui.console.screens.edit_settings import EditSettingsScreen
from farmtui.console.state import GROUP_CYCLE, Change, ConsoleState, GroupBy
from farmtui.console.widgets.action_strip import ActionStrip
from farmtui.console.widgets.chunk_table import ChunkTable
from farmtui.console.widgets.job_detail import JobDetailPanel
from farmtui.console.widgets.jobs_table import JobsTable
from farmtui.console.widgets.line_table import LineTable
from farmtui.console.widgets.logs_panel import LogsPanel
from farmtui.console.widgets.nodes_panel import NodesPanel
from farmtui.console.widgets.priority_spinner import PrioritySpinner
from farmtui.console.widgets.status_bar import ConnectionBanner, StatusBar, ViewBar
from farmtui.console.widgets.task_output import TaskOutputPane
from farmtui.protocol import (
    ChunkAction,
    ConsoleHello,
    ConsoleMessage,
    FetchNodeLog,
    JobAction,
    JobPatch,
    MoveJob,
    MoveWhere,
    PatchJob,
    RunChunkAction,
    RunJobAction,
    SetNodeEnabled,
    SetPriority,
    ShowArchived,
    WatchJob,
)

View = Literal["jobs", "detail", "logs", "nodes"]
SIDE_VIEWS: tuple[View, ...] = ("detail", "logs", "nodes")
WATCH_DELAY = 0.2  # seconds the cursor rests on a job before the detail view follows it


class MainScreen(Screen[None]):
    """See the module docstring."""

    HORIZONTAL_BREAKPOINTS = [
        (0, "-narrow"),
        (140, "-wide"),
    ]
    BINDINGS: ClassVar[list[BindingType]] = screen_bindings()

    def __init__(
        self,
        state: ConsoleState,
        leader: str,
        token: str,
        *,
        backoff: Backoff | None = None,
    ) -> None:
        super().__init__()
        self.state = state
        self.leader = leader
        self.token = token
        self.backoff = backoff
        self.view: View = "jobs"
        self.side_view: View = "detail"
        self.group_by: GroupBy = "none"
        self.text_filter = ""
        self.show_archived = False
        self.link = LeaderLink(self, leader, token, hello=self._hello, backoff=backoff)
        self._pending: dict[int, str] = {}
        self._watch_timer: Timer | None = None
        self._watch_wanted: str | None = None

    # -- layout ------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        yield ConnectionBanner(id="banner")
        yield ViewBar(id="viewbar")
        with Horizontal(id="body"):
            with Vertical(id="jobs-pane"):
                yield Input(
                    placeholder="filter by name, owner, state, id — Enter keeps, Esc clears",
                    id="filter",
                )
                yield JobsTable(self.state, id="jobs")
            with ContentSwitcher(initial="detail", id="side"):
                yield JobDetailPanel(self.state, id="detail")
                yield LogsPanel(self.state, id="logs")
                yield NodesPanel(self.state, id="nodes")
        yield ActionStrip(id="strip")
        yield StatusBar(id="status")
        yield Footer()

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

    def _hello(self) -> ConsoleHello:
        return ConsoleHello(include_archived=self.show_archived)

    # -- views -------------------------------------------------------------------

    def action_view(self, view: View) -> None:
        """Show a view; 1 Jobs, 2 Detail, 3 Logs, 4 Nodes."""
        self._set_view(view)
        if view == "detail":
            self.detail.focus_tab()
        else:
            self.query_one(
                {"jobs": "#jobs", "logs": "#logs-source", "nodes": "#nodes"}[view]
            ).focus()

    def _set_view(self, view: View) -> None:
        self.view = view
        if view != "jobs":
            self.side_view = view
            self.query_one("#side", ContentSwitcher).current = view
        self.set_class(view == "jobs", "-view-jobs")
        self.set_class(view != "jobs", "-view-side")
        self._update_viewbar()

    def _update_viewbar(self) -> None:
        watched = self.state.watched
        title = watched.job.name if watched and self.view != "jobs" else ""
        self.query_one(ViewBar).show(self.view, title)

    def action_escape(self) -> None:
        """Esc: close the filter, else go back to the jobs table.

        In the wide layout the jobs view stays current while the focus is on the
        right, so the focus decides, not only the view.
        """
        field = self.query_one("#filter", Input)
        if field.has_focus or (field.display and not self.text_filter):
            field.value = ""
            field.display = False
            self.jobs.focus()
        elif self.view != "jobs" or not self.jobs.has_focus:
            self.action_view("jobs")

    # -- the link ------------------------------------------------------------------

    def on_link_status(self, message: LinkStatus) -> None:
        banner = self.query_one(ConnectionBanner)
        if message.state == "lost":
            banner.show_lost(message.attempt, message.error, self.link.stale_since)
            self.dim_stale(True)
            self.state.log(
                "warn", f"leader unreachable (attempt {message.attempt}): {message.error}"
            )
            self.logs.add_events([self.state.events[-1]])
        elif message.state == "connected":
            banner.show_resyncing()
        self._update_status()

    def on_link_problem(self, message: LinkProblem) -> None:
        self._log("error", f"bad message from the leader: {message.error}")

    def on_link_batch(self, _: LinkBatch) -> None:
        change = Change()
        for message in self.link.drain():
            self.state.apply(message, change)
        self.apply_change(change)

    def apply_change(self, change: Change) -> None:
        """Repaint what ``change`` touched."""
        if change.resync:
            self._resynced()
        if change.order or change.removed:
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
        if change.events:
            self.logs.add_events(change.events)
        for reply in change.replies:
            label = self._pending.pop(reply.request_id, "")
            if reply.ok:
                if label:
                    self._log("info", f"{label}: done")
            else:
                error = reply.error or "refused"
                self._log("error", f"{label or 'request'}: {error}")
                self.notify(error, title=label or "The leader refused", severity="error")
        if change.order or change.removed or change.jobs or change.resync:
            self._update_status()

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
        following = self.logs.following
        if following is not None:
            self._send(following.request(), "")
        self._update_status()
        self._update_viewbar()

    def _show_rows(self) -> None:
        rows = self.state.rows(self.group_by, self.text_filter, self.show_archived)
        self.jobs.set_rows(rows)
        if self.jobs.cursor_key is not None and self.state.watched is None:
            self._schedule_watch(self.jobs.cursor_key)

    def _send(self, message: ConsoleMessage, label: str) -> int | None:
        """Send to the leader; ``label`` names it in the log and in error pop-ups."""
        request_id = self.link.send(message)
        if request_id is None:
            if label:
                self.notify(
                    f"{label} was not sent: the leader is unreachable",
                    severity="error",
                )
            return None
        self._pending[request_id] = label
        if label:
            self._log("info", f"{label}: sent")
        return request_id

    def _log(self, level: Literal["info", "warn", "error"], text: str) -> None:
        self.logs.add_events([self.state.log(level, text)])

    def _leader_host(self) -> str:
        """The leader's host name (without the port: it is in the banner when it matters)."""
        return urlsplit(self.link.url).hostname or self.leader

    def _update_status(self) -> None:
        rows = self.jobs.rows
        self.query_one(StatusBar).show(
            leader=self._leader_host(),
            live=self.link.stale_since is None,
            stale_since=self.link.stale_since,
            user=self.state.user or "?",
            role=self.state.role,
            jobs=len(self.state.jobs),
            shown=sum(1 for row in rows if isinstance(row, str)),
            selected=len(self.jobs.selected),
            group_by=self.group_by,
            text_filter=self.text_filter,
            archived=self.show_archived,
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
        self._watch_wanted = None
        self.watch_job(event.key)
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

    # -- job actions -------------------------------------------------------------

    def action_job_action(self, action: JobAction) -> None:
        """Apply ``action`` to the selected jobs (or the one under the cursor)."""
        self.run_job_action(action, self.jobs.targets())

    def run_job_action(self, action: JobAction, job_ids: list[str]) -> None:
        spec = JOB_ACTION_BY_NAME[action]
        job_ids = [job_id for job_id in job_ids if job_id in self.state.jobs]
        if not job_ids:
            self.notify(
                "Select a job first (space selects, ctrl+a selects all)", severity="warning"
            )
            return
        jobs = [self.state.jobs[job_id] for job_id in job_ids]
        self._send_once_confirmed(
            job_action_confirmation(action, jobs),
            RunJobAction(action=action, job_ids=job_ids),
            f"{spec.label} {_count([job.name for job in jobs])}",
        )

    def _send_once_confirmed(
        self, confirmation: Confirmation | None, message: ConsoleMessage, label: str
    ) -> None:
        """Send ``message`` now when it is cheap, else once the operator accepts its cost."""
        if confirmation is None:
            self._send(message, label)
            return

        def answered(yes: bool | None) -> None:
            if yes:
                self._send(message, label)
            else:
                self._log("info", f"{label}: not confirmed")

        self.app.push_screen(ConfirmScreen(confirmation), answered)

    def action_move(self, where: MoveWhere) -> None:
        """Move the job under the cursor within its priority group."""
        job_id = self.jobs.cursor_key
        if job_id is None:
            return
        name = self.state.jobs[job_id].name
        self._send(MoveJob(job_id=job_id, where=where), f"Move {name} {where}")

    @on(LineTable.DropRequested, "#jobs")
    def _jobs_drop(self, event: LineTable.DropRequested) -> None:
        if self.group_by == "state":
            self.notify(
                "Drag reorders the dispatch order: group by priority or none (g) first",
                severity="warning",
            )
            return
        verdict = self.jobs.check_drop(event.key, event.gap)
        if isinstance(verdict, str):
            self._log("warn", verdict)
            self.notify(verdict, title="Move refused", severity="warning")
            return
        before, moved = verdict
        if not moved:
            return
        job = self.state.jobs[event.key]
        where = f"before {self.state.jobs[before].name}" if before else "to the end of its group"
        self._send(MoveJob(job_id=event.key, before=before), f"Move {job.name} {where}")

    # -- filter, grouping, archived ----------------------------------------------

    def action_filter(self) -> None:
        field = self.query_one("#filter", Input)
        if self.view != "jobs" and self.has_class("-narrow"):
            self._set_view("jobs")
        self.jobs.focus()
        field.display = True
        field.focus()

    @on(Input.Changed, "#filter")
    def _filter_changed(self, event: Input.Changed) -> None:
        self.text_filter = event.value
        self._show_rows()
        self._update_status()

    @on(Input.Submitted, "#filter")
    def _filter_submitted(self, event: Input.Submitted) -> None:
        if not event.value:
            event.input.display = False
        self.jobs.focus()

    def action_cycle_group(self) -> None:
        """Group the jobs table: none -> by priority -> by state -> none."""
        self.group_by = GROUP_CYCLE[self.group_by]
        self._show_rows()
        self._update_status()
        self.notify(
            f"Grouped by {self.group_by}" if self.group_by != "none" else "Not grouped", timeout=2
        )

    def action_toggle_archived(self) -> None:
        """Show or hide archived jobs (asks the leader to send them)."""
        self.show_archived = not self.show_archived
        self._send(ShowArchived(enabled=self.show_archived), "")
        self._show_rows()
        self._update_status()

    # -- detail --------------------------------------------------------------------

    @on(PrioritySpinner.Changed)
    def _priority_changed(self, event: PrioritySpinner.Changed) -> None:
        watched = self.state.watched
        if watched is None:
            return
        self._send(
            SetPriority(job_id=watched.job_id, priority=event.priority),
            f"Priority of {watched.job.name} to {event.priority}",
        )

    def action_edit_settings(self) -> None:
        """Edit the watched job's timeouts, retries, tags and machine limit."""
        watched = self.state.watched
        if watched is None:
            self.notify("Open a job first (Enter)", severity="warning")
            return
        job = watched.job

        def edited(patch: JobPatch | None) -> None:
            if patch is not None:
                self._send(PatchJob(job_id=job.id, patch=patch), f"Settings of {job.name}")

        self.app.push_screen(EditSettingsScreen(job), edited)

    @on(ChunkTable.ActionRequested)
    def _chunk_action(self, event: ChunkTable.ActionRequested) -> None:
        self.run_chunk_action(event.action, event.chunks)

    def run_chunk_action(self, action: ChunkAction, chunks: list[int]) -> None:
        watched = self.state.watched
        if watched is None or not chunks:
            return
        label = CHUNK_ACTION_BY_NAME[action].label
        numbers = ", ".join(map(str, chunks[:5])) + ("…" if len(chunks) > 5 else "")
        views = [watched.chunks[index] for index in chunks if index in watched.chunks]
        self._send_once_confirmed(
            chunk_action_confirmation(action, watched.job, views, self.state.clock()),
            RunChunkAction(action=action, job_id=watched.job_id, chunks=chunks),
            f"{label} chunk {numbers} of {watched.job.name}",
        )

    def action_chunk_action(self, action: ChunkAction) -> None:
        self.run_chunk_action(action, [int(k) for k in self.detail.chunks.targets()])

    @on(LineTable.Activated, "#chunk-table")
    def _chunk_activated(self, event: LineTable.Activated) -> None:
        self.action_view("logs")
        self.logs.pick_chunk(int(event.key))

    # -- context menus -----------------------------------------------------------

    @on(LineTable.ContextRequested, "#jobs")
    def _jobs_menu(self, event: LineTable.ContextRequested) -> None:
        job = self.state.jobs.get(event.key)
        if job is None:
            return
        keys = self._key_displays()
        items: list[tuple[str, str]] = [
            (spec.action, f"{spec.label:<13}{keys.get(spec.binding_id, '')}")
            for spec in JOB_ACTIONS
        ]
        if job.archived:
            items.append(("unarchive", "Unarchive"))
        if job.reviewed:
            items.append(("unreview", "Not reviewed"))
        items += [(f"move:{where}", f"Move {where}") for where in ("up", "down", "top", "bottom")]
        items.append(("open", "Open detail    enter"))

        def chosen(action: str | None) -> None:
            if action is None:
                return
            if action == "open":
                self._jobs_activated(LineTable.Activated(self.jobs, job.id))
            elif action.startswith("move:"):
                where = action.split(":", 1)[1]
                self._send(
                    MoveJob(job_id=job.id, where=where),  # type: ignore[arg-type]
                    f"Move {job.name} {where}",
                )
            else:
                self.run_job_action(action, [job.id])  # type: ignore[arg-type]

        self.app.push_screen(ContextMenu(job.name, items, event.screen_offset), chosen)

    @on(LineTable.ContextRequested, "#chunk-table")
    def _chunks_menu(self, event: LineTable.ContextRequested) -> None:
        chunk = int(event.key)
        items: list[tuple[str, str]] = [
            (spec.action, f"{spec.label:<12}{spec.key}") for spec in CHUNK_ACTIONS
        ]
        items.append(("output", "Show output  o"))

        def chosen(action: str | None) -> None:
            if action == "output":
                self._chunk_activated(LineTable.Activated(self.detail.chunks, event.key))
            elif action is not None:
                self.run_chunk_action(action, [chunk])  # type: ignore[arg-type]

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
        if not self.state.is_admin:
            self.notify("Only admins can enable or disable nodes", severity="warning")
            return
        verb = "Enable" if event.enabled else "Disable"
        self._send(
            SetNodeEnabled(node=event.node, enabled=event.enabled), f"{verb} node {event.node}"
        )

    @on(NodesPanel.LogRequested)
    def _node_log(self, event: NodesPanel.LogRequested) -> None:
        self._set_view("logs")
        self.logs.pick_peer(event.node)

    def show_logs(self, source: Literal["monitor", "peer", "task"]) -> None:
        self.action_view("logs")
        self.logs.show_source(source)

    # -- command palette -----------------------------------------------------------

    def palette_commands(self) -> list[Command]:
        """Every action, for the command palette."""
        commands: list[Command] = []
        for spec in JOB_ACTIONS:
            commands.append(
                (
                    f"Jobs: {spec.label}",
                    partial(self.action_job_action, spec.action),
                    spec.description,
                )
            )
        for where in ("up", "down", "top", "bottom"):
            commands.append(
                (
                    f"Jobs: Move {where} in its priority group",
                    partial(self.action_move, where),
                    "Reorder within the group",
                )
            )
        commands += [
            ("Jobs: Filter…", self.action_filter, "Show only jobs matching a text"),
            ("Jobs: Cycle grouping (none / priority / state)", self.action_cycle_group, ""),
            ("Jobs: Show or hide archived jobs", self.action_toggle_archived, ""),
            ("Jobs: Select all", self.jobs.action_select_all, ""),
            ("Jobs: Clear selection", self.jobs.action_clear_selection, ""),
            (
                "Job: Edit settings…",
                self.action_edit_settings,
                "Timeouts, retries, tags, machine limit",
            ),
            ("Job: Set priority…", self._focus_priority, "Admins only; lower renders sooner"),
        ]
        for chunk_spec in CHUNK_ACTIONS:
            commands.append(
                (
                    f"Chunks: {chunk_spec.label}",
                    partial(self.action_chunk_action, chunk_spec.action),
                    chunk_spec.description,
                )
            )
        commands += [
            ("View: Jobs", partial(self.action_view, "jobs"), "1"),
            ("View: Detail", partial(self.action_view, "detail"), "2"),
            ("View: Logs", partial(self.action_view, "logs"), "3"),
            ("View: Nodes", partial(self.action_view, "nodes"), "4"),
            ("Logs: Monitor log", partial(self.show_logs, "monitor"), "The console's events"),
            ("Logs: A peer's agent log", partial(self.show_logs, "peer"), "Refreshed every 3 s"),
            ("Logs: Task output", partial(self.show_logs, "task"), "Pick a chunk"),
            ("Nodes: Enable or disable the selected node", self._toggle_node, "Admins only"),
        ]
        return commands

    def _focus_priority(self) -> None:
        self.action_view("detail")
        self.query_one("#priority-value", Input).focus()

    def _toggle_node(self) -> None:
        self.action_view("nodes")
        self.nodes.action_toggle_enabled()


def _count(names: list[str]) -> str:
    return names[0] if len(names) == 1 else f"{len(names)} jobs"
