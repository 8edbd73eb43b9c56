"""The jobs table: every job in dispatch order, one line each, drawn with the Line API.

The Pri column's header says which way priority runs ("Pri↑": lower number
renders sooner), because most other farm managers run the higher number first.
States and flags are abbreviated by design (``rend``, ``wait``, ``done✓`` for
reviewed; ``fmt.job_state``). The Reason column says why a job's waiting chunks
do not run (``farmtui.reasons.reason_line``, the leader's own reason); ETR is
"—" when nothing can run. Reason, then Owner, then Done/Total give way first when
the terminal is narrow. The sort column's header is marked with ``▼``.
"""

from __future__ import annotations

from typing import ClassVar

from rich.style import Style

from farmtui.console import fmt
from farmtui.console.state import ConsoleState, GroupHeader
from farmtui.console.widgets.line_table import Cell, Column, LineTable
from farmtui.reasons import FINISHED, reason_line

PRIORITY_HINT = "Pri↑: lower number renders sooner (0–100, default 50)"

STATE_STYLES: dict[str, Style] = {
    "queued": Style(),
    "rendering": Style(color="bright_cyan", bold=True),
    "paused": Style(color="yellow"),
    "holding": Style(color="magenta"),
    "done": Style(color="bright_green"),
    "failed": Style(color="bright_red", bold=True),
    "cancelled": Style(dim=True),
}
BAR_STYLE = Style(color="green")
FAILED_BAR_STYLE = Style(color="red")
DIM = Style(dim=True)
REASON_STYLE = Style(color="yellow")


class JobsTable(LineTable):
    """Jobs in dispatch order with live progress; rows keyed by job id."""

    COLUMNS: ClassVar[tuple[Column, ...]] = (
        Column("handle", "", 1),
        Column("sel", "", 1),
        Column("priority", "Pri↑", 4, "right"),
        Column("name", "Name", 0),
        Column("owner", "Owner", 8, optional=2),
        Column("state", "State", 6),
        Column("progress", "Progress", 12),
        Column("frames", "Done/Total", 11, "right", optional=1),
        Column("etr", "ETR", 6, "right"),
        # Why waiting chunks do not run; first to give way on a narrow terminal.
        Column("reason", "Reason", 0, optional=3),
    )
    DRAGGABLE = True

    def __init__(self, state: ConsoleState, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.state = state
        self.tooltip = PRIORITY_HINT + "\nDrag the ⠿ handle to reorder within a priority group."
        # The key of the column the rows are sorted by ("priority": dispatch order).
        self.sort_column = "priority"

    def header_label(self, column: Column) -> str:
        if column.key == self.sort_column and column.key != "priority":
            return column.label + "▼"
        return column.label

    def set_sort_column(self, key: str) -> None:
        self.sort_column = key
        self.refresh()

    def row_cells(self, key: str) -> list[Cell]:
        job = self.state.jobs.get(key)
        if job is None:
            return [("", None)] * len(self.COLUMNS)
        stats = job.stats
        total = stats.frames_total
        fraction = stats.frames_done / total if total else 0.0
        state = fmt.job_state(job.state, reviewed=job.reviewed, archived=job.archived)
        name = job.name
        bar_style = FAILED_BAR_STYLE if stats.frames_failed else BAR_STYLE
        return [
            ("", None),
            ("●" if key in self.selected else " ", None),
            (str(job.priority), None),
            (name, DIM if job.archived else None),
            (job.owner, None),
            (state, STATE_STYLES.get(job.state)),
            (fmt.bar(fraction, 8) + fmt.percent(stats.frames_done, total), bar_style),
            (f"{stats.frames_done}/{total}", None),
            ("" if job.state in FINISHED else fmt.duration(stats.etr), None),
            (reason_line(job.reason, self.state.clock()), REASON_STYLE),
        ]

    def drop_preview(self, key: str, gap: int) -> tuple[str, bool]:
        """Describe where ``key`` lands; refused (red) across priority groups."""
        verdict = self.check_drop(key, gap)
        if isinstance(verdict, str):
            return verdict, False
        before, _ = verdict
        job = self.state.jobs[key]
        where = f"before {self.state.jobs[before].name}" if before else "at the end of its group"
        return f"move {job.name} {where} (priority {job.priority})", True

    def check_drop(self, key: str, gap: int) -> str | tuple[str | None, bool]:
        """Where a drop of ``key`` before row ``gap`` lands, or why it is refused.

        Returns ``(before_job_id or None for the end of the group, moved)`` or
        the refusal text. ``moved`` is False when the drop would not change
        anything.
        """
        job = self.state.jobs.get(key)
        if job is None:
            return "job is gone"
        rows = self.rows
        after_row = rows[gap - 1] if gap > 0 else None
        before_row = rows[gap] if gap < len(rows) else None
        before_id = before_row if isinstance(before_row, str) else None
        after_id = after_row if isinstance(after_row, str) else None
        if key in (before_id, after_id):
            return (None, False)
        if before_id is not None and self.state.jobs[before_id].priority == job.priority:
            return (before_id, True)
        if after_id is not None and self.state.jobs[after_id].priority == job.priority:
            successor = self.state.neighbours_after(after_id)
            if successor == key:
                return (None, False)
            if successor is not None and self.state.jobs[successor].priority == job.priority:
                return (successor, True)
            return (None, True)
        other = before_id or after_id
        if other is None and isinstance(before_row, GroupHeader):
            return f"refused: {job.name} is priority {job.priority}; that is another group"
        other_pri = self.state.jobs[other].priority if other else "another"
        return (
            f"refused: {job.name} is priority {job.priority}, not {other_pri} — "
            "priority always wins; change the priority instead"
        )
