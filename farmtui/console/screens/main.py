"""The monitor: jobs table, detail view, logs and nodes, fed live by the leader link.

Layout follows the terminal: below 140 columns one view at a time (1 Jobs,
2 Detail, 3 Logs, 4 Nodes, 5 Failures); from 140
columns the jobs table stays on the left and one other view shares the right;
from 200 columns Logs stays beside Detail (or Nodes) as well.

The screen wires things together and nothing more, and is made of parts,
one module each (``main_parts``): ``painting`` folds the link's batches into
``ConsoleState`` and repaints only what changed; ``filtering`` finds jobs;
``triage`` is the Failures view. What the
jobs table shows is ``JobList``; every request to the leader goes through
``Operator``; menus and the palette hand back typed commands
(``actions.RunJobs``, ``MoveJobs`` ...). Keys mean one thing in every view
(``keymap.py``); ``?`` lists them.
"""

from __future__ import annotations

import ssl
from functools import partial
from typing import ClassVar, Literal, assert_never

from textual import events, on
from textual.app import ComposeResult
from textual.binding import BindingType
from textual.containers import Horizontal, Vertical

from farmtui.console import heap
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
from farmtui.console.job_list import JobList
from farmtui.console.keymap import screen_bindings
from farmtui.console.later import Later, later
from farmtui.console.link import Backoff, LeaderLink
from farmtui.console.notices import Notice
from farmtui.console.operator import SLOW_REPLY, Operator, chunk_names, job_names
from farmtui.console.saved_filters import SavedFilters
from farmtui.console.screens.chunk_mode import ChunkActionMode
from farmtui.console.screens.context_menu import ContextMenu, MenuCommand
from farmtui.console.screens.edit_settings import EditSettingsScreen
from farmtui.console.screens.filtering import Filtering
from farmtui.console.screens.help import HelpScreen, Section, class_bindings, describe
from farmtui.console.screens.main_parts import (
    SIDE_VIEWS,
    VIEW_FOCUS,
    VIEW_TITLES,
    WATCH_DELAY,
    ScreenParts,
    View,
)
from farmtui.console.screens.painting import LinkPainting
from farmtui.console.screens.priority_prompt import PriorityPrompt
from farmtui.console.screens.triage import Triage
from farmtui.console.settings import ConsoleSettings
from farmtui.console.state import Change, ConsoleState
from farmtui.console.widgets.action_strip import ActionStrip
from farmtui.console.widgets.chunk_table import ChunkTable
from farmtui.console.widgets.failures_panel import FailuresPanel
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
from farmtui.protocol import (
    ChunkAction,
    ConsoleHello,
    FetchNodeLog,
    JobAction,
    JobPatch,
    MoveWhere,
    WatchJob,
)


class MainScreen(LinkPainting, Filtering, Triage, ScreenParts):
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
        self._watch_timer: Later | None = None
        self._watch_wanted: str | None = None
        # An attempt whose output to show once its job is watched (Enter in Failures).
        self._output_wanted: tuple[str, int, int] | None = None
        self._failures_sent = float("-inf")  # time.monotonic() of the last FetchFailures
        self._failures_timer: Later | None = None
        # Repaints are paced (``on_link_batch``): what arrived meanwhile waits in one Change.
        self._pending_change: Change | None = None
        self._repaint_timer: Later | None = None
        self._settle_timer: Later | None = None
        self._last_settle = float("-inf")
        self._waiting_shown = False
        self._last_repaint = float("-inf")
        self._repaint_cost = 0.0
        # Toasts are paced too (``_announce``): notices waiting for the next one.
        self._notices: list[Notice] = []
        self._notice_timer: Later | None = None

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
        self.set_interval(SLOW_REPLY / 2, self._show_waiting)

    def on_unmount(self) -> None:
        heap.let_go()

    def _hello(self) -> ConsoleHello:
        return ConsoleHello(include_archived=self.job_list.show_archived)

    # -- views -------------------------------------------------------------------

    def action_view(self, view: View) -> None:
        """Show a view; 1 Jobs, 2 Detail, 3 Logs, 4 Nodes, 5 Failures."""
        self._set_view(view)
        if view == "detail":
            self.detail.focus_tab()
        elif view == "logs":
            self.logs.focus_shown()
        else:
            self.query_one(VIEW_FOCUS[view]).focus()
        if view == "failures":
            self.fetch_failures()

    def _set_view(self, view: View) -> None:
        self.view = view
        if view != "jobs":
            self.side_view = view
        for side in SIDE_VIEWS:
            self.set_class(side == self.side_view, f"-side-{side}")
        self.set_class(view == "jobs", "-view-jobs")
        self.set_class(view != "jobs", "-view-side")
        self._update_viewbar()
        self.call_after_refresh(self._leave_hidden_focus)

    def _leave_hidden_focus(self) -> None:
        """A hidden filter gives the keyboard back (``1`` must not type into it)."""
        field = self.filter_field
        if field.has_focus and not field.shown:
            self.action_view(self.view)

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

    # -- following the cursor ------------------------------------------------------

    @on(LineTable.CursorMoved, "#jobs")
    def _jobs_cursor_moved(self, event: LineTable.CursorMoved) -> None:
        if event.key is not None:
            self._schedule_watch(event.key)

    def _schedule_watch(self, job_id: str) -> None:
        if self._watch_timer is not None:
            self._watch_timer.stop()
        self._watch_timer = later(self, WATCH_DELAY, partial(self.watch_job, job_id))

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

        self.app.push_screen(EditSettingsScreen(job, self.state.retry_defaults.retries), edited)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """``k`` is offered (in the key bar) where there are chunks to act on, and in the
        whole job detail: pressed on its Settings tab, it said nothing, so the next key
        (``h``) held the whole job; there it says where chunks are picked."""
        if action == "chunk_mode":
            chunks_here = isinstance(self.focused, FrameGrid | ChunkTable | TaskChunkList)
            return True if chunks_here or self.view == "detail" else None
        return True

    def on_descendant_blur(self, event: events.DescendantBlur) -> None:
        self.refresh_bindings()

    def chunk_targets(self) -> tuple[list[int], int]:
        """The chunks ``k`` acts on: of the frames picked in the grid, or the chunks picked
        in a chunk list; none when the focus is elsewhere. And how many of the frames
        picked are in chunks this console was never sent (a job of more than a page of
        chunks: it has the first page, and those that change)."""
        watched = self.state.watched
        focused = self.focused
        if watched is None or focused is None:
            return [], 0
        if isinstance(focused, FrameGrid):
            chunks = [watched.chunk_of(frame) for frame in focused.target_frames()]
            known = {chunk for chunk in chunks if chunk is not None}
            return sorted(known), len(chunks) - sum(chunk is not None for chunk in chunks)
        if isinstance(focused, ChunkTable | TaskChunkList):
            return [int(key) for key in focused.targets()], 0
        return [], 0

    def action_chunk_mode(self) -> None:
        """``k``: chunk action mode for the chunks picked in the grid or a chunk list."""
        watched = self.state.watched
        chunks, unloaded = self.chunk_targets()
        if watched is not None and unloaded:
            # Acting on the loaded part alone changed less than was picked, silently.
            self.notify(
                f"{unloaded:,} of the picked frames are in chunks this console has not "
                f"loaded ({watched.job.stats.chunks_total:,} chunks; it loads the first "
                f"{len(watched.chunk_order):,} and those that change): pick fewer, or use "
                f"`farm chunks {watched.job_id} ACTION FIRST-LAST`",
                severity="warning",
            )
            return
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
            loaded = watched is not None and event.frame in watched.index
            why = "is in a chunk this console has not loaded" if loaded else "has no chunk"
            self.notify(f"Frame {event.frame} {why}", severity="warning")
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
        items += [
            (MoveJobs(where), f"{'Move ' + where:<13}{keys.get(f'jobs.move_{where}', '')}")
            for where in MOVES
        ]
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
