"""The detail view of the watched job: summary, progress, priority, frames, chunks, settings.

Every summary line is one line, never wrapped (cut with an ellipsis at worst),
so the layout holds at 80x24. The priority is shown, not edited here: ``P``
types a new one (``screens/priority_prompt.py``). The Chunks tab lists the
chunks and, below them, every attempt of the chunk under the cursor.

Everything from the job (name, owner, paths, tags) is shown as plain ``Text``
with control characters escaped (``farmtui.printable``), never as markup.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical, VerticalScroll
from textual.message import Message
from textual.widgets import ProgressBar, Static, TabbedContent, TabPane

from farmtui.console import fmt
from farmtui.console.later import later
from farmtui.console.state import ConsoleState, RetryDefaults
from farmtui.console.widgets.chunk_table import AttemptHistory, ChunkTable
from farmtui.console.widgets.event_line import event_line
from farmtui.console.widgets.frame_grid import FrameGrid, FrameLegend
from farmtui.console.widgets.line_table import LineTable
from farmtui.console.widgets.pane_log import PaneLog
from farmtui.printable import printable
from farmtui.protocol import EventView, JobView
from farmtui.reasons import block_end, reason_line, shown_etr


def _leaders(value: float | None, show: Callable[[float], str] = str) -> str:
    """A setting the job leaves to the leader, as the leader said it is."""
    return fmt.leader_default(None if value is None else show(value))


def settings_text(job: JobView, defaults: RetryDefaults | None = None) -> Text:
    """The job's settings as a two-column list (timeouts, retries, scout, tags, limit);
    ``defaults``: the leader's retry settings, for a job without its own."""
    spec = job.spec
    t = spec.timeouts
    leaders = defaults or RetryDefaults()
    retries = str(spec.retries) if spec.retries is not None else _leaders(leaders.retries)
    delay, cap = (
        fmt.setting(own) if own is not None else _leaders(leader, fmt.setting)
        for own, leader in ((spec.retry_delay, leaders.delay), (spec.retry_cap, leaders.cap))
    )
    rows = [
        ("Frames", f"{job.frames}  (chunks of {job.chunk})"),
        ("Renderer", job.renderer + (f"  scene {spec.scene}" if spec.scene else "")),
        ("Output", spec.output or fmt.EMPTY),
        ("Scout frames", spec.scout or fmt.EMPTY),
        ("Tags (pool)", ", ".join(spec.tags) or fmt.EMPTY),
        ("Max running", str(spec.max_running) if spec.max_running else "no limit"),
        ("After", ", ".join(spec.after) or fmt.EMPTY),
        (
            "Retries",
            f"{retries}  delay {delay}  cap {cap}",
        ),
        ("Min render", fmt.setting(t.min_render)),
        ("Max render", fmt.setting(t.max_render)),
        ("Max start", fmt.setting(t.max_start)),
        ("Per frame", "yes" if t.per_frame else "no"),
        ("On timeout", t.on_timeout),
        (
            "Auto timeout",
            f"after {t.auto_min_chunks or fmt.EMPTY} chunks / {t.auto_min_percent or fmt.EMPTY}%"
            f" × {t.auto_multiplier}"
            if t.auto
            else "off",
        ),
        ("Staging", "on" if spec.staging else "off"),
    ]
    text = Text()
    for label, value in rows:
        text.append(f"{label:>13}  ", style="bold")
        text.append(printable(value))
        text.append("\n")
    text.append("\nPress e to edit timeouts, retries, tags and the machine limit.", style="dim")
    return text


def _one_line(text: str, style: str) -> Text:
    return Text(printable(text), style=style, no_wrap=True, overflow="ellipsis", end="")


class JobDetailPanel(Vertical):
    """See the module docstring. ``show`` repaints the summary; grid and chunks update alone."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding(
            "t",
            "next_tab",
            "Next tab",
            id="detail.next_tab",
            tooltip="Frames, Chunks, Settings, Events",
        ),
        Binding(
            "b",
            "unblock",
            "Unblock node…",
            id="detail.unblock",
            tooltip="let a node blocked on this job run it again",
        ),
    ]
    TABS = ("tab-frames", "tab-chunks", "tab-settings", "tab-events")
    TAB_FOCUS = {
        "tab-frames": "#frame-grid",
        "tab-chunks": "#chunk-table",
        "tab-events": "#job-events",
        "tab-settings": "#settings-scroll",
    }

    @dataclass
    class UnblockWanted(Message):
        """The operator wants to let a node back onto ``job``."""

        job: JobView

    @dataclass
    class EventsWanted(Message):
        """The Events tab opened on ``job_id``: ask the leader for its event log."""

        job_id: str

    LEGEND_PERIOD = 0.25

    def __init__(self, state: ConsoleState, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.state = state
        self._legend_due = False
        self._held = False
        # The job whose event log was asked for, and the one whose log is shown.
        self._events_asked: str | None = None
        self._events_of: str | None = None

    def compose(self) -> ComposeResult:
        yield Static("No job selected — pick one in the jobs table (Enter).", id="detail-title")
        with Vertical(id="detail-progress-row"):
            yield ProgressBar(total=1, show_eta=False, id="detail-progress")
            yield Static("", id="detail-stats", markup=False)
            yield Static("", id="detail-priority", markup=False)
            yield Static("", id="detail-why", markup=False)
            yield Static("", id="detail-blocked", markup=False)
        with TabbedContent(id="detail-tabs"):
            with TabPane("Frames", id="tab-frames"):
                grid = FrameGrid(id="frame-grid")
                yield FrameLegend(grid, id="frame-legend")
                yield grid
            with TabPane("Chunks", id="tab-chunks"):
                yield ChunkTable(self.state, id="chunk-table")
                yield AttemptHistory(id="attempt-history")
            with TabPane("Settings", id="tab-settings"), VerticalScroll(id="settings-scroll"):
                yield Static("", id="detail-settings")
            with TabPane("Events", id="tab-events"):
                yield PaneLog(id="job-events", max_lines=5000)

    def action_next_tab(self) -> None:
        """Cycle the inner tabs and focus what is in the new one."""
        tabs = self.query_one(TabbedContent)
        tab = self.TABS[(self.TABS.index(tabs.active) + 1) % len(self.TABS)]
        self.show_tab(tab)

    def show_tab(self, tab: str) -> None:
        self.query_one(TabbedContent).active = tab
        self.focus_tab()

    def focus_tab(self) -> None:
        """Focus what is in the tab shown, so ``t`` and the tab's keys reach it.

        Focus left on a widget of a hidden tab moves out of the panel, and ``t``
        with it.
        """
        tab = self.query_one(TabbedContent).active
        self.query_one(self.TAB_FOCUS[tab]).focus()

    @property
    def grid(self) -> FrameGrid:
        return self.query_one(FrameGrid)

    @property
    def chunks(self) -> ChunkTable:
        return self.query_one(ChunkTable)

    @property
    def history(self) -> AttemptHistory:
        return self.query_one(AttemptHistory)

    def load(self) -> None:
        """A new job is watched: reload grid, chunks and summary."""
        self.grid.load(self.state.watched)
        self.chunks.show_watched()
        self.show_history()
        self.show_job()
        self._events_asked = self._events_of = None
        self.query_one("#job-events", PaneLog).clear()
        self._fetch_events()

    # -- the Events tab ----------------------------------------------------------------

    def on_tabbed_content_tab_activated(self, event: TabbedContent.TabActivated) -> None:
        if event.pane.id == "tab-events":
            self._fetch_events()

    def _fetch_events(self) -> None:
        """Ask for the watched job's event log once the Events tab is open (once per job)."""
        watched = self.state.watched
        tabs = self.query_one(TabbedContent)
        if watched is None or tabs.active != "tab-events" or self._events_asked == watched.job_id:
            return
        self._events_asked = watched.job_id
        self.post_message(self.EventsWanted(watched.job_id))

    def job_events(self, job_id: str, events: list[EventView]) -> None:
        """The leader's event log of ``job_id`` (oldest first) replaces what the tab shows."""
        watched = self.state.watched
        if watched is None or watched.job_id != job_id:
            return
        self._events_of = job_id
        log = self.query_one("#job-events", PaneLog)
        log.clear()
        log.write_lines(
            [event_line(event, self.state) for event in events]
            or [Text("No events recorded for this job yet.", style="dim")]
        )

    def add_events(self, events: list[EventView]) -> None:
        """Live events: those of the job shown are appended to its loaded log."""
        if self._events_of is None:
            return
        lines = [event_line(e, self.state) for e in events if e.job_id == self._events_of]
        self.query_one("#job-events", PaneLog).write_lines(lines)

    def event_lines(self) -> list[str]:
        """The Events tab's lines as plain text (for tests and copy)."""
        return [strip.text for strip in self.query_one("#job-events", PaneLog).lines]

    def show_history(self) -> None:
        """Show the attempts of the chunk under the chunk table's cursor."""
        watched = self.state.watched
        key = self.chunks.cursor_key
        chunk = watched.chunks.get(int(key)) if watched is not None and key else None
        self.history.show_chunk(chunk, self.state.clock())

    def show_chunk(self, index: int) -> None:
        """Open the Chunks tab on chunk ``index``, with its attempt history."""
        self.show_tab("tab-chunks")
        self.chunks.move_cursor_to_key(str(index))
        self.show_history()

    def on_line_table_cursor_moved(self, event: LineTable.CursorMoved) -> None:
        if event.table is self.chunks:
            self.show_history()

    def on_frame_grid_heat_toggled(self, event: FrameGrid.HeatToggled) -> None:
        self.query_one(FrameLegend).show(self.state.watched)

    def show_job(self) -> None:
        """Repaint the summary (state, progress, estimates, priority, settings)."""
        watched = self.state.watched
        if watched is None:
            return
        job = watched.job
        title = Text(no_wrap=True, overflow="ellipsis", end="")
        title.append(printable(job.name), style="bold")
        title.append(f"  {printable(job.state)}", style="bold")
        if job.reviewed:
            title.append(f" {fmt.REVIEWED_MARK}reviewed", style="green")
        if job.archived:
            title.append(" archived", style="dim")
        title.append(f"  {printable(job.owner)}")
        title.append(f"  {printable(job.id)}", style="dim")
        self.query_one("#detail-title", Static).update(title)
        stats = job.stats
        bar = self.query_one("#detail-progress", ProgressBar)
        bar.update(total=max(stats.frames_total, 1), progress=stats.frames_done)
        self.query_one("#detail-stats", Static).update(
            Text(
                f"{stats.frames_done}/{stats.frames_total} frames · "
                f"chunks {stats.chunks_done}/{stats.chunks_total} done, "
                # Assigned: rendering, or held on a node ahead of a free slot.
                f"{stats.chunks_running} on nodes, {stats.chunks_failed} fail · "
                f"ETR {fmt.duration(shown_etr(job))}",
                no_wrap=True,
                overflow="ellipsis",
                end="",
            )
        )
        change = "P changes it" if self.state.is_admin else "admins change it"
        self.query_one("#detail-priority", Static).update(
            Text(
                f"mean {fmt.duration(stats.mean_render)} p90 {fmt.duration(stats.p90_render)}"
                f" · Pri {job.priority} (lower renders sooner; {change})",
                no_wrap=True,
                overflow="ellipsis",
                end="",
            )
        )
        self._show_why(job)
        self.query_one("#detail-settings", Static).update(
            settings_text(job, self.state.retry_defaults)
        )
        self.query_one(FrameLegend).show(watched)
        if watched.held != self._held:
            self._held = watched.held
            self.grid.refresh()  # waiting frames are drawn held while the job is

    def _show_why(self, job: JobView) -> None:
        """``why: retry 2 of 3 at 12:31:20`` and the nodes kept off the job."""
        now = self.state.clock()
        why = self.query_one("#detail-why", Static)
        reason = reason_line(job.reason, now)
        why.display = bool(reason)
        why.update(_one_line(f"why: {reason}", "yellow"))
        blocked = self.query_one("#detail-blocked", Static)
        blocked.display = bool(job.blocked_nodes)
        nodes = " · ".join(
            f"{node} {block_end(until, now)}" for node, until in sorted(job.blocked_nodes.items())
        )
        blocked.update(_one_line(f"blocked: {nodes}  (b unblocks)", "red"))
        self.refresh_bindings()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """``b`` is offered only while a node is blocked on the watched job."""
        if action == "unblock":
            watched = self.state.watched
            return watched is not None and bool(watched.job.blocked_nodes)
        return True

    def action_unblock(self) -> None:
        """``b``: pick a node blocked on the watched job and let it back."""
        watched = self.state.watched
        if watched is None or not watched.job.blocked_nodes:
            self.notify("No node is blocked on this job", severity="warning")
            return
        self.post_message(self.UnblockWanted(watched.job))

    def frames_changed(self, indexes: list[int]) -> None:
        """Repaint changed cells now; recount the legend at most every LEGEND_PERIOD.

        Updating the legend's text costs a layout pass, which at 1,000 frame
        events a second would cost more than everything else together.
        """
        self.grid.refresh_frames(indexes)
        self._legend_soon()

    def _legend_soon(self) -> None:
        if not self._legend_due:
            self._legend_due = True
            later(self, self.LEGEND_PERIOD, self._show_legend)

    def _show_legend(self) -> None:
        self._legend_due = False
        self.query_one(FrameLegend).show(self.state.watched)

    def chunks_changed(self, keys: set[int], new: bool) -> None:
        table = self.chunks
        if new:
            table.show_watched()
        else:
            for key in keys:
                table.refresh_key(str(key))
        self.grid.chunks_changed()
        if self.grid.heat:
            self._legend_soon()  # the heat scale follows the chunk times
        cursor = table.cursor_key
        if cursor is not None and int(cursor) in keys:
            self.show_history()
