"""The failures view (``5``): every failed or timed-out attempt on the farm, newest first.

One line per attempt: when it ended, the job, the chunk and its frames, the
node, the attempt number, what the chunk does now (``retry``, ``fail``,
``rend`` when running again, ``done``) and the log's last error line; the
line under the list shows the whole of it for the row under the cursor.
Enter reads that attempt's output, ``r`` retries the chunk, ``b`` blocks the
node for that job (or lets it back when it is blocked already).

The list is the leader's (``FetchFailures``); the panel never asks for it
itself: the screen does, when the view opens and when a job's failed-chunk
count or state moves. Job names, node names and error lines are someone
else's text, shown plain.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.message import Message
from textual.widgets import Static

from farmtui.console import fmt
from farmtui.console.state import ConsoleState
from farmtui.console.widgets.chunk_table import CHUNK_STATE_STYLES
from farmtui.console.widgets.line_table import Cell, Column, LineTable
from farmtui.printable import printable
from farmtui.protocol import FailureView
from farmtui.tables import failure_error


def failure_key(failure: FailureView) -> str:
    """One row per attempt: job, chunk and attempt number."""
    return f"{failure.job_id}/{failure.chunk}/{failure.attempt}"


def failure_text(failure: FailureView) -> str:
    """``timeout · max render 1h exceeded · Error: out of memory``: the whole story."""
    parts = [failure.outcome, failure.reason, failure.error_line]
    return " · ".join(part for part in parts if part)


class FailuresTable(LineTable):
    """The failed attempts; rows keyed by ``failure_key``."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("r", "retry", "Retry chunk", id="failures.retry", tooltip="queue the chunk again"),
        Binding(
            "b",
            "block",
            "Block node",
            id="failures.block",
            tooltip="keep the node off that job (again: let it back)",
        ),
    ]
    COLUMNS: ClassVar[tuple[Column, ...]] = (
        Column("when", "When", 8),
        Column("job", "Job", 0),
        Column("chunk", "#", 4, "right"),
        Column("frames", "Frames", 9, optional=2),
        Column("node", "Node", 8, optional=1),
        Column("attempt", "Try", 3, "right"),
        Column("now", "Now", 5),
        Column("error", "Last error", 0),
    )

    @dataclass
    class RetryWanted(Message):
        failure: FailureView

    @dataclass
    class BlockWanted(Message):
        failure: FailureView

    def __init__(self, state: ConsoleState, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.state = state
        self.by_key: dict[str, FailureView] = {}

    def show_failures(self) -> None:
        """Show the state's list (newest first), keeping the cursor on the same attempt."""
        self.by_key = {failure_key(f): f for f in self.state.failures}
        self.set_rows(list(self.by_key))
        self.refresh()

    @property
    def current(self) -> FailureView | None:
        key = self.cursor_key
        return self.by_key.get(key) if key is not None else None

    def row_cells(self, key: str) -> list[Cell]:
        failure = self.by_key.get(key)
        if failure is None:
            return [("", None)] * len(self.COLUMNS)
        blocked = failure.node in self._blocked_nodes(failure.job_id)
        return [
            (fmt.clock(failure.finished), None),
            (failure.job_name, None),
            (str(failure.chunk), None),
            (failure.frames, None),
            (
                ("⊘" if blocked else "") + failure.node,
                CHUNK_STATE_STYLES["failed"] if blocked else None,
            ),
            (str(failure.attempt), None),
            (
                fmt.CHUNK_STATE_SHORT.get(failure.chunk_state, failure.chunk_state),
                CHUNK_STATE_STYLES.get(failure.chunk_state),
            ),
            (failure_error(failure) or failure.outcome, None),
        ]

    def _blocked_nodes(self, job_id: str) -> dict[str, float]:
        job = self.state.jobs.get(job_id)
        return job.blocked_nodes if job is not None else {}

    def action_retry(self) -> None:
        """``r``: queue the chunk of the attempt under the cursor again."""
        failure = self.current
        if failure is not None:
            self.post_message(self.RetryWanted(failure))

    def action_block(self) -> None:
        """``b``: block the attempt's node for its job, or let it back."""
        failure = self.current
        if failure is not None:
            self.post_message(self.BlockWanted(failure))


class FailuresPanel(Vertical):
    """See the module docstring."""

    def __init__(self, state: ConsoleState, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.state = state
        self.fetched = False

    def compose(self) -> ComposeResult:
        yield Static("Failed attempts: asking the leader…", id="failures-title", markup=False)
        yield FailuresTable(self.state, id="failures")
        yield Static("", id="failures-error", markup=False)

    @property
    def table(self) -> FailuresTable:
        return self.query_one(FailuresTable)

    def show_failures(self) -> None:
        """The leader sent a new list: repaint it."""
        self.fetched = True
        failures = self.state.failures
        self.table.show_failures()
        jobs = len({f.job_id for f in failures})
        title = (
            f"{len(failures)} failed attempt{'s' if len(failures) != 1 else ''} "
            f"in {jobs} job{'s' if jobs != 1 else ''}, newest first · "
            "Enter output  r retry  b block node"
            if failures
            else "No failed attempts on the farm."
        )
        self.query_one("#failures-title", Static).update(
            Text(title, no_wrap=True, overflow="ellipsis", end="")
        )
        self.show_current()

    def jobs_changed(self) -> None:
        """Blocked nodes may have changed: repaint the rows (cheap: only visible lines)."""
        self.table.refresh()

    def show_current(self) -> None:
        failure = self.table.current
        line = "" if failure is None else failure_text(failure)
        self.query_one("#failures-error", Static).update(
            Text(printable(line), no_wrap=True, overflow="ellipsis", end="")
        )

    def on_line_table_cursor_moved(self, event: LineTable.CursorMoved) -> None:
        self.show_current()
