"""The base of the operator's main screen's parts (``farmtui.console.screens.main``).

``MainScreen`` is made of parts, one module each: ``painting`` (what the
leader sends, onto the screen), ``filtering`` (filters, saved filters, sort,
grouping), ``triage`` (the failures view and opening attempts), and
``main`` itself (layout, views, keys, actions). This module holds what they
share: the views' names and the screen's state and widgets.
"""

from __future__ import annotations

from typing import Literal

from textual.screen import Screen

from farmtui.console.job_list import JobList
from farmtui.console.later import Later
from farmtui.console.link import Backoff, LeaderLink
from farmtui.console.notices import Notice
from farmtui.console.operator import LogLevel, Operator
from farmtui.console.saved_filters import SavedFilters
from farmtui.console.settings import ConsoleSettings
from farmtui.console.state import Change, ConsoleState
from farmtui.console.widgets.failures_panel import FailuresPanel
from farmtui.console.widgets.filter_input import FilterInput
from farmtui.console.widgets.job_detail import JobDetailPanel
from farmtui.console.widgets.jobs_table import JobsTable
from farmtui.console.widgets.logs_panel import LogsPanel
from farmtui.console.widgets.nodes_panel import NodesPanel
from farmtui.console.widgets.status_bar import ViewBar
from farmtui.protocol import ConsoleMessage

View = Literal["jobs", "detail", "logs", "nodes", "failures"]

SIDE_VIEWS: tuple[View, ...] = ("detail", "logs", "nodes", "failures")
VIEW_FOCUS: dict[View, str] = {
    "jobs": "#jobs",
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


class ScreenParts(Screen[None]):
    """What the parts of ``MainScreen`` share: its state, widgets and a few of each other's
    methods (declared here, made by the part named beside each)."""

    state: ConsoleState
    leader: str
    token: str
    backoff: Backoff | None
    settings: ConsoleSettings
    saved_filters: SavedFilters
    view: View
    side_view: View
    job_list: JobList
    link: LeaderLink
    operator: Operator
    _watch_timer: Later | None
    _watch_wanted: str | None
    _output_wanted: tuple[str, int, int] | None
    _failures_sent: float
    _failures_timer: Later | None
    _pending_change: Change | None
    _repaint_timer: Later | None
    _settle_timer: Later | None
    _last_settle: float
    _waiting_shown: bool
    _last_repaint: float
    _repaint_cost: float
    _notices: list[Notice]
    _notice_timer: Later | None

    # -- made by the parts, for each other ------------------------------------------

    def _show_rows(self) -> None:  # LinkPainting
        raise NotImplementedError

    def _update_status(self) -> None:  # LinkPainting
        raise NotImplementedError

    @property
    def failures_shown(self) -> bool:  # Triage
        raise NotImplementedError

    def fetch_failures(self) -> None:  # Triage
        raise NotImplementedError

    def _open_wanted_output(self) -> None:  # Triage
        raise NotImplementedError

    def action_view(self, view: View) -> None:  # MainScreen
        raise NotImplementedError

    def _set_view(self, view: View) -> None:  # MainScreen
        raise NotImplementedError

    def _schedule_watch(self, job_id: str) -> None:  # MainScreen
        raise NotImplementedError

    def watch_job(self, job_id: str) -> None:  # MainScreen
        raise NotImplementedError

    # -- the widgets and the link ---------------------------------------------------

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

    def _send(self, message: ConsoleMessage, label: str) -> int | None:
        return self.operator.send(message, label)

    def _log(self, level: LogLevel, text: str) -> None:
        self.logs.add_events([self.state.log(level, text)])

    def _update_viewbar(self) -> None:
        watched = self.state.watched
        title = watched.job.name if watched and self.view != "jobs" else ""
        self.query_one(ViewBar).show(self.view, title)
