"""The watched job's chunks (tasks): number, frames, state, node, tries, start, duration, log.

A ``LineTable`` keyed by chunk index, so a job cut into 100,000 one-frame
chunks is as quick as one of ten. Chunk actions (retry, hold, set failed, set
done, exclude) are not keys of this table: ``k`` opens the chunk action mode
for the chunks selected here (``screens/chunk_mode.py``), so ``r`` and ``h``
mean the job's resume and hold wherever the focus is. States are abbreviated
by design (``fmt.CHUNK_STATE_SHORT``) so they fit at 80 columns.

``AttemptHistory`` below the table lists every attempt of the chunk under the
cursor: node, start, time, outcome and exit status.
"""

from __future__ import annotations

from typing import ClassVar

from rich.style import Style
from rich.text import Text
from textual.binding import Binding, BindingType
from textual.widgets import Static

from farmtui.console import fmt
from farmtui.console.state import ConsoleState
from farmtui.console.widgets.line_table import Cell, Column, LineTable
from farmtui.printable import printable
from farmtui.protocol import AttemptView, ChunkView

CHUNK_STATE_STYLES: dict[str, Style] = {
    "assigned": Style(color="bright_cyan", bold=True),
    "done": Style(color="bright_green"),
    "failed": Style(color="bright_red", bold=True),
    "waiting-retry": Style(color="yellow"),
    "preempted": Style(color="yellow"),
    "held": Style(dim=True),
    "excluded": Style(dim=True, strike=True),
    "cancelled": Style(dim=True),
}


class ChunkTable(LineTable):
    """See the module docstring."""

    COLUMNS: ClassVar[tuple[Column, ...]] = (
        Column("sel", "", 1),
        Column("index", "#", 5, "right"),
        Column("frames", "Frames", 0),
        Column("state", "State", 5),
        Column("node", "Node", 10),
        Column("tries", "Try", 3, "right"),
        Column("start", "Start", 8, optional=2),
        Column("time", "Time", 7, "right"),
        Column("log", "Log", 3, optional=1),
    )

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("o", "activate", "Output", id="chunks.output", tooltip="Show the chunk's output"),
    ]

    def __init__(self, state: ConsoleState, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.state = state

    def show_watched(self) -> None:
        watched = self.state.watched
        self.set_rows([str(index) for index in watched.chunk_order] if watched else [])

    def row_cells(self, key: str) -> list[Cell]:
        watched = self.state.watched
        chunk = watched.chunks.get(int(key)) if watched else None
        if chunk is None:
            return [("", None)] * len(self.COLUMNS)
        if chunk.started is None:
            took = None
        else:
            took = (chunk.finished or self.state.clock()) - chunk.started
        frames = fmt.frame_range(chunk.frames) if chunk.frames else chunk.kind
        return [
            ("●" if key in self.selected else " ", None),
            (str(chunk.index), None),
            (frames, None),
            (
                fmt.CHUNK_STATE_SHORT.get(chunk.state, chunk.state),
                CHUNK_STATE_STYLES.get(chunk.state),
            ),
            (chunk.node or fmt.EMPTY, None),
            (str(chunk.attempt), None),
            (fmt.clock(chunk.started), None),
            (fmt.duration(took), None),
            ("▤" if chunk.attempt else "", None),
        ]


def attempt_line(attempt: AttemptView, now: float) -> Text:
    """``#2 node-a 12:01:40 42s failed exit 1 (reason)``."""
    took = (attempt.finished or now) - attempt.started if attempt.started else None
    text = Text(no_wrap=True, overflow="ellipsis", end="")
    text.append(f"#{attempt.number} ", style="bold")
    text.append(f"{printable(attempt.node) or fmt.EMPTY} ")
    text.append(f"{fmt.clock(attempt.started)} {fmt.duration(took)} ", style="dim")
    text.append(printable(attempt.outcome), style=CHUNK_STATE_STYLES.get(attempt.outcome))
    if attempt.exit_status and attempt.exit_status != "0":
        text.append(f" exit {printable(attempt.exit_status)}")
    if attempt.reason:
        text.append(f" · {printable(attempt.reason)}", style="dim")
    return text


class AttemptHistory(Static):
    """Every attempt of one chunk, newest first (see the module docstring)."""

    DEFAULT_CSS = """
    AttemptHistory { height: auto; max-height: 5; padding: 0 1; background: $boost; }
    """

    def show_chunk(self, chunk: ChunkView | None, now: float) -> None:
        if chunk is None:
            self.update(Text("No chunk", style="dim"))
            return
        title = Text(no_wrap=True, overflow="ellipsis", end="")
        title.append(f"chunk {chunk.index} ", style="bold")
        title.append(f"frames {fmt.frame_range(chunk.frames) if chunk.frames else chunk.kind}")
        title.append(f" · {chunk.state}")
        attempts = list(chunk.attempts)
        if not attempts and chunk.attempt:
            attempts = [
                AttemptView(
                    number=chunk.attempt,
                    node=chunk.node or "",
                    started=chunk.started or 0.0,
                    finished=chunk.finished,
                    outcome=chunk.state,
                )
            ]
        if not attempts:
            title.append(" · not dispatched yet", style="dim")
        lines = [title] + [attempt_line(a, now) for a in reversed(attempts)]
        self.update(Text("\n", end="").join(lines))

    def text(self) -> str:
        return str(self.render())
